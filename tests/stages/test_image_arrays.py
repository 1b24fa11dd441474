"""stages.images on arrays (Decode, Resize, Blur, Sharpen, Convert, Encode): called
directly on small images, no runtime, no processes. Every image is made here."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageCms, ImageFilter, ImageStat

from sedamp.runtime import wire
from stages import images
from stages.files import WriteFiles
from tests.stages.test_images import BLUE, RED, STORED_AS, assert_quadrants, encoded, noisy, quadrants, with_orientation

np = pytest.importorskip("numpy")

from stages.images import Blur, Convert, Decode, Encode, Resize, Sharpen  # noqa: E402


def stage(cls: type, **params: Any) -> Any:
    s = cls()
    s.setup(**params)
    return s


def event_of(img: Image.Image, name: str = "a.png", **extra: Any) -> dict[str, Any]:
    """An image event as Decode gives, made from a Pillow image (L, LA, RGB or RGBA);
    its array read-only, as one received from another stage is."""
    a = np.asarray(img).reshape(img.height, img.width, -1).copy()
    a.flags.writeable = False
    return {"name": name, "source": f"in/{name}", "image": a, "mode": img.mode, "icc_profile": None, **extra}


def image(event: dict[str, Any]) -> Image.Image:
    a = event["image"]
    return Image.fromarray(a.reshape(a.shape[:2]) if a.shape[2] == 1 else a)


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def with_alpha(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Transparent left half, opaque blue right half."""
    img = Image.new("RGBA", size, (255, 0, 0, 0))
    img.paste((*BLUE, 255), (size[0] // 2, 0, size[0], size[1]))
    return img


# ---------------------------------------------------------------- Decode


def test_decode_a_file_to_an_upright_rgb_array(tmp_path: Path) -> None:
    (tmp_path / "2024").mkdir()
    path = tmp_path / "2024" / "a.png"
    path.write_bytes(encoded(quadrants((60, 40)), "PNG"))
    out = stage(Decode, root=str(tmp_path)).handle({"path": str(path), "size": 123})
    assert sorted(out) == ["icc_profile", "image", "mode", "name", "source"]  # input fields not carried
    assert (out["name"], out["source"], out["mode"], out["icc_profile"]) == ("2024/a.png", str(path), "RGB", None)
    a = out["image"]
    assert (a.shape, a.dtype) == ((40, 60, 3), np.uint8)
    assert np.array_equal(a, np.asarray(quadrants((60, 40))))  # PNG is lossless
    assert stage(Decode).handle({"path": str(path)})["name"] == "a.png"  # without root: the file name


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_applies_the_exif_orientation(orientation: int, fmt: str) -> None:
    data = with_orientation(quadrants((60, 40)), orientation, fmt)
    out = stage(Decode).handle({"name": "turned.jpg", "data": data})
    assert out["image"].shape == (40, 60, 3)  # upright: landscape again
    assert_quadrants(image(out))


@pytest.mark.parametrize(
    ("mode", "channels"), [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)]
)  # fmt: skip
def test_decode_modes(mode: str, channels: int) -> None:
    out = stage(Decode, mode=mode).handle({"name": "logo.png", "data": encoded(with_alpha(), "PNG")})
    a = out["image"]
    assert (out["mode"], a.shape) == (mode, (20, 40, channels))
    if "A" in mode:
        assert a[10, 5, -1] == 0 and a[10, 35, -1] == 255  # the alpha is kept
    else:
        assert a[10, 5].min() == 255  # transparency composited on white
        assert a[10, 35, 0] < 100  # the blue (or its grey) is there


def test_decode_grey_palette_and_16_bit_images() -> None:
    grey = stage(Decode, mode="L").handle({"name": "g.png", "data": encoded(Image.new("L", (8, 6), 77), "PNG")})
    assert grey["image"].shape == (6, 8, 1) and int(grey["image"][0, 0, 0]) == 77
    as_rgb = stage(Decode).handle({"name": "g.png", "data": encoded(Image.new("L", (8, 6), 77), "PNG")})
    assert as_rgb["image"][0, 0].tolist() == [77, 77, 77]
    palette = Image.new("RGB", (8, 6), RED).convert("P", palette=Image.Palette.ADAPTIVE)
    assert stage(Decode).handle({"name": "p.gif", "data": encoded(palette, "GIF")})["image"][0, 0].tolist() == list(RED)
    deep = stage(Decode, mode="L").handle({"name": "d.png", "data": encoded(Image.new("I;16", (8, 6), 51200), "PNG")})
    assert int(deep["image"][0, 0, 0]) == 200  # scaled to 8 bits, not clipped


def test_decode_keeps_the_icc_profile_within_a_colour_space() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encoded(quadrants((20, 20)), "JPEG", icc_profile=icc, quality=95)
    assert stage(Decode).handle({"name": "a.jpg", "data": data})["icc_profile"] == icc
    assert stage(Decode, mode="L").handle({"name": "a.jpg", "data": data})["icc_profile"] is None


def test_decode_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    with pytest.raises(ValueError, match=r"^Decode: '.*broken\.jpg' is not a readable image: "):
        stage(Decode).handle({"path": str(bad)})
    with pytest.raises(ValueError, match=r"^Decode: cannot read '.*missing\.jpg'"):
        stage(Decode).handle({"path": str(tmp_path / "missing.jpg")})
    big = tmp_path / "big.png"
    big.write_bytes(encoded(Image.new("L", (100, 100)), "PNG"))
    with pytest.raises(ValueError, match="10,000 pixels is over max_pixels"):
        stage(Decode, max_pixels=9999).handle({"path": str(big)})
    with pytest.raises(ValueError, match=r"^Decode: the event must be \{'path': str, \.\.\.\} or"):
        stage(Decode).handle({"file": "x.jpg"})
    with pytest.raises(ValueError, match="is not under root"):
        stage(Decode, root=str(tmp_path / "elsewhere")).handle({"path": str(big)})


# ---------------------------------------------------------------- Resize


@pytest.mark.parametrize(
    ("size", "fit", "expected"),
    [(30, "contain", (30, 15)), ([30, 30], "cover", (30, 30)), ([10, 50], "exact", (10, 50))],
)
def test_resize(size: Any, fit: str, expected: tuple[int, int]) -> None:
    ev = event_of(quadrants((80, 40)), extra="kept")
    before = ev["image"].copy()
    out = stage(Resize, size=size, fit=fit).handle(ev)
    assert image(out).size == expected and out["image"].dtype == np.uint8
    assert (out["extra"], out["name"], out["mode"]) == ("kept", "a.png", "RGB")  # other fields kept
    assert np.array_equal(ev["image"], before)  # the input is left as it was
    if fit != "exact":
        assert_quadrants(image(out))


def test_resize_never_enlarges_with_contain_and_keeps_alpha() -> None:
    ev = event_of(with_alpha())
    assert stage(Resize, size=100).handle(ev)["image"] is ev["image"]  # already inside: the same array
    small = stage(Resize, size=20).handle(ev)
    assert (small["image"].shape, small["mode"]) == ((10, 20, 4), "RGBA")
    # premultiplied: the transparent red does not bleed into the blue next to it
    assert small["image"][5, 11, 0] < 40 and small["image"][5, 11, 3] == 255


# ---------------------------------------------------------------- Blur, Sharpen


def test_blur_smooths_noise_and_leaves_flat_colour() -> None:
    ev = event_of(noisy((64, 48)))
    out = stage(Blur, radius=3).handle(ev)
    assert out["image"].shape == ev["image"].shape
    assert out["image"].std() < ev["image"].std() / 2
    assert np.array_equal(np.asarray(image(out)), np.asarray(image(ev).filter(ImageFilter.GaussianBlur(3))))
    flat = event_of(Image.new("L", (20, 20), 90))
    assert np.all(stage(Blur, radius=5).handle(flat)["image"] == 90)


def test_blur_premultiplies_alpha() -> None:
    out = stage(Blur, radius=2).handle(event_of(with_alpha()))
    # next to the edge, the colour of what shows is blue, not a blend with transparent red
    r, _, b, alpha = out["image"][10, 21].tolist()
    assert 0 < alpha < 255 and b > 150 and r < 60


def test_sharpen_raises_the_contrast_of_an_edge() -> None:
    soft = Image.linear_gradient("L").resize((64, 64)).filter(ImageFilter.GaussianBlur(2))
    soft.paste(40, (0, 0, 32, 64))
    ev = event_of(soft.filter(ImageFilter.GaussianBlur(2)).convert("RGB"))
    out = stage(Sharpen, radius=3, percent=200, threshold=0).handle(ev)
    assert out["image"].shape == ev["image"].shape
    assert ImageStat.Stat(image(out)).stddev[0] > ImageStat.Stat(image(ev)).stddev[0]
    flat = event_of(Image.new("RGBA", (20, 20), (9, 99, 199, 255)))
    assert np.array_equal(stage(Sharpen).handle(flat)["image"], flat["image"])


# ---------------------------------------------------------------- Convert


def test_convert_between_modes() -> None:
    ev = event_of(quadrants((40, 20)), icc_profile=b"profile")
    grey = stage(Convert, mode="L").handle(ev)
    assert (grey["mode"], grey["image"].shape, grey["icc_profile"]) == ("L", (20, 40, 1), None)
    assert np.array_equal(grey["image"][:, :, 0], np.asarray(quadrants((40, 20)).convert("L")))
    rgba = stage(Convert, mode="RGBA").handle(ev)
    assert rgba["image"].shape == (20, 40, 4) and np.all(rgba["image"][:, :, 3] == 255)
    assert rgba["icc_profile"] == b"profile"  # the same colour space
    back = stage(Convert, mode="RGB").handle(grey)
    assert back["image"].shape == (20, 40, 3) and np.all(back["image"][:, :, 0] == grey["image"][:, :, 0])
    flat = stage(Convert, mode="RGB").handle(event_of(with_alpha()))
    assert flat["image"][10, 5].tolist() == [255, 255, 255]  # transparency composited on white
    assert stage(Convert, mode="RGB").handle(ev)["image"] is ev["image"]  # already RGB


# ---------------------------------------------------------------- Encode


@pytest.mark.parametrize(
    ("fmt", "mode", "written"),
    [
        ("JPEG", "RGB", "RGB"),
        ("JPEG", "L", "L"),
        ("JPEG", "RGBA", "RGB"),
        ("JPEG", "LA", "L"),
        ("PNG", "LA", "LA"),
        ("PNG", "RGBA", "RGBA"),
        ("WEBP", "L", "RGB"),
        ("WEBP", "LA", "RGBA"),
    ],
)
def test_encode_writes_a_mode_the_format_stores(fmt: str, mode: str, written: str) -> None:
    out = stage(Encode, format=fmt).handle(event_of(with_alpha().convert(mode), name="sub/a.b.png"))
    assert sorted(out) == ["data", "height", "name", "source", "width"]  # no array carried on
    suffix = images.FORMATS[fmt]
    assert (out["name"], out["width"], out["height"], out["source"]) == (f"sub/a.b{suffix}", 40, 20, "in/sub/a.b.png")
    img = decoded(out["data"])
    assert (img.format, img.size, img.mode) == (fmt, (40, 20), written)


def test_encode_png_is_lossless_and_bytes_are_repeatable() -> None:
    ev = event_of(noisy((30, 20)))
    out = stage(Encode, format="PNG").handle(ev)
    assert np.array_equal(np.asarray(decoded(out["data"])), ev["image"])
    jpeg = stage(Encode, quality=90).handle(ev)["data"]
    assert stage(Encode, quality=90).handle(dict(ev))["data"] == jpeg  # the same array, the same bytes
    assert len(stage(Encode, quality=20).handle(ev)["data"]) < len(jpeg)


def test_encode_params_and_icc() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    ev = event_of(quadrants((20, 20)), name="x.tif", icc_profile=icc)
    out = stage(Encode, format="png", suffix="_small.png", mode="L").handle(ev)
    assert out["name"] == "x_small.png" and decoded(out["data"]).mode == "L"
    assert decoded(out["data"]).info.get("icc_profile") is None  # grey output: an RGB profile is left out
    assert decoded(stage(Encode).handle(ev)["data"]).info.get("icc_profile") == icc
    with pytest.raises(ValueError, match=r"^Encode: the event needs a 'name' \(str\)"):
        stage(Encode).handle({"image": ev["image"]})


# ---------------------------------------------------------------- every stage


STAGES: list[tuple[type, dict[str, Any]]] = [
    (Resize, {"size": 10}),
    (Blur, {}),
    (Sharpen, {}),
    (Convert, {"mode": "L"}),
    (Encode, {}),
]


@pytest.mark.parametrize(("cls", "params"), STAGES)
def test_bad_events_are_refused_with_what_is_wrong(cls: type, params: dict[str, Any]) -> None:
    s = stage(cls, **params)
    who = cls.__name__
    a = np.zeros((4, 6, 3), dtype=np.uint8)
    cases: list[tuple[Any, str]] = [
        ({"path": "a.jpg"}, rf"^{who}: the event must be \{{'image': array \(height x width x channels, uint8\)"),
        ("a string", rf"^{who}: the event must be .* got str$"),
        ({"name": "a", "image": a.astype(np.float32)}, rf"^{who}: the image 'a' is an array of float32; it must be uint8"),
        ({"name": "a", "image": np.zeros((4, 6, 5), np.uint8)}, r"has shape \(4, 6, 5\); it must be height x width x"),
        ({"name": "a", "image": np.zeros((0, 6, 3), np.uint8)}, "at least 1 x 1 pixel"),
        ({"name": "a", "image": a, "mode": "L"}, "has 3 channels, which mode 'L' does not: the modes are L \\(1\\)"),
    ]
    for ev, match in cases:
        with pytest.raises(ValueError, match=match):
            s.handle(ev)


@pytest.mark.parametrize(("cls", "params"), STAGES)
def test_a_grey_2d_array_without_mode_is_an_l_image(cls: type, params: dict[str, Any]) -> None:
    a = np.full((8, 12), 100, dtype=np.uint8)
    out = stage(cls, **params).handle({"name": "g.png", "image": a})
    if cls is Encode:
        assert decoded(out["data"]).mode == "L"
    else:
        assert out["mode"] == "L" and (out["image"].ndim == 3 or out["image"] is a)  # a new array, or the same


def test_arrays_received_from_another_stage_are_read_only_and_work() -> None:
    """Through sedamp's own packing: the array arrives read-only, over its frame."""
    ev = stage(Decode).handle({"name": "q.png", "data": encoded(quadrants((400, 300)), "PNG")})
    received = wire.unpack_event(wire.pack_event(ev))
    assert not received["image"].flags.writeable and np.array_equal(received["image"], ev["image"])
    chain = [stage(Resize, size=200), stage(Blur, radius=1), stage(Sharpen), stage(Convert, mode="RGBA")]
    here, there = ev, received
    for s in chain:
        here, there = s.handle(here), wire.unpack_event(wire.pack_event(s.handle(there)))
    assert np.array_equal(here["image"], there["image"])
    assert stage(Encode).handle(here) == stage(Encode).handle(there)


def test_decode_to_write_files(tmp_path: Path) -> None:
    src = tmp_path / "in" / "turned.jpg"
    src.parent.mkdir()
    src.write_bytes(with_orientation(quadrants((600, 400)), 6, "JPEG"))
    ev = stage(Decode, root=str(tmp_path / "in")).handle({"path": str(src)})
    for s in (stage(Resize, size=300), stage(Blur, radius=0.5), stage(Encode, format="WEBP", quality=90)):
        ev = s.handle(ev)
    stage(WriteFiles, out=str(tmp_path / "out")).handle(ev)
    img = decoded((tmp_path / "out" / "turned.webp").read_bytes())
    assert img.size == (300, 200)
    assert_quadrants(img)


def test_params_are_checked_before_anything_runs() -> None:
    assert Blur.check_params(radius="1.5") == {} and stage(Blur, radius="1.5").radius == 1.5  # ${VAR} gives strings
    assert Sharpen.check_params(percent="120", threshold="0") == {}
    cases: list[tuple[type, dict[str, Any], dict[str, str]]] = [
        (Decode, {"mode": "CMYK", "root": "x"}, {"mode": "Decode: mode must be one of L, LA, RGB, RGBA, got 'CMYK'"}),
        (Decode, {"accept": ["NOPE"]}, {"accept": "Decode: accept names formats Pillow cannot open: NOPE"}),
        (Resize, {"size": 0, "fit": "fill"}, {"size": "Resize: size must be whole pixels >= 1, got 0",
                                             "fit": "Resize: fit must be one of contain, cover, exact, got 'fill'"}),
        (Blur, {"radius": 0}, {"radius": "Blur: radius must be a number of pixels > 0, got 0"}),
        (Blur, {"radius": "wide"}, {"radius": "Blur: radius must be a number of pixels > 0, got 'wide'"}),
        (Sharpen, {"radius": float("nan"), "percent": 0, "threshold": 256}, {
            "radius": "Sharpen: radius must be a number of pixels > 0, got nan",
            "percent": "Sharpen: percent must be an int from 1 to 1000, got 0",
            "threshold": "Sharpen: threshold must be an int from 0 to 255, got 256"}),
        (Convert, {"mode": "P"}, {"mode": "Convert: mode must be one of L, LA, RGB, RGBA, got 'P'"}),
        (Encode, {"format": "GIF", "mode": "RGBA"}, {"format": "Encode: format must be one of JPEG, PNG, WEBP, got 'GIF'"}),
        (Encode, {"mode": "RGBA"}, {"mode": "Encode: mode 'RGBA' cannot be written as JPEG; use one of L, RGB, CMYK"}),
        (Encode, {"quality": 0, "suffix": ""}, {"quality": "Encode: quality must be an int from 1 to 100, got 0",
                                               "suffix": "Encode: suffix must be a non-empty file-name ending such as "
                                                         "'.jpg', got ''"}),
    ]  # fmt: skip
    for cls, params, problems in cases:
        assert cls.check_params(**params) == problems, (cls, params)
        with pytest.raises(ValueError):
            stage(cls, **params)


def test_asking_for_an_array_stage_without_numpy_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import stages

    monkeypatch.setitem(sys.modules, "numpy", None)  # makes `import numpy` fail
    monkeypatch.delitem(sys.modules, "stages._image_arrays")  # as in a process that never asked for it
    monkeypatch.delattr(stages, "_image_arrays")
    assert images.Thumbnail is not None  # thumbnails need no NumPy
    with pytest.raises(ImportError) as info:
        images.Decode  # noqa: B018
    assert str(info.value) == (
        "stages.images:Decode, Resize, Blur, Sharpen, Convert and Encode need NumPy: pip install 'sedamp[arrays]'"
    )
