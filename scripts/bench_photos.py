"""Benchmark: photos decoded, blurred and encoded, sedamp with arrays between stages against
multiprocessing.Pool.imap running the three steps fused, each system a whole process timed
from interpreter start to exit, side by side in interleaved rounds.

    python scripts/bench_photos.py                        # 200 photos of 4-12 MP, 3 rounds
    python scripts/bench_photos.py --rounds 5 --json photos.json
    python scripts/bench_photos.py --photos 4 --min-mp 0.1 --max-mp 0.2 --rounds 1   # a smoke check

The photos
    --photos JPEGs of --min-mp to --max-mp megapixels (default 200 of 4 to 12 MP), made
    by scripts/bench_thumbnails.py's generator: smooth colour gradients plus per-pixel
    grain, mixed aspect ratios, JPEG quality 90, drawn from --seed. They are made once
    into --data (default /tmp/sedamp-bench-photos/<parameters>/) and reused after.

The work (the same stage classes and params for every system)
    ``stages.images`` Decode (to an RGB array) -> Blur (Gaussian, --radius px) -> Encode
    (JPEG, --quality); the encoded bytes of each photo reach one process that hashes them
    (``_photo_stages.Digest``). Every run must give the same digest over all photos.

Systems
    sedamp        ``sedamp run`` of files -> decode -> blur -> encode -> digest, with no
                  worker counts: the runtime chooses pools and fusion (it fuses decode,
                  blur and encode: the arrays are handed on inside each worker).
    sedamp-apart  the same with ``fuse: never`` on decode, blur and encode: each photo's
                  array crosses two process boundaries (decode -> blur -> encode) through a
                  shared block (``sedamp.runtime.blocks``: written once, mapped read-only).
    sedamp-frames sedamp-apart with SEDAMP_SHARED_MEMORY=0: each array as a ZeroMQ frame
                  beside the event (``sedamp.runtime.payload``).
    pool          ``multiprocessing.Pool(cores).imap`` of decode -> blur -> encode fused
                  into one function, chunks of one photo (``_photo_stages.py``).

Each round runs every system once, in an order rotated each round; a warm-up round on
two photos first fills the bytecode caches. "sedamp ÷ this" is the median over rounds
of sedamp's photos per second divided by the system's in the same round, so the
machine's drift between rounds cancels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SYSTEMS = ("sedamp", "sedamp-apart", "sedamp-frames", "pool")
# issue 20: the pipeline with arrays between stages is >= 1.0x Pool.imap of the fused steps
TARGETS = {"sedamp": ("pool", 1.0), "sedamp-apart": ("pool", 1.0)}
WARMUP_PHOTOS = 2
RUN_TIMEOUT_S = 3600


def topology(directory: Path, data: Path, radius: float, quality: int, apart: bool) -> Path:
    fuse = "    fuse: never\n" if apart else ""
    text = f"""name: bench-photos
stages:
  files:
    source: stages.files:ListFiles
    params: {{root: "{data}", pattern: "*.jpg"}}
    to: decode
  decode:
    handler: stages.images:Decode
    params: {{mode: RGB}}
{fuse}    to: blur
  blur:
    handler: stages.images:Blur
    params: {{radius: {radius}}}
{fuse}    to: encode
  encode:
    handler: stages.images:Encode
    params: {{format: JPEG, quality: {quality}}}
{fuse}    to: digest
  digest:
    sink: _photo_stages:Digest
    params: {{out: "${{OUT}}"}}
