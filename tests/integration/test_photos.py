"""topologies/photos.yaml through the real CLI: generated photos (one turned by EXIF, one
with transparency, one grey, one in subfolders, one corrupt) travel as arrays through
decode -> resize -> sharpen -> encode -> write and come out as JPEGs of the exact sizes,
upright; fused by the runtime, fused by hand (`group:`) and kept apart (`fuse: never`,
each array crossing processes as a frame), the output bytes are the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.test_thumbnails import BLUE, RED, decode, gradient, halves
from tests.integration.util import TOPOLOGIES, run_sedamp, stage_of, summary_of

pytest.importorskip("numpy")

TOPOLOGY = TOPOLOGIES / "photos.yaml"
BOX = 320  # resize.params.size in the topology
ARRAY_STAGES = ["decode", "resize", "sharpen", "encode"]


def expected_size(width: int, height: int) -> tuple[int, int]:
    """The contain rule, written out: fit inside BOX x BOX, never enlarge, half rounds up."""
    if width <= BOX and height <= BOX:
        return width, height
    if width >= height:
        return BOX, max(1, (2 * height * BOX + width) // (2 * width))
    return max(1, (2 * width * BOX + height) // (2 * height)), BOX


def make_inputs(root: Path) -> dict[str, tuple[int, int]]:
    """Nine images (and a corrupt one); the expected output name -> size of each good one."""
    expected: dict[str, tuple[int, int]] = {}
    for i, (name, (w, h)) in enumerate(
        {"wide.jpg": (800, 600), "tall.png": (300, 900), "pic.webp": (500, 700), "small.jpg": (200, 100)}.items()
    ):
        gradient(w, h, i).save(root / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        expected[name.rsplit(".", 1)[0] + ".jpg"] = expected_size(w, h)
    logo = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    logo.paste((0, 150, 0, 255), (100, 50, 300, 150))
    logo.save(root / "logo.png")
    expected["logo.jpg"] = expected_size(400, 200)
    Image.linear_gradient("L").resize((640, 200)).save(root / "grey.png")
    expected["grey.jpg"] = expected_size(640, 200)
    halves(960, 320).save(root / "halves.jpg", quality=95)
    expected["halves.jpg"] = expected_size(960, 320)
    # a portrait photo stored on its side: EXIF orientation 6 turns it upright (1000 x 1500)
    exif = Image.Exif()
    exif[0x0112] = 6
    halves(1000, 1500).transpose(Image.Transpose.ROTATE_90).save(root / "turned.jpg", quality=95, exif=exif.tobytes())
    expected["turned.jpg"] = expected_size(1000, 1500)
    (root / "2024" / "june").mkdir(parents=True)
    gradient(700, 500, 9).save(root / "2024" / "june" / "b.JPEG", quality=90)
    expected["2024/june/b.jpg"] = expected_size(700, 500)
    (root / "2024" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG after all" * 10)
    return expected


def variant(tmp: Path, how: str) -> Path:
    """photos.yaml with decode .. encode in one group (`group`) or each in a pool of its
    own (`apart`)."""
    line = {"group": "    group: photo\n", "apart": "    fuse: never\n"}[how]
    text = re.sub(r"(?m)^(    handler: stages\.images:.*\n)", lambda m: m.group(1) + line, TOPOLOGY.read_text())
    path = tmp / f"photos-{how}.yaml"
    path.write_text(text)
    return path


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 30 for a, b in zip(pixel, colour, strict=True))


def test_photos_example_fused_by_hand_or_apart_gives_the_same_bytes(workdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    expected = make_inputs(src)
    runs: dict[str, dict[str, bytes]] = {}
    for how, topology in [("auto", TOPOLOGY), ("group", variant(tmp_path, "group")), ("apart", variant(tmp_path, "apart"))]:
        out = tmp_path / f"out-{how}"
        env = {"IN": str(src), "OUT": str(out)}
        proc = run_sedamp("run", str(topology), "--workdir", str(workdir), "--json", env=env, timeout=120)
        assert proc.returncode == 1, proc.stderr  # the corrupt image failed, the rest went on
        s = summary_of(proc)
        assert (s["events"], s["failed"]) == (10, 1), how
        assert stage_of(s, "decode")["failed"] == 1 and stage_of(s, "write")["events_in"] == 9
        fused = {(f["from"], f["to"]) for f in s["fusion"] if f["action"] == "fuse"}
        chain = set(zip(ARRAY_STAGES, ARRAY_STAGES[1:], strict=False))
        assert fused == {"auto": chain, "group": set(), "apart": set()}[how], s["fusion"]
        if how == "apart":  # each in its own pool: the arrays crossed processes
            assert {f["reason"] for f in s["fusion"] if f["to"] != "write"} == {
                f"'{a}' says fuse: never" for a, _ in chain
            }
        [letter] = read_dead_letters(s["dead_letters"])
        broken = str(src / "2024" / "broken.jpg")
        assert letter["stage"] == "decode" and letter["event"]["path"] == broken
        assert letter["message"].startswith(f"Decode: {broken!r} is not a readable image: ")
        runs[how] = outputs(out)

    got = runs["auto"]
    assert sorted(got) == sorted(expected)
    for name, size in expected.items():
        img = decode(tmp_path / "out-auto" / name)
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", size), name
    turned = decode(tmp_path / "out-auto" / "turned.jpg")  # upright again: portrait, red on the left
    assert turned.size == (213, 320)
    assert near(turned.getpixel((30, 160)), RED) and near(turned.getpixel((180, 160)), BLUE)
    halves_img = decode(tmp_path / "out-auto" / "halves.jpg")
    assert near(halves_img.getpixel((30, 50)), RED) and near(halves_img.getpixel((290, 50)), BLUE)
    assert min(decode(tmp_path / "out-auto" / "logo.jpg").getpixel((5, 5))) > 245  # transparency on white
    assert runs["group"] == got and runs["apart"] == got  # the same bytes, however the stages ran

    # Run again: every output exists, so only the corrupt image is listed.
    again = run_sedamp("run", str(TOPOLOGY), "--workdir", str(workdir), "--json",
                       env={"IN": str(src), "OUT": str(tmp_path / "out-auto")}, timeout=120)  # fmt: skip
    assert again.returncode == 1, again.stderr
    assert stage_of(summary_of(again), "files")["events_out"] == 1


def test_photos_example_on_the_sample_images(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_sedamp("run", str(TOPOLOGY), "--workdir", str(workdir), "--json", env={"OUT": str(out)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = {name: decode(out / name).size for name in outputs(out)}
    assert got == {
        "sunset.jpg": (320, 213),
        "portrait-rotated.jpg": (240, 320),  # stored 400 x 300 with EXIF orientation 6
        "logo.jpg": (300, 300),
        "grey.jpg": (320, 128),
        "small.jpg": (64, 48),
        "holiday/beach.jpg": (320, 200),
    }
    portrait = decode(out / "portrait-rotated.jpg")  # upright: red top half, blue bottom half
    assert near(portrait.getpixel((20, 20)), (200, 30, 30)) and near(portrait.getpixel((20, 300)), (30, 60, 200))


def test_photos_params_are_checked_before_anything_runs(workdir: Path) -> None:
    proc = run_sedamp("validate", str(TOPOLOGY), "--set", "sharpen.params.percent=0", "--set", "encode.params.format=GIF")
    assert proc.returncode == 2, proc.stderr
    assert "stages.sharpen.params.percent: Sharpen: percent must be an int from 1 to 1000, got 0" in proc.stderr
    assert "stages.encode.params.format: Encode: format must be one of JPEG, PNG, WEBP, got 'GIF'" in proc.stderr
    assert run_sedamp("validate", str(TOPOLOGY)).returncode == 0
