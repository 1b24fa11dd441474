"""stages.images: called directly, no runtime, no processes. Every image is made here."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat, JpegImagePlugin, features

from stages import images
from stages.images import Thumbnail, encode, make_thumbnail, open_image, resize, target_size, thumbnail_name

RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 220, 20)
ORIENTATION = 0x0112
# The transpose that turns an upright image into what a camera stores with each EXIF
# orientation (the inverse of what exif_transpose applies).
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def quadrants(size: tuple[int, int]) -> Image.Image:
    """Upright test card: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    w, h = size
    img = Image.new("RGB", size, RED)
    img.paste(GREEN, (w // 2, 0, w, h // 2))
    img.paste(BLUE, (0, h // 2, w // 2, h))
    img.paste(YELLOW, (w // 2, h // 2, w, h))
    return img


def photo_like(size: tuple[int, int]) -> Image.Image:
    """Smooth gradients and a few shapes: compresses and scales like a photo."""
    w, h = size
    img = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ),
    )
    draw = ImageDraw.Draw(img)
    draw.ellipse((w // 5, h // 5, w // 2, h // 2), fill=(250, 240, 30))
    draw.rectangle((w // 2, h // 2, 4 * w // 5, 4 * h // 5), fill=(30, 60, 200))
    return img


def noisy(size: tuple[int, int]) -> Image.Image:
    return Image.merge("RGB", [Image.effect_noise(size, 60 + 10 * i) for i in range(3)])


def encoded(img: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def with_orientation(upright: Image.Image, orientation: int, fmt: str) -> bytes:
    op = STORED_AS[orientation]
    stored = upright.transpose(op) if op is not None else upright
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    options: dict[str, Any] = {"exif": exif.tobytes()}
    if fmt == "JPEG":
        options["quality"] = 95
    return encoded(stored, fmt, **options)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def near(pixel: Any, colour: tuple[int, ...], tolerance: int = 30) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def assert_quadrants(img: Image.Image, tolerance: int = 30) -> None:
    w, h = img.size
    rgb = img.convert("RGB")
    got = [rgb.getpixel((w // 4, h // 4)), rgb.getpixel((3 * w // 4, h // 4))]
    got += [rgb.getpixel((w // 4, 3 * h // 4)), rgb.getpixel((3 * w // 4, 3 * h // 4))]
    for pixel, colour in zip(got, (RED, GREEN, BLUE, YELLOW), strict=True):
        assert near(pixel, colour, tolerance), f"{got} is not {RED, GREEN, BLUE, YELLOW}"


def thumb(**params: Any) -> Thumbnail:
    t = Thumbnail()
    t.setup(**params)
    return t


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("width", "height", "size", "fit", "expected"),
    [
        (4000, 3000, 256, "contain", (256, 192)),
        (3000, 4000, 256, "contain", (192, 256)),
        (1000, 1000, 256, "contain", (256, 256)),
        (513, 300, 256, "contain", (256, 150)),  # 149.7 rounds up
        (1000, 10, 256, "contain", (256, 3)),  # 2.56 -> 3
        (10_000, 10, 256, "contain", (256, 1)),  # never below 1 px
        (800, 600, [100, 300], "contain", (100, 75)),  # the width meets the box
        (800, 600, [300, 100], "contain", (133, 100)),  # the height meets the box
        (200, 100, 256, "contain", (200, 100)),  # inside the box: never enlarged
        (256, 256, 256, "contain", (256, 256)),
        (200, 100, [200, 50], "contain", (100, 50)),
        (4000, 3000, 256, "cover", (256, 256)),
        (100, 50, [300, 200], "cover", (300, 200)),  # cover fills the box, enlarging
        (4000, 3000, [300, 100], "exact", (300, 100)),
        (10, 10, [30, 20], "exact", (30, 20)),
    ],
)
def test_target_size(width: int, height: int, size: Any, fit: str, expected: tuple[int, int]) -> None:
    assert target_size(width, height, size, fit) == expected
    assert resize(Image.new("RGB", (width, height)), size, fit).size == expected


def test_resize_contain_keeps_the_picture_and_never_enlarges() -> None:
    card = quadrants((800, 400))
    small = resize(card, 100)
    assert small.size == (100, 50)
    assert_quadrants(small, tolerance=2)
    tiny = Image.new("RGB", (40, 30), RED)
    same = resize(tiny, 256)
    assert same.size == (40, 30) and same is not tiny
    assert card.size == (800, 400)  # the input is left as it is


def test_resize_cover_crops_the_centre() -> None:
    img = Image.new("RGB", (300, 100), RED)  # red | green | blue thirds
    img.paste(GREEN, (100, 0, 200, 100))
    img.paste(BLUE, (200, 0, 300, 100))
    out = resize(img, 50, "cover")
    assert out.size == (50, 50)
    # the middle third only (LANCZOS reads a little past the crop at its edges)
    assert all(near(out.getpixel((x, y)), GREEN, 3) for x in range(2, 48) for y in range(50))
    assert out.getpixel((25, 25)) == GREEN
    tall = img.transpose(Image.Transpose.ROTATE_90)  # 100 x 300: the thirds stacked
    square = resize(tall, [20, 20], "cover")
    assert all(near(square.getpixel((x, y)), GREEN, 3) for x in range(20) for y in range(3, 17))


def test_resize_exact_stretches() -> None:
    out = resize(quadrants((400, 400)), [100, 20], "exact")
    assert out.size == (100, 20)
    assert_quadrants(out, tolerance=2)


def test_resize_palette_and_bilevel_images_use_a_real_filter() -> None:
    pal = quadrants((200, 200)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out = resize(pal, 50)
    assert out.mode == "RGB" and out.size == (50, 50)
    assert_quadrants(out, tolerance=10)
    assert resize(Image.new("1", (100, 100), 1), 10).mode == "L"


def test_bad_size_and_fit() -> None:
    for size in (0, -5, [10], [10, 0], "big", True, [1.5, 2]):
        with pytest.raises(ValueError, match="size"):
            target_size(100, 100, size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fit must be one of contain, cover, exact"):
        target_size(100, 100, 10, "fill")


# ---------------------------------------------------------------- orientation


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    """Every orientation comes out upright: 400 x 200, red top-left, ... (and through
    Thumbnail, also when the JPEG is decoded at a reduced scale)."""
    data = with_orientation(quadrants((400, 200)), orientation, fmt)
    opened = open_image(data, "card")
    assert opened.size == (400, 200)
    assert_quadrants(opened)

    for params, size in (({"size": 100}, (100, 50)), ({"size": [60, 100], "fit": "cover"}, (60, 100))):
        out = thumb(format="PNG", **params).handle({"name": "card.jpg", "data": data})
        assert (out["width"], out["height"]) == size
        img = decode(out["data"])
        assert img.size == size
        assert_quadrants(img)  # the cover crop is the centre of the upright image


@pytest.mark.parametrize("orientation", [6, 8])
def test_rotated_camera_jpeg_through_the_reduced_decode(orientation: int, tmp_path: Path) -> None:
    """A portrait photo stored on its side (orientation 6 or 8) comes out portrait, with
    the quadrants where they belong, at the exact size."""
    path = tmp_path / "portrait.jpg"
    path.write_bytes(with_orientation(quadrants((1500, 2000)), orientation, "JPEG"))
    assert Image.open(path).size == (2000, 1500)  # as stored
    out = thumb(size=200).handle({"path": str(path)})
    img = decode(out["data"])
    assert img.size == (out["width"], out["height"]) == (150, 200)
    assert_quadrants(img)
    # the orientation is applied once: the output carries no orientation tag
    assert img.getexif().get(ORIENTATION) is None


# ---------------------------------------------------------------- reduced JPEG decoding


def test_draft_decodes_big_jpegs_smaller_and_the_result_stays_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(photo_like((4000, 3000)), quality=90)
    calls: list[Any] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Any, mode: Any, size: Any) -> Any:
        result = real(self, mode, size)
        calls.append((size, result))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = make_thumbnail(data, size=256)
    assert calls == [((512, 384), ("RGB", (0, 0, 1000.0, 750.0)))]  # decoded at 1/4: 1000 x 750
    full = make_thumbnail(data, size=256, draft=False)
    assert len(calls) == 1
    assert (fast.width, fast.height) == (full.width, full.height) == (256, 192)
    diff = ImageStat.Stat(ImageChops.difference(decode(fast.data), decode(full.data))).mean
    assert max(diff) < 2.0, diff  # the same to the eye


@pytest.mark.parametrize(
    ("size", "fit", "box"),
    [
        ((2999, 2001), "contain", 200),
        ((2001, 2999), "cover", [120, 200]),
        ((3001, 1999), "cover", [300, 100]),
        ((2999, 2001), "exact", [77, 333]),
    ],
)
def test_draft_keeps_exact_sizes_and_crops(size: tuple[int, int], fit: str, box: Any) -> None:
    src = photo_like(size)
    data = encoded(src, quality=92)
    fast = make_thumbnail(data, size=box, fit=fit)
    full = make_thumbnail(data, size=box, fit=fit, draft=False)
    expected = target_size(*size, box, fit)
    assert (fast.width, fast.height) == (full.width, full.height) == expected
    assert decode(fast.data).size == expected
    diff = ImageStat.Stat(ImageChops.difference(decode(fast.data), decode(full.data))).mean
    assert max(diff) < 3.0, diff


# ---------------------------------------------------------------- modes and formats


def test_alpha_to_jpeg_is_composited_on_white() -> None:
    logo = Image.new("RGBA", (200, 200), (0, 0, 0, 0))  # transparent black
    logo.paste((200, 0, 0, 255), (50, 50, 150, 150))
    out = decode(make_thumbnail(encoded(logo, "PNG"), size=100).data)
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == (100, 100)
    assert near(out.getpixel((3, 3)), (255, 255, 255), 6)  # white, not black
    assert near(out.getpixel((50, 50)), (200, 0, 0), 12)

    la = Image.new("LA", (40, 40), (0, 0))
    assert near(decode(encode(la, "JPEG")).getpixel((20, 20)), (255, 255, 255), 4)
    pal = Image.new("P", (40, 40), 0)
    pal.info["transparency"] = 0
    assert near(decode(encode(pal, "JPEG")).getpixel((20, 20)), (255, 255, 255), 4)


def test_png_and_webp_output_decode_and_keep_alpha() -> None:
    logo = Image.new("RGBA", (300, 150), (0, 0, 0, 0))
    logo.paste((0, 0, 255, 255), (0, 0, 150, 150))
    png = decode(make_thumbnail(encoded(logo, "PNG"), size=100, format="png").data)
    assert (png.format, png.mode, png.size) == ("PNG", "RGBA", (100, 50))
    assert png.getpixel((25, 25)) == (0, 0, 255, 255) and png.getpixel((75, 25))[3] == 0
    if not features.check("webp"):
        pytest.skip("this Pillow has no WEBP support")
    webp = decode(make_thumbnail(encoded(logo, "PNG"), size=100, format="WEBP").data)
    assert (webp.format, webp.mode, webp.size) == ("WEBP", "RGBA", (100, 50))
    rgb = decode(make_thumbnail(encoded(photo_like((400, 300))), size=100, format="webp").data)
    assert (rgb.format, rgb.mode, rgb.size) == ("WEBP", "RGB", (100, 75))


def test_modes() -> None:
    grey = Image.linear_gradient("L").resize((300, 300))
    assert decode(make_thumbnail(encoded(grey, "PNG"), size=50).data).mode == "RGB"  # JPEG default: RGB
    assert decode(make_thumbnail(encoded(grey, "PNG"), size=50, mode="L").data).mode == "L"
    assert decode(make_thumbnail(encoded(grey, "PNG"), size=50, format="PNG").data).mode == "L"  # kept
    cmyk = Image.new("CMYK", (100, 100), (0, 255, 255, 0))  # red in ink
    out = decode(make_thumbnail(encoded(cmyk, "JPEG"), size=50).data)
    assert out.mode == "RGB" and near(out.getpixel((25, 25)), (255, 0, 0), 20)
    deep = Image.new("I;16", (64, 64), 3000)  # 16-bit grey: scaled to 8 bits, not clipped to white
    assert decode(encode(deep, "JPEG", mode="L")).getpixel((10, 10)) in range(9, 14)
    assert encode(Image.new("RGB", (8, 8)), "jpg")[:2] == b"\xff\xd8"


def test_quality_changes_the_size() -> None:
    img = noisy((200, 200))
    sizes = [len(encode(img, "JPEG", q)) for q in (20, 50, 95)]
    assert sizes == sorted(sizes) and sizes[0] * 2 < sizes[2]
    data = encoded(img, "PNG")
    assert len(make_thumbnail(data, size=150, quality=30).data) < len(make_thumbnail(data, size=150, quality=95).data)
    if features.check("webp"):
        assert len(encode(img, "WEBP", 20)) < len(encode(img, "WEBP", 95))


def test_icc_profile_kept_within_a_colour_space() -> None:
    fake_icc = b"\x00" * 128  # stored as is: Pillow does not parse it when saving
    rgb = encoded(photo_like((400, 400)), "JPEG", icc_profile=fake_icc)
    assert decode(make_thumbnail(rgb, size=50).data).info.get("icc_profile") == fake_icc
    assert decode(make_thumbnail(rgb, size=50, mode="L").data).info.get("icc_profile") is None


def test_bad_params_are_refused_in_setup() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"fit": "stretch"}, "fit must be one of"),
        ({"format": "GIF"}, "format must be one of JPEG, PNG, WEBP"),
        ({"quality": 0}, "quality must be an int from 1 to 100"),
        ({"quality": 101}, "quality"),
        ({"size": 0}, "size"),
        ({"mode": "RGBA"}, "mode 'RGBA' cannot be written as JPEG; use one of L, RGB, CMYK"),
        ({"format": "WEBP", "mode": "L"}, "cannot be written as WEBP"),
        ({"max_pixels": 0}, "max_pixels must be an int >= 1"),
        ({"suffix": "a/b.jpg"}, "suffix"),
        ({"suffix": ""}, "suffix"),
        ({"draft": "yes"}, "draft must be true or false"),
        ({"accept": ["JPEG", "NOPE"]}, "accept names formats Pillow cannot open: NOPE"),
    ]
    for params, match in cases:
        with pytest.raises(ValueError, match=match):
            thumb(**params)
    t = thumb(size="128", quality="90", format="png")  # what ${VAR} substitution gives
    assert (t.box, t.quality, t.format, t.suffix) == ((128, 128), 90, "PNG", ".png")


def test_the_default_formats_load_only_their_plugins_and_any_other_name_loads_all() -> None:
    """Checking a Thumbnail's params (done before a run starts, and again by each
    worker's setup) loaded every Pillow plugin, ~45 ms where the default formats' own
    take ~20. Another format name still loads them all before it is judged. A fresh
    interpreter: Pillow's registry is global to a process."""
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from stages.images import Thumbnail, _accept\n"
        "Thumbnail.check_params(size=64)\n"
        "assert 'PIL.IcoImagePlugin' not in sys.modules, 'every plugin was loaded'\n"
        "assert {'JPEG', 'PNG', 'WEBP', 'GIF', 'BMP', 'TIFF'} <= set(Image.OPEN)\n"
        "assert _accept(['ico'], 'T') == ('ICO',)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content",
    [
        b"this is not an image at all",
        b"",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",  # a JPEG header and nothing else
    ],
)
def test_corrupt_file_is_a_value_error_naming_it(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "photos" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=r"^Thumbnail: '.*photos/broken\.jpg' is not a readable image: "):
        thumb().handle({"path": str(bad), "size": len(content)})
    with pytest.raises(ValueError, match=r"open_image: 'broken' is not a readable image"):
        open_image(content, "broken")


def test_truncated_jpeg_is_a_value_error_naming_it(tmp_path: Path) -> None:
    data = encoded(photo_like((600, 400)), quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    for draft in (True, False):
        with pytest.raises(ValueError, match=r"'.*cut\.jpg' is not a readable image: .*truncated"):
            thumb(size=64, draft=draft).handle({"path": str(cut)})


def test_missing_file_and_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Thumbnail: cannot read '.*gone\.jpg': No such file"):
        thumb().handle({"path": str(tmp_path / "gone.jpg")})
    ppm = tmp_path / "disguised.jpg"  # a format outside `accept`, named like a JPEG
    ppm.write_bytes(encoded(Image.new("RGB", (10, 10)), "PPM"))
    with pytest.raises(ValueError, match=r"'.*disguised\.jpg' is not a readable image: not an image in an accepted"):
        thumb().handle({"path": str(ppm)})
    assert thumb(accept=None).handle({"path": str(ppm)})["width"] == 10
    assert thumb(accept=["PPM"]).handle({"path": str(ppm)})["width"] == 10


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    """A 9000 x 9000 bilevel PNG is a few KB on disk and 81 MP decoded: over the 50 MP
    default, refused from its header."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"'.*bomb\.png' is not a readable image: 9000 x 9000 = 81,000,000 pixels"):
        thumb().handle({"path": str(bomb)})
    with pytest.raises(ValueError, match="over max_pixels"):
        open_image(bomb)
    small = encoded(Image.new("RGB", (200, 200)), "PNG")
    with pytest.raises(ValueError, match=r"'small' is not a readable image: 200 x 200 = 40,000 pixels is over"):
        make_thumbnail(small, "small", max_pixels=39_999)
    assert make_thumbnail(small, "small", max_pixels=40_000).width == 200


def test_pillows_own_bomb_errors_are_value_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encoded(Image.new("RGB", (40, 40)), "PNG")  # 1600 pixels: Pillow warns
    with pytest.raises(ValueError, match=r"'w' is not a readable image: refused as a possible decompression bomb"):
        make_thumbnail(data, "w", max_pixels=1000)
    assert make_thumbnail(data, "w", max_pixels=2000).width == 40  # max_pixels allows more: the warning is not an error
    big = encoded(Image.new("RGB", (50, 50)), "PNG")  # 2500 > 2 x 1000: Pillow refuses
    with pytest.raises(ValueError, match=r"'e' is not a readable image: refused as a possible decompression bomb"):
        make_thumbnail(big, "e", max_pixels=None)


def test_bad_events() -> None:
    for event in ({"name": "x.jpg"}, {"name": "x.jpg", "data": "text"}, {"size": 3}, ["x.jpg"], "x.jpg"):
        with pytest.raises(ValueError, match=r"Thumbnail: the event must be \{'path': str"):
            thumb().handle(event)  # type: ignore[arg-type]


# ---------------------------------------------------------------- names and events


def test_output_names(tmp_path: Path) -> None:
    assert thumbnail_name("photos/2024/june/a.PNG", "photos") == "2024/june/a.jpg"
    assert thumbnail_name("photos/2024/a.png") == "a.jpg"
    assert thumbnail_name("photos/a.tar.gz", "photos", ".webp") == "a.tar.webp"
    assert thumbnail_name("photos/.hidden", "photos/") == ".hidden.jpg"
    assert thumbnail_name("/abs/photos/x/y.jpeg", "/abs/photos", "_thumb.jpg") == "x/y_thumb.jpg"
    # keep_ext: inputs differing only in their extension get outputs of their own
    assert thumbnail_name("photos/2024/a.png", "photos", ".jpg", keep_ext=True) == "2024/a.png.jpg"
    assert thumbnail_name("photos/2024/a.jpg", "photos", ".jpg", keep_ext=True) == "2024/a.jpg.jpg"
    assert thumbnail_name("photos/noext", None, ".webp", keep_ext=True) == "noext.webp"
    with pytest.raises(ValueError, match=r"'elsewhere/a\.jpg' is not under root 'photos'"):
        thumbnail_name("elsewhere/a.jpg", "photos")
    with pytest.raises(ValueError, match="not under root"):
        thumbnail_name("photos", "photos")


def test_thumbnail_event_with_root_and_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "2024" / "june").mkdir(parents=True)
    path = root / "2024" / "june" / "beach.png"
    path.write_bytes(encoded(quadrants((1000, 500)), "PNG"))
    event = {"path": str(path), "size": path.stat().st_size}

    out = thumb(root=str(root), size=[300, 300]).handle(event)
    assert set(out) == {"name", "data", "width", "height", "source"}
    assert out["name"] == "2024/june/beach.jpg"
    assert (out["width"], out["height"], out["source"]) == (300, 150, str(path))
    assert decode(out["data"]).size == (300, 150)
    assert out["data"] == make_thumbnail(path, size=[300, 300]).data  # the functions do the same

    assert thumb().handle(event)["name"] == "beach.jpg"
    assert thumb(format="PNG", suffix="_small.png").handle(event)["name"] == "beach_small.png"
    with pytest.raises(ValueError, match="is not under root"):
        thumb(root=str(tmp_path / "other")).handle(event)


def test_thumbnail_of_bytes_event() -> None:
    data = encoded(quadrants((64, 64)), "PNG")
    out = thumb(size=32, fit="cover").handle({"name": "cards/card.png", "data": data, "extra": 1})
    assert out["name"] == "card.jpg" and out["source"] == "cards/card.png"
    assert (out["width"], out["height"]) == (32, 32)
    assert thumb(root="cards").handle({"name": "cards/card.png", "data": data})["name"] == "card.jpg"


def test_open_image_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "r.jpg"
    path.write_bytes(with_orientation(quadrants((300, 200)), 6, "JPEG"))
    img = open_image(path)
    assert img.size == (300, 200)
    assert_quadrants(img)


def test_import_without_pillow_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `import PIL` fail
    monkeypatch.delitem(sys.modules, "stages.images")
    with pytest.raises(ImportError) as info:
        importlib.import_module("stages.images")
    assert str(info.value) == "stages.images needs Pillow: pip install 'sedamp[images]'"
    assert images.Thumbnail is Thumbnail  # the module imported before is untouched


def test_a_32_bit_grey_image_becomes_a_png_it_can_write(tmp_path: Path) -> None:
    """Pillow cannot write mode I as PNG: it is converted, and mode I is refused at setup."""
    src = tmp_path / "i32.tif"
    Image.new("I", (64, 48), 70000).save(src)
    t = Thumbnail()
    t.setup(size=16, format="PNG")
    out = t.handle({"path": str(src)})
    assert (out["name"], out["width"], out["height"]) == ("i32.png", 16, 12)
    assert Image.open(io.BytesIO(out["data"])).mode in ("L", "RGB", "I;16")
    with pytest.raises(ValueError, match="mode 'I' cannot be written as PNG"):
        Thumbnail().setup(size=16, format="PNG", mode="I")