"""
    path = directory / f"photos-{'apart' if apart else 'free'}-{data.name}.yaml"
    path.write_text(text)
    return path


def command(system: str, data: Path, out: Path, args: argparse.Namespace, tmp: Path) -> list[str]:
    py = sys.executable
    if system == "pool":
        return [py, str(SCRIPTS / "_photo_stages.py"), str(data), str(out), str(args.radius), str(args.quality)]
    topo = topology(tmp, data, args.radius, args.quality, system != "sedamp")
    return [py, "-m", "sedamp", "run", str(topo), "--workdir", str(tmp / "w"), "-q"]


def ensure_photos(args: argparse.Namespace) -> Path:
    """The photos, made once into --data (or the default cache folder)."""
    from bench_thumbnails import ensure_images, image_specs

    data = Path(args.data) if args.data else Path(tempfile.gettempdir()) / "sedamp-bench-photos" / (
        f"n{args.photos}-mp{args.min_mp:g}-{args.max_mp:g}-s{args.seed}"
    )
    specs = image_specs(args.photos, args.min_mp, args.max_mp, args.seed)
    made, secs = ensure_images(data, specs, args.seed, bl.usable_cores())
    found = len(list(data.glob("*.jpg")))
    if found != len(specs):
        raise SystemExit(f"{data} holds {found} photos, not {len(specs)}: give --data an empty folder")
    total_mp = sum(s.megapixels for s in specs)
    print(f"photos: {len(specs)} in {data} ({total_mp:,.1f} MP; made {made} now in {secs:.1f} s)", flush=True)
    return data


def warmup_photos(data: Path, tmp: Path) -> Path:
    small = tmp / "warmup"
    small.mkdir()
    for path in sorted(data.glob("*.jpg"))[:WARMUP_PHOTOS]:
        shutil.copyfile(path, small / path.name)
    return small


def timed(system: str, data: Path, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> tuple[float, Any]:
    """One whole run of `system` over `data`: (wall seconds, its {"count", "digest"})."""
    out = tmp / f"{system}.json"
    out.unlink(missing_ok=True)
    cmd = command(system, data, out, args, tmp)
    frames = {"SEDAMP_SHARED_MEMORY": "0"} if system == "sedamp-frames" else {}
    wall = bl.timed_process(cmd, {**env, "OUT": str(out), **frames}, REPO, None, None, timeout=RUN_TIMEOUT_S)
    try:
        return wall, json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{system}: no result in {out}: {exc}") from None


def run_rounds(args: argparse.Namespace, data: Path, tmp: Path) -> dict[str, list[float]]:
    paths = [str(SCRIPTS), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = bl.user_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    systems = list(args.systems)
    walls: dict[str, list[float]] = {s: [] for s in systems}
    warmup = warmup_photos(data, tmp)
    reference: Any = None
    for rnd in range(args.rounds + 1):  # round 0 warms the caches, on two photos
        order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
        for system in order:
            wall, result = timed(system, warmup if rnd == 0 else data, args, tmp, env)
            if rnd == 0:
                continue
            if result["count"] != args.photos:
                raise SystemExit(f"{system}: encoded {result['count']} photos of {args.photos}")
            reference = reference or result
            if result != reference:
                raise SystemExit(f"{system}: digest {result['digest']} differs from {reference['digest']}")
            walls[system].append(wall)
            print(f"  round {rnd} {system:12} {wall:8.2f} s  {args.photos / wall:8.2f} photos/s", flush=True)
    return walls


def report(walls: dict[str, list[float]], photos: int) -> dict[str, Any]:
    rates = {s: [photos / w for w in ws] for s, ws in walls.items()}
    ratio: dict[str, dict[str, float]] = {}
    for s in rates:
        if s.startswith("sedamp"):
            ratio[s] = {p: statistics.median(a / b for a, b in zip(rates[s], rates[p], strict=True)) for p in rates}
    rows = []
    for s in walls:
        rows.append(
            [
                s,
                f"{photos:,}",
                f"{statistics.median(walls[s]):.2f}",
                f"{statistics.median(rates[s]):.2f}",
                *(f"{ratio[r][s]:.2f}x" for r in ratio),
            ]
        )
    print(f"\nphotos: whole processes, medians of {len(next(iter(walls.values())))} interleaved rounds")
    print(bl.format_table(["system", "photos", "wall s", "photos/s", *(f"{r} ÷ this" for r in ratio)], rows))
    targets = {}
    for s, (peer, want) in TARGETS.items():
        if s in ratio and peer in ratio[s]:
            met = ratio[s][peer] >= want
            print(f"target: {s} >= {want:.2f}x {peer}: {'met' if met else 'not met'} ({ratio[s][peer]:.2f}x)")
            targets[s] = {"peer": peer, "ratio": ratio[s][peer], "met": met}
    return {"walls": walls, "photos": photos, "ratio": ratio, "targets": targets}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", type=lambda t: t.split(","), default=list(SYSTEMS), help=",".join(SYSTEMS))
    ap.add_argument("--rounds", type=bl.positive, default=3)
    ap.add_argument("--photos", type=bl.positive, default=200)
    ap.add_argument("--min-mp", type=float, default=4.0)
    ap.add_argument("--max-mp", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", metavar="DIR", help="where the photos are made once (default: under /tmp)")
    ap.add_argument("--radius", type=float, default=2.0, help="the Gaussian blur's radius in pixels (2)")
    ap.add_argument("--quality", type=int, default=85, help="the output JPEG quality (85)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    for s in args.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}: choose among {','.join(SYSTEMS)}")
    if not 0 < args.min_mp <= args.max_mp:
        ap.error(f"--min-mp must be > 0 and <= --max-mp, got {args.min_mp} and {args.max_mp}")
    print("$ python scripts/bench_photos.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))
    data = ensure_photos(args)
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as d:
        result = report(run_rounds(args, data, Path(d)), args.photos)
    if args.json:
        Path(args.json).write_text(json.dumps(bl.strict_json({"machine": bl.machine_info(), **result}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
