"""Benchmark: thumbnails of a folder of photos, sedamp against a plain multiprocessing.Pool.

Run from the repository root (the final figures belong to a quiet machine):

    python scripts/bench_thumbnails.py                        # 500 images of 1-4 MP, once
    python scripts/bench_thumbnails.py --repeat 3 --json thumbs.json
    python scripts/bench_thumbnails.py --images 8 --min-mp 0.2 --max-mp 0.4   # a smoke check

The images
    --images N JPEGs (default 500) of --min-mp to --max-mp megapixels (default 1 to 4),
    each with its own size and aspect ratio (4:3, 3:2, 16:9, square, and portrait ones),
    drawn from --seed. Content that compresses like a photo: smooth colour gradients (a
    6 x 4 grid of random colours, bicubic-upscaled) plus per-pixel grain, saved at JPEG
    quality 90 (about 1.8 bits per pixel: ~0.9 MB for 4 MP). They are made once, in
    parallel, into --cache (default ~/.cache/sedamp/bench-thumbnails/<parameters>/),
    each file written atomically; a later run regenerates only missing files. 500
    images of 1-4 MP take about 300 MB there.

The work (the same for both systems)
    Every image through ``stages.images``: open, EXIF orientation, reduced JPEG decode
    (draft), LANCZOS resize to fit --size (256) px, JPEG quality --quality (85), then
    ``stages.files.atomic_write`` of the thumbnail into a fresh output directory. The
    params are read from topologies/thumbnails.yaml (with --set thumb.params.size/quality)
    by both systems, so they cannot drift apart.

Systems (each in a fresh child process; the wall time counts from starting it to its exit)
    sedamp  ``python -m sedamp run topologies/thumbnails.yaml --json -q`` with IN = the
            images, OUT = a fresh directory: ListFiles -> Thumbnail (1 worker up to the
            core budget, grown by the controller) -> WriteFiles, plus the queue processes
            and the controller. Must exit 0 having read every image.
    pool    this script with --pool-child: ListFiles with the topology's params, then
            ``multiprocessing.Pool(cores).imap_unordered`` of one function doing
            make_thumbnail + thumbnail_name + atomic_write per image, chunksize for about
            20 ms of work (at most N / (4 x processes), Pool.map's own rule).
The systems run interleaved, one round after another (--repeat rounds): this kind of
machine drifts over minutes, so each comparison is made within a round.

How to read the table
    images/s       images / wall seconds (each system's best round).
    eff. vs limit  images/s divided by the machine's limit = cores / (CPU seconds per
                   image), the CPU per image being measured serially (time.process_time,
                   this process, the same work) on --cpu-sample images spread over the
                   set, in each round. 100% means every core did only thumbnail work for
                   the whole run. Median over rounds.
    sedamp ÷ this  sedamp's images/s divided by this row's (median over rounds): above 1
                   sedamp is faster.
    peak MiB       the highest summed RSS of the child and all its descendants, sampled
                   with psutil every 0.1 s (max over rounds). Summed RSS counts shared
                   pages once per process, the same rule for both.
    check          every image has its thumbnail, of exactly the size target_size gives
                   for it, and both systems wrote the same names with the same sizes in
                   the round. Any mismatch or error is printed loudly and the script
                   exits with 1. Whether the thumbnails are also byte-identical is noted.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _benchlib as bl
from PIL import Image

from sedamp.spec import load_topology
from stages.files import ListFiles, atomic_write
from stages.images import Thumbnail, make_thumbnail, target_size, thumbnail_name

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "topologies" / "thumbnails.yaml"
SYSTEMS = ("sedamp", "pool")

RSS_SAMPLE_S = 0.1
# Pool chunks of about this much work: a chunk's pickling and round trip is noise next to
# it, and no worker idles long behind another's last chunk.
TARGET_CHUNK_S = 0.02
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 9 / 16)
SOURCE_QUALITY = 90
GRAIN = 0.06  # share of per-pixel noise blended into the gradients (about +-8 levels)


@dataclass(frozen=True)
class ImageSpec:
    name: str
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


@dataclass
class Run:
    system: str
    images: int
    wall_s: float = math.nan
    procs: str = ""
    peak_rss_bytes: int | None = None
    peak_processes: int | None = None
    error: str | None = None
    outputs: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def rate(self) -> float:
        return self.images / self.wall_s if self.ok and self.wall_s > 0 else math.nan


# ---------------------------------------------------------------------------------------
# The images


def image_specs(n: int, min_mp: float, max_mp: float, seed: int) -> list[ImageSpec]:
    """The size of each image, from the seed alone (no file needed)."""
    specs = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}:size")
        pixels = rng.uniform(min_mp, max_mp) * 1e6
        aspect = rng.choice(ASPECTS)
        width = max(16, round(math.sqrt(pixels * aspect)))
        height = max(16, round(pixels / width))
        specs.append(ImageSpec(f"img{i:05d}.jpg", width, height))
    return specs


def make_image(job: tuple[str, int, int, str]) -> None:
    """One image: seeded gradients plus grain, JPEG quality 90, written atomically."""
    path, width, height, seed = job
    rng = random.Random(seed)
    base = Image.frombytes("RGB", (6, 4), rng.randbytes(6 * 4 * 3)).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
    buf = io.BytesIO()
    Image.blend(base, grain, GRAIN).save(buf, "JPEG", quality=SOURCE_QUALITY)
    atomic_write(path, buf.getvalue())


def ensure_images(directory: Path, specs: Sequence[ImageSpec], seed: int, procs: int) -> tuple[int, float]:
    """Make the images of `specs` missing from `directory`; (how many were made, seconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(directory / s.name), s.width, s.height, f"{seed}:{s.name}:pixels")
        for s in specs
        if not (directory / s.name).is_file()
    ]
    t0 = time.perf_counter()
    if jobs:
        with multiprocessing.Pool(min(procs, len(jobs))) as pool:
            for _ in pool.imap_unordered(make_image, jobs):
                pass
    return len(jobs), time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# The work, as both systems' params say


