"""topologies/thumbnails.yaml through the real CLI: a folder of generated images (one
corrupt, some in subfolders, one turned by EXIF) becomes thumbnails of the exact sizes;
the corrupt one is a dead letter naming it; a second run does only what is left."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.util import TOPOLOGIES, run_sedamp, stage_of, summary_of

RED, BLUE = (220, 20, 20), (20, 20, 220)
BOX = 256  # thumb.params.size in the topology


def expected_size(width: int, height: int) -> tuple[int, int]:
    """The contain rule, written out: fit inside BOX x BOX, never enlarge, half rounds up."""
    if width <= BOX and height <= BOX:
        return width, height
    if width >= height:
        return BOX, max(1, (2 * height * BOX + width) // (2 * width))
    return max(1, (2 * width * BOX + height) // (2 * height)), BOX


def gradient(width: int, height: int, seed: int) -> Image.Image:
    img = Image.linear_gradient("L").resize((width, height))
    tint = ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)
    return Image.merge("RGB", [img.point(lambda v, t=t: (v + t) % 256) for t in tint])


def halves(width: int, height: int) -> Image.Image:
    """Red left half, blue right half."""
    img = Image.new("RGB", (width, height), RED)
    img.paste(BLUE, (width // 2, 0, width, height))
    return img


def make_inputs(root: Path) -> dict[str, tuple[int, int]]:
    """~20 images; returns the expected output name -> thumbnail size of each good one."""
    expected: dict[str, tuple[int, int]] = {}
    sizes = [(800, 600), (600, 800), (1200, 300), (300, 1200), (513, 300), (256, 256), (100, 60), (1024, 1024)]
    for i, (w, h) in enumerate(sizes):
        name = f"photo{i:02d}.jpg"
        gradient(w, h, i).save(root / name, quality=85)
        expected[f"photo{i:02d}.jpg"] = expected_size(w, h)
    for i, (w, h) in enumerate([(640, 480), (333, 999), (2000, 1001)]):
        gradient(w, h, 50 + i).save(root / f"shot{i}.png")
        expected[f"shot{i}.jpg"] = expected_size(w, h)
    gradient(500, 700, 60).save(root / "pic.webp")
    expected["pic.jpg"] = expected_size(500, 700)
    logo = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    logo.paste((0, 150, 0, 255), (100, 50, 300, 150))
    logo.save(root / "logo.png")
    expected["logo.jpg"] = expected_size(400, 200)
    halves(900, 300).save(root / "halves.jpg", quality=95)
    expected["halves.jpg"] = expected_size(900, 300)
    gradient(1600, 1200, 7).save(root / "UPPER.JPG", quality=85)  # the patterns ignore case
    expected["UPPER.jpg"] = expected_size(1600, 1200)
    # a portrait photo stored on its side: EXIF orientation 6 turns it upright (1000 x 1500)
    exif = Image.Exif()
    exif[0x0112] = 6
    halves(1000, 1500).transpose(Image.Transpose.ROTATE_90).save(root / "turned.jpg", quality=95, exif=exif.tobytes())
    expected["turned.jpg"] = expected_size(1000, 1500)
    (root / "2024" / "june").mkdir(parents=True)
    for i, rel in enumerate(["2024/a.jpg", "2024/june/b.png", "2024/june/c.jpeg"]):
        img = gradient(700 + 100 * i, 500, 80 + i)
        img.save(root / rel, **({"quality": 85} if rel.endswith(("jpg", "jpeg")) else {}))
        expected[rel.rsplit(".", 1)[0] + ".jpg"] = expected_size(700 + 100 * i, 500)
    (root / "2024" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG after all" * 10)
    (root / "notes.txt").write_text("not an image, not listed")
    return expected


def decode(path: Path) -> Image.Image:
    img = Image.open(io.BytesIO(path.read_bytes()))
    img.load()
    return img


def test_thumbnails_example(workdir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "photos", tmp_path / "thumbs"
    src.mkdir()
    expected = make_inputs(src)
    assert len(expected) == 19  # + 1 corrupt = 20 images
    env = {"IN": str(src), "OUT": str(out)}
    topology = str(TOPOLOGIES / "thumbnails.yaml")

    proc = run_sedamp("run", topology, "--workdir", str(workdir), "--json", env=env)
    assert proc.returncode == 1, proc.stderr  # the corrupt image failed, the rest went on
    s = summary_of(proc)
    assert s["events"] == 20 and s["failed"] == 1
    assert stage_of(s, "thumb")["events_in"] == 20
    assert stage_of(s, "thumb")["failed"] == 1
    assert stage_of(s, "write")["events_in"] == 19

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(expected)
    for name, size in expected.items():
        img = decode(out / name)
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", size), name

    halves_img = decode(out / "halves.jpg")  # 256 x 85: red left, blue right
    assert all(abs(a - b) < 25 for a, b in zip(halves_img.getpixel((20, 42)), RED, strict=True))
    assert all(abs(a - b) < 25 for a, b in zip(halves_img.getpixel((235, 42)), BLUE, strict=True))
    turned = decode(out / "turned.jpg")  # upright again: portrait, red on the left
    assert turned.size == (171, 256)
    assert all(abs(a - b) < 25 for a, b in zip(turned.getpixel((20, 128)), RED, strict=True))
    assert all(abs(a - b) < 25 for a, b in zip(turned.getpixel((150, 128)), BLUE, strict=True))
    logo = decode(out / "logo.jpg")  # transparency composited on white
    assert min(logo.getpixel((5, 5))) > 245

    letters = read_dead_letters(s["dead_letters"])
    assert len(letters) == 1
    (letter,) = letters
    broken = str(src / "2024" / "broken.jpg")
    assert letter["stage"] == "thumb" and letter["error_type"] == "ValueError"
    assert letter["message"].startswith(f"Thumbnail: {broken!r} is not a readable image: ")
    assert letter["event"]["path"] == broken

    # Run again: every thumbnail exists, so only the corrupt image is listed.
    stamps = {name: os.stat(out / name).st_mtime_ns for name in expected}
    again = run_sedamp("run", topology, "--workdir", str(workdir), "--json", env=env)
    assert again.returncode == 1, again.stderr
    s2 = summary_of(again)
    assert s2["events"] == 1 and s2["failed"] == 1
    assert stage_of(s2, "files")["events_out"] == 1
    assert stage_of(s2, "thumb")["events_in"] == 1
    assert stage_of(s2, "write")["events_in"] == 0
    assert [d["event"]["path"] for d in read_dead_letters(s2["dead_letters"])] == [broken]
    assert {name: os.stat(out / name).st_mtime_ns for name in expected} == stamps  # nothing rewritten


def test_two_inputs_with_one_output_name_are_not_both_written(workdir: Path, tmp_path: Path) -> None:
    """a.jpg and a.png both became a.jpg: one overwrote the other, the summary counted
    both as written, and re-runs skipped both. Now the second is a dead letter naming
    both inputs and the output; what the summary counts as written is what is on disk;
    a re-run warns; keep_ext gives each its own output."""
    src, out = tmp_path / "photos", tmp_path / "thumbs"
    src.mkdir()
    colours = {"a.jpg": RED, "a.png": (20, 200, 20), "b.png": BLUE, "c.jpg": (200, 200, 20)}
    for name, colour in colours.items():
        Image.new("RGB", (300, 200), colour).save(src / name)
    env = {"IN": str(src), "OUT": str(out)}
    topology = str(TOPOLOGIES / "thumbnails.yaml")
    # two worker processes: the two a's may well be written by different processes
    proc = run_sedamp("run", topology, "--workdir", str(workdir), "--json", "--set", "thumb.workers=2", env=env)
    assert proc.returncode == 1, proc.stderr
    s = summary_of(proc)
    assert (s["events"], s["failed"]) == (4, 1)
    write = stage_of(s, "write")
    assert (write["events_in"], write["events_out"], write["failed"]) == (4, 3, 1)
    on_disk = sorted(p.name for p in out.iterdir())
    assert on_disk == ["a.jpg", "b.jpg", "c.jpg"] and len(on_disk) == write["events_out"]
    (letter,) = read_dead_letters(s["dead_letters"])
    a_jpg, a_png = str(src / "a.jpg"), str(src / "a.png")
    loser = letter["event"]["source"]
    owner = a_png if loser == a_jpg else a_jpg
    assert loser in (a_jpg, a_png) and letter["stage"] == "write"
    assert letter["message"].startswith(
        f"WriteFiles: {loser!r} and {owner!r} both name the output {str(out / 'a.jpg')!r}; it is {owner!r}'s, "
        f"and {loser!r} is not written"
    )
    kept = decode(out / "a.jpg").getpixel((150, 100))
    assert all(abs(a - b) < 25 for a, b in zip(kept, colours[Path(owner).name], strict=True))

    # Run again: both a's have their output; nothing is listed, but the clash is told.
    again = run_sedamp("run", topology, "--workdir", str(workdir), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert summary_of(again)["events"] == 0
    assert f"ListFiles: {a_jpg!r}, {a_png!r} all name the output {str(out / 'a.jpg')!r}" in again.stderr

    # keep_ext: every input its own output, and skip_existing matching those names
    kept_out = tmp_path / "kept"
    proc = run_sedamp(
        "run", topology, "--workdir", str(workdir), "--json",
        "--set", "thumb.params.keep_ext=true", "--set", f"files.params.skip_existing={kept_out}/{{relpath}}.jpg",
        env={**env, "OUT": str(kept_out)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in kept_out.iterdir()) == ["a.jpg.jpg", "a.png.jpg", "b.png.jpg", "c.jpg.jpg"]
    again = run_sedamp(
        "run", topology, "--workdir", str(workdir), "--json",
        "--set", "thumb.params.keep_ext=true", "--set", f"files.params.skip_existing={kept_out}/{{relpath}}.jpg",
        env={**env, "OUT": str(kept_out)},
    )  # fmt: skip
    assert (again.returncode, summary_of(again)["events"]) == (0, 0)