def overrides(size: int, quality: int) -> list[str]:
    return [f"thumb.params.size={size}", f"thumb.params.quality={quality}"]


def load_stages(images: Path, out: Path, sets: Sequence[str]) -> tuple[dict[str, Any], Thumbnail]:
    """The `files` params and a set-up `Thumbnail` of topologies/thumbnails.yaml, with
    IN/OUT and the overrides the sedamp run gets."""
    env = {**os.environ, "IN": str(images), "OUT": str(out)}
    top = load_topology(TOPOLOGY, overrides=sets, env=env, check_handlers=False)
    thumb = Thumbnail()
    thumb.setup(**top.stages["thumb"].params)
    return dict(top.stages["files"].params), thumb


def thumbnail_file(thumb: Thumbnail, path: str, out: Path) -> None:
    """The whole work of one image, as WriteFiles would store it."""
    made = make_thumbnail(
        path,
        size=thumb.box,
        fit=thumb.fit,
        format=thumb.format,
        quality=thumb.quality,
        mode=thumb.mode,
        max_pixels=thumb.max_pixels,
        draft=thumb.draft,
        accept=thumb.accept,
    )
    atomic_write(out / thumbnail_name(path, thumb.root, thumb.suffix), made.data)


def cpu_per_image(images: Path, specs: Sequence[ImageSpec], k: int, sets: Sequence[str]) -> tuple[float, float]:
    """CPU seconds per image (process_time) of the whole work, done serially here on `k`
    images spread evenly over the set; and the sample's mean megapixels."""
    k = max(1, min(k, len(specs)))
    picks = sorted({round(j * (len(specs) - 1) / max(1, k - 1)) for j in range(k)})
    with tempfile.TemporaryDirectory(prefix="bench-thumbs-cpu-") as tmp:
        _, thumb = load_stages(images, Path(tmp), sets)
        thumbnail_file(thumb, str(images / specs[picks[0]].name), Path(tmp))  # warm up: imports, caches
        c0 = time.process_time()
        for i in picks:
            thumbnail_file(thumb, str(images / specs[i].name), Path(tmp))
        cpu = time.process_time() - c0
    return cpu / len(picks), statistics.fmean(specs[i].megapixels for i in picks)


# ---------------------------------------------------------------------------------------
# The pool child


_POOL: dict[str, Any] = {}


def _pool_init(images: str, out: str, sets: list[str]) -> None:
    _, thumb = load_stages(Path(images), Path(out), sets)
    _POOL.update(thumb=thumb, out=Path(out))


def _pool_work(path: str) -> str | None:
    try:
        thumbnail_file(_POOL["thumb"], path, _POOL["out"])
    except ValueError as exc:  # what the sedamp run would dead-letter
        return str(exc)
    return None


def pool_child(images: Path, out: Path, procs: int, chunk: int, sets: Sequence[str]) -> int:
    """List the images as the topology's source does, thumbnail them with a Pool; print
    {"count", "errors"} as JSON."""
    files_params, _ = load_stages(images, out, sets)
    listing = ListFiles()
    listing.setup(**files_params)
    paths = [e["path"] for e in listing]
    errors: list[str] = []
    with multiprocessing.Pool(procs, initializer=_pool_init, initargs=(str(images), str(out), list(sets))) as pool:
        for err in pool.imap_unordered(_pool_work, paths, chunk):
            if err is not None:
                errors.append(err)
    print(json.dumps({"count": len(paths), "errors": errors}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# Running a system


def timed_child(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float, bl.TreeRss]:
    """Run `cmd` to completion, sampling its process tree's RSS; (result, wall s, sampler)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = bl.TreeRss(proc.pid, RSS_SAMPLE_S).start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, sampler


def scan_outputs(out: Path) -> tuple[dict[str, tuple[int, int]], str]:
    """Every file under `out`: name -> (width, height) from its header; and a digest of
    all the bytes (name order)."""
    sizes: dict[str, tuple[int, int]] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = path.relative_to(out).as_posix()
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        with Image.open(io.BytesIO(data)) as img:
            sizes[name] = img.size
    return sizes, digest.hexdigest()


def run_sedamp(images: Path, n: int, cores: int | None, sets: Sequence[str]) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-thumbs-sedamp-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "sedamp", "run", str(TOPOLOGY), "--workdir", str(Path(tmp) / "work")]
        cmd += ["--json", "-q", *(a for s in sets for a in ("--set", s))]
        if cores is not None:
            cmd += ["--cores", str(cores)]
        proc, wall, rss = timed_child(cmd, bl.user_env(IN=str(images), OUT=str(out)))
        run = Run("sedamp", n, wall, peak_rss_bytes=rss.peak_bytes, peak_processes=rss.peak_procs)
        run.extra["command"] = shlex.join(cmd)
        problems = []
        try:
            summary = json.loads(proc.stdout)
        except json.JSONDecodeError:
            summary = None
            problems.append(f"no JSON summary (exit code {proc.returncode}): {proc.stderr.strip()[-500:]}")
        if summary is not None:
            thumb = next((s for s in summary["stages"] if s["name"] == "thumb"), {})
            run.procs = f"thumb max {thumb.get('workers', '?')}"
            run.extra["summary"] = {k: v for k, v in summary.items() if k not in ("run_dir", "dead_letters")}
            if summary["exit_code"] != 0:
                problems.append(
                    f"exit code {summary['exit_code']} (error={summary['error']!r}, failed={summary['failed']})"
                )
            if summary["events"] != n:
                problems.append(f"the source read {summary['events']} images, not {n}")
        if out.is_dir():
            run.outputs, run.digest = scan_outputs(out)
        if problems:
            run.error = "; ".join(problems)
        return run


def run_pool(images: Path, n: int, procs: int, chunk: int, sets: Sequence[str]) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-thumbs-pool-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, os.path.abspath(__file__), "--pool-child", "--pool-in", str(images)]
        cmd += ["--pool-out", str(out), "--pool-procs", str(procs), "--pool-chunksize", str(chunk)]
        cmd += [a for s in sets for a in ("--set", s)]
        proc, wall, rss = timed_child(cmd, bl.user_env())
        run = Run("pool", n, wall, procs=str(procs), peak_rss_bytes=rss.peak_bytes, peak_processes=rss.peak_procs)
        run.extra.update(command=shlex.join(cmd), chunksize=chunk)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            run.error = f"the child exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"
        else:
            result = json.loads(lines[-1])
            if result["count"] != n or result["errors"]:
                run.error = f"listed {result['count']} of {n} images; errors: {result['errors'][:3]}"
        if out.is_dir():
            run.outputs, run.digest = scan_outputs(out)
        return run


def guarded(system: str, n: int, fn: Callable[[], Run]) -> Run:
    try:
        return fn()
    except Exception as exc:
        return Run(system, n, error=f"{type(exc).__name__}: {exc}", extra={"traceback": traceback.format_exc(limit=6)})


def check(run: Run, expected: dict[str, tuple[int, int]]) -> Run:
    """Fill `run.error` unless it wrote exactly the expected names and sizes."""
    if not run.ok:
        return run
    if run.outputs != expected:
        missing = sorted(set(expected) - set(run.outputs))
        extra = sorted(set(run.outputs) - set(expected))
        wrong = sorted(k for k in set(expected) & set(run.outputs) if expected[k] != run.outputs[k])
        run.error = (
            f"outputs differ from the expected: {len(missing)} missing {missing[:3]}, {len(extra)} unexpected "
            f"{extra[:3]}, {len(wrong)} of the wrong size {[(k, run.outputs[k], expected[k]) for k in wrong[:3]]}"
        )
    return run


def chunksize(cost_per_image: float, n: int, procs: int) -> int:
    by_time = round(TARGET_CHUNK_S / max(cost_per_image, 1e-9))
    return max(1, min(by_time, math.ceil(n / (4 * procs))))


# ---------------------------------------------------------------------------------------
# Report


def print_table(runs: dict[str, Run], efficiency: dict[str, float], ratio: dict[str, float]) -> None:
    headers = ["system", "procs", "images", "wall s", "images/s", "eff. vs limit", "sedamp ÷ this"]
    headers += ["peak MiB", "tree procs", "check"]
    rows = []
    for r in runs.values():
        eff, rat = efficiency.get(r.system, math.nan), ratio.get(r.system, math.nan)
        rows.append(
            [
                r.system,
                r.procs or "-",
                f"{r.images:,}",
                f"{r.wall_s:.2f}" if r.ok else "-",
                bl.fmt_rate(r.rate),
                "-" if math.isnan(eff) else f"{eff:.1%}",
                "-" if math.isnan(rat) else f"{rat:.2f}x",
                f"{r.peak_rss_bytes / bl.MIB:,.0f}" if r.peak_rss_bytes else "-",
                str(r.peak_processes or "-"),
                "ok" if r.ok else "FAILED",
            ]
        )
    print(bl.format_table(headers, rows, right=[False] + [True] * 8 + [False]))


def run_json(r: Run) -> dict[str, Any]:
    d = asdict(r)
    d.pop("outputs")
    d["ok"], d["images_per_s"], d["outputs_count"] = r.ok, r.rate, len(r.outputs)
    return d


# ---------------------------------------------------------------------------------------
# Main


def csv_systems(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or any(t not in SYSTEMS for t in items):
        raise argparse.ArgumentTypeError(f"choose from {','.join(SYSTEMS)} (got {text!r})")
    return items


def positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sedamp" / "bench-thumbnails"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for what each figure measures.",
    )
    p.add_argument("--images", type=bl.positive, default=500, help="number of images (500)")
    p.add_argument("--min-mp", type=positive_float, default=1.0, help="smallest image, in megapixels (1)")
    p.add_argument("--max-mp", type=positive_float, default=4.0, help="largest image, in megapixels (4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the image sizes and contents (1)")
    p.add_argument("--size", type=bl.positive, default=256, help="thumbnail bounding box, px (256)")
    p.add_argument("--quality", type=bl.positive, default=85, help="thumbnail JPEG quality (85)")
    p.add_argument("--cache", type=Path, default=default_cache(), help=f"where the images are kept ({default_cache()})")
    p.add_argument("--cores", type=bl.positive, help="pool processes and sedamp's core budget (the usable cores)")
    p.add_argument("--cpu-sample", type=bl.positive, default=30, help="images timed serially for the CPU cost (30)")
    p.add_argument("--only", type=csv_systems, default=list(SYSTEMS), help="comma-separated systems (sedamp,pool)")
    p.add_argument("--repeat", type=bl.positive, default=1, help="rounds; each system's best is reported (1)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--pool-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pool-in", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--pool-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--pool-procs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pool-chunksize", type=int, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], dest="sets", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.min_mp > args.max_mp:
        p.error(f"--min-mp ({args.min_mp}) must not exceed --max-mp ({args.max_mp})")
    return args


def summarize_specs(specs: Iterable[ImageSpec]) -> dict[str, float]:
    mps = [s.megapixels for s in specs]
    return {"mean_mp": statistics.fmean(mps), "min_mp": min(mps), "max_mp": max(mps), "total_mp": sum(mps)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pool_child:
        return pool_child(args.pool_in, args.pool_out, args.pool_procs, args.pool_chunksize, args.sets)

    info = bl.machine_info()
    cores = args.cores or int(info["cores"])
    print("sedamp thumbnails benchmark")
    print(f"command : {info['command']}")
    print(f"python  : {info['python']} (multiprocessing start method: {info['mp_start_method']})")
    print(f"cpu     : {info['cpu_model']}")
    print(
        f"cores   : {info['cores']} usable (sched_getaffinity; os.cpu_count() = {info['cpu_count']}), "
        f"memory {info['memory_gib']} GiB; pool processes and sedamp's budget: {cores}"
    )
    print(f"date    : {info['date']}")
    if info["loadavg"] is not None:
        print(f"load    : {' '.join(map(str, info['loadavg']))} (1/5/15 min, before the runs)")
    print(f"repeat  : {args.repeat} round(s), best reported; systems: {','.join(args.only)}")

    n = args.images
    specs = image_specs(n, args.min_mp, args.max_mp, args.seed)
    images = args.cache / f"n{n}-mp{args.min_mp:g}-{args.max_mp:g}-seed{args.seed}"
    made, gen_s = ensure_images(images, specs, args.seed, int(info["cores"]))
    stats = summarize_specs(specs)
    disk = sum((images / s.name).stat().st_size for s in specs)
    print(
        f"images  : {n:,} JPEGs (q{SOURCE_QUALITY}) of {stats['min_mp']:.2f}-{stats['max_mp']:.2f} MP, mean "
        f"{stats['mean_mp']:.2f} MP, {disk / bl.MIB:,.1f} MiB in {images}"
        + (f" ({made} made now in {gen_s:.1f} s)" if made else " (cached)")
    )
    sets = overrides(args.size, args.quality)
    _, thumb = load_stages(images, Path(os.devnull), sets)
    expected = {thumbnail_name(str(images / s.name), thumb.root, thumb.suffix): s for s in specs}
    expected_sizes = {name: target_size(s.width, s.height, thumb.box, thumb.fit) for name, s in expected.items()}
    print(
        f"work    : thumbnails.yaml, {thumb.fit} in {thumb.box[0]} x {thumb.box[1]} px, {thumb.format} q{thumb.quality}"
    )

    all_runs: dict[str, list[Run]] = {s: [] for s in args.only}
    limits: list[float] = []
    cpu_costs: list[float] = []
    identical: list[bool] = []
    sample_mp = math.nan
    chunk = 1
    for round_no in range(args.repeat):
        cost, sample_mp = cpu_per_image(images, specs, args.cpu_sample, sets)
        cpu_costs.append(cost)
        limits.append(cores / cost)
        chunk = chunksize(cost, n, cores)
        print(
            f"round {round_no + 1}: CPU per image {cost * 1e3:.1f} ms (sample mean {sample_mp:.2f} MP) -> "
            f"limit {cores / cost:,.1f} images/s",
            flush=True,
        )
        plan: dict[str, Callable[[], Run]] = {
            "sedamp": functools.partial(run_sedamp, images, n, args.cores, sets),
            "pool": functools.partial(run_pool, images, n, cores, chunk, sets),
        }
        for system in args.only:
            run = check(guarded(system, n, plan[system]), expected_sizes)
            all_runs[system].append(run)
            print(f"  {system}: " + (f"{run.wall_s:.2f} s" if run.ok else f"FAILED: {run.error}"), flush=True)
        if len(args.only) == 2:
            a, b = (all_runs[s][-1] for s in SYSTEMS)
            if a.ok and b.ok and a.outputs != b.outputs:
                b.error = "sedamp and pool wrote different names or sizes"
            identical.append(a.ok and b.ok and a.digest == b.digest)

    runs, efficiency, ratio = bl.round_figures(all_runs, limits)
    for system, rs in all_runs.items():
        if system in efficiency:  # every round ran
            runs[system].peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in rs)  # a bound: the worst round

    limit = statistics.median(limits)
    print()
    print(f"== thumbnails: {n:,} images ({stats['total_mp']:,.0f} MP) -> {thumb.box[0]} px JPEG q{thumb.quality} ==")
    print_table(runs, efficiency, ratio)
    notes = [
        f"limit per round: {', '.join(f'{x:,.1f}' for x in limits)} images/s ({cores} cores / CPU seconds per image "
        f"measured serially on {min(args.cpu_sample, n)} images: "
        f"{', '.join(f'{c * 1e3:.1f} ms' for c in cpu_costs)}; the sample's mean is {sample_mp:.2f} MP, the set's "
        f"{stats['mean_mp']:.2f} MP).",
        f"pool: Pool({cores}).imap_unordered, chunksize {chunk} (~{TARGET_CHUNK_S * 1e3:.0f} ms of work, at most "
        "N / (4 x processes)). Both wall times include starting the child interpreter and its processes.",
        "peak MiB: the highest summed RSS of the child and all its descendants, sampled every "
        f"{RSS_SAMPLE_S:g} s (max over rounds); tree procs: the most processes seen at once.",
    ]
    if identical:
        notes.append(
            "thumbnails byte-identical between sedamp and pool: "
            + ", ".join("yes" if x else "no" for x in identical)
            + " (per round)."
        )
    for note in notes:
        print(f"  * {note}")
    failures = [f"{r.system}: {r.error}" for rs in all_runs.values() for r in rs if r.error]
    for f in failures:
        print(f"  !!! {f}")

    if args.json:
        report = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items() if not k.startswith("pool_") and k != "sets"},
            "images": {"directory": images, "count": n, "bytes": disk, **stats},
            "cores": cores,
            "cpu_per_image_s": cpu_costs,
            "limit_images_per_s": limit,
            "limits": limits,
            "efficiency": efficiency,
            "ratio": ratio,
            "identical_bytes": identical,
            "notes": notes,
            "runs": {k: run_json(r) for k, r in runs.items()},
            "all_runs": {k: [run_json(r) for r in rs] for k, rs in all_runs.items()},
            "failures": failures,
        }
        Path(args.json).write_text(json.dumps(bl.strict_json(report), indent=2) + "\n", encoding="utf-8")
        print(f"\nJSON written to {args.json}")
    return bl.verdict(
        failures, "all outputs verified (each thumbnail present, of the exact expected size, the same for every system)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
