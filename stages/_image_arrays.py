"""Image stages on arrays: ``Decode`` a file to an array of pixels, ``Resize``, ``Blur``,
``Sharpen`` or ``Convert`` the array, ``Encode`` it back to a file's bytes.

Reached as ``stages.images:Decode`` and so on (``stages.images`` imports this module
the first time one of these names is asked for, so that thumbnails need no NumPy); the
event shape and the params are documented there and in each class. Needs Pillow and
NumPy: ``pip install 'sedamp[images,arrays]'``.

Between these stages an image is a NumPy array of height x width x channels bytes
(uint8), which sedamp carries beside the event's MessagePack as a frame of its own
(``sedamp.runtime.payload``): a stage receives it read-only. So no stage here writes
into an array it was given: each works on a Pillow image made from the array and
returns a new array (``np.asarray`` of the result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

try:
    import numpy as np
except ImportError as exc:  # the optional dependency
    raise ImportError(
        "stages.images:Decode, Resize, Blur, Sharpen, Convert and Encode need NumPy: pip install 'sedamp[arrays]'"
    ) from exc
from PIL import Image, ImageFilter

from stages.images import (
    _STORABLE,
    _TRANSPOSE,
    DEFAULT_ACCEPT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    FORMATS,
    _accept,
    _box,
    _check_each,
    _convert,
    _encode,
    _fit,
    _format,
    _max_pixels,
    _mode,
    _Opened,
    _orientation,
    _plan,
    _quality,
    _relative_name,
    _resizable,
    _same_space,
    _source_of,
    _suffix,
    _with_suffix,
)

__all__ = ["MODES", "Blur", "Convert", "Decode", "Encode", "Resize", "Sharpen"]

# The modes an image array may have, and its channels (the last axis) in each.
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_MODE_OF = {n: mode for mode, n in MODES.items()}
# Filters run on alpha images with the colour premultiplied by the alpha (as Pillow's own
# resize does), so that the colour of transparent pixels does not bleed into visible ones.
_PREMULTIPLIED = {"LA": "La", "RGBA": "RGBa"}
EVENT_SHAPE = "{'image': array (height x width x channels, uint8), 'mode': str, ...} as stages.images:Decode gives"


# --------------------------------------------------------------------------- arrays and images


def _label(event: dict[str, Any]) -> str:
    name = event.get("name")
    return repr(name) if isinstance(name, str) else "of the event"


def image_of(event: Any, who: str) -> tuple[Image.Image, str]:
    """The Pillow image of an image event's array (the array is not written to), and its
    mode. ValueError saying what is wrong with the event otherwise. A 2-D array is a grey
    image; ``mode``, when the event has one, must agree with the channels."""
    a = event.get("image") if isinstance(event, dict) else None
    if not isinstance(a, np.ndarray):
        shape = sorted(event) if isinstance(event, dict) else type(event).__name__
        raise ValueError(f"{who}: the event must be {EVENT_SHAPE}, got {shape}")
    label = _label(event)
    if a.dtype != np.uint8:
        raise ValueError(
            f"{who}: the image {label} is an array of {a.dtype}; it must be uint8 (0..255): "
            "convert it first, e.g. np.clip(a, 0, 255).astype(np.uint8)"
        )
    if a.ndim == 2:
        a = a.reshape(*a.shape, 1)
    if a.ndim != 3 or a.shape[2] not in _MODE_OF or not a.shape[0] or not a.shape[1]:
        raise ValueError(
            f"{who}: the image {label} has shape {tuple(a.shape)}; it must be height x width x channels, "
            "with 1 to 4 channels (L, LA, RGB, RGBA) and at least 1 x 1 pixel"
        )
    mode = event.get("mode", _MODE_OF[a.shape[2]])
    if MODES.get(mode) != a.shape[2]:
        raise ValueError(
            f"{who}: the image {label} has {a.shape[2]} channels, which mode {mode!r} does not: "
            f"the modes are {', '.join(f'{m} ({n})' for m, n in MODES.items())}"
        )
    return Image.fromarray(a.reshape(a.shape[:2]) if a.shape[2] == 1 else a), mode


def array_of(img: Image.Image) -> Any:
    """The pixels of `img` (L, LA, RGB or RGBA) as a new height x width x channels array."""
    a = np.asarray(img)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _replaced(event: dict[str, Any], img: Image.Image, mode: str) -> dict[str, Any]:
    """`event` with its image replaced by `img` (in `mode`): a new dict, other fields kept."""
    return {**event, "image": array_of(img), "mode": mode}


def _filtered(img: Image.Image, mode: str, image_filter: ImageFilter.Filter) -> Image.Image:
    work = img.convert(_PREMULTIPLIED[mode]) if mode in _PREMULTIPLIED else img
    out = work.filter(image_filter)
    return out.convert(mode) if out.mode != mode else out


def _encode_mode(mode: str, fmt: str) -> str:
    """The mode an image in `mode` is written in as `fmt`: its own when the format stores
    it, else the nearest one it does (grey as colour, then without alpha)."""
    coloured = {"L": "RGB", "LA": "RGBA"}.get(mode, mode)
    for candidate in (mode, coloured, mode.removesuffix("A") or mode, "RGB"):
        if candidate in _STORABLE[fmt]:
            return candidate
    return "RGB"


# --------------------------------------------------------------------------- params


def _array_mode(mode: Any, who: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{who}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    return str(mode)


def _number(value: Any, who: str, name: str, low: float, what: str, *, above: bool = False) -> float:
    """A number param (a string of one is accepted, as ``${VAR}`` gives) of at least
    `low` (above it, with `above`)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (above and value == low):
        raise ValueError(f"{who}: {name} must be {what}, got {value!r}")
    return float(value)


def _whole(value: Any, who: str, name: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{who}: {name} must be an int from {low} to {high}, got {value!r}")
    return value


class _Checked:
    """What the array stages share: their params checked for ``sedamp validate``."""

    @classmethod
    def check_params(cls, **params: Any) -> dict[str, str]:
        """What is wrong with `params`, by param name (empty: nothing), with the very
        checks of ``setup``, which opens nothing. ``sedamp validate`` calls it."""
        return _check_each(cls, params)


# --------------------------------------------------------------------------- the stages


class Decode(_Checked):
    """Handler: an image file (``{"path": str, ...}``, as ``stages.files:ListFiles``
    yields) or an image in memory (``{"name": str, "data": bytes, ...}``) -> an image
    event ``{"name", "source", "image", "mode", "icc_profile"}``: the image decoded,
    turned upright by its EXIF orientation (as ``Thumbnail`` does), as an array of
    height x width x channels uint8 (channels: 1 for L, 2 for LA, 3 for RGB, 4 for RGBA).
    Other input fields are not carried over.

    Params
        mode: the array's mode: ``RGB`` (default), ``RGBA``, ``L`` (grey) or ``LA``.
            Transparency going to a mode without alpha is composited on white; palette
            images take their colours; 16-bit grey is scaled to 8 bits.
        root: as ``Thumbnail``'s: ``name`` is the path relative to `root` (subfolders
            kept, extension kept: ``<root>/2024/a.png`` -> ``2024/a.png``), else the file
            name alone.
        max_pixels, accept: as ``Thumbnail``'s (the decompression-bomb guard and the
            formats Pillow may open).

    ``icc_profile`` is the file's ICC colour profile (bytes) when the array has the same
    colour space (RGB or grey) as the file, else None; ``Encode`` writes it back.
    Multi-frame images give their first frame. An image that cannot be read raises
    ValueError naming it (``Decode: 'photos/x.jpg' is not a readable image: ...``)."""

    def setup(
        self,
        mode: str = "RGB",
        root: str | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        accept: Sequence[str] | None = DEFAULT_ACCEPT,
    ) -> None:
        who = "Decode"
        self.mode = _array_mode(mode, who)
        self.root = root
        self.max_pixels = _max_pixels(max_pixels, who)
        self.accept = _accept(accept, who)

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        source, label = _source_of(event, "Decode")
        name = _relative_name(label, self.root, "Decode")
        opened = _Opened(source, label, "Decode", self.max_pixels, self.accept)
        with opened as img:
            try:
                img.load()
                orientation = _orientation(img)
                icc = img.info.get("icc_profile")
                work = _convert(_resizable(img), self.mode)
                if orientation in _TRANSPOSE:
                    work = work.transpose(_TRANSPOSE[orientation])
                array = array_of(work)
            except Exception as exc:
                raise opened.error(exc) from exc
            keep_icc = icc if isinstance(icc, bytes) and _same_space(img.mode, self.mode) else None
        return {"name": name, "source": label, "image": array, "mode": self.mode, "icc_profile": keep_icc}


class Resize(_Checked):
    """Handler: an image event (as ``Decode`` gives) -> the same event with its image
    resized with LANCZOS (alpha premultiplied), other fields kept.

    Params
        size, fit: as ``Thumbnail``'s: a box of ``N`` or ``[width, height]`` pixels
            (default 1024), and ``contain`` (default: fit inside, keep the aspect ratio,
            never enlarge), ``cover`` (fill the box, cropping the centre) or ``exact``
            (stretch). The output size is ``target_size(width, height, size, fit)``."""

    def setup(self, size: int | str | Sequence[int] = 1024, fit: str = "contain") -> None:
        self.box = _box(size, "Resize")
        self.fit = _fit(fit, "Resize")

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        img, mode = image_of(event, "Resize")
        (w, h), crop = _plan(img.width, img.height, self.box, self.fit)
        if (w, h) == img.size and crop == (0.0, 0.0, float(img.width), float(img.height)):
            return {**event, "mode": mode}  # nothing to do: the same array goes on
        return _replaced(event, img.resize((w, h), Image.Resampling.LANCZOS, box=crop), mode)


class Blur(_Checked):
    """Handler: an image event (as ``Decode`` gives) -> the same event with its image
    blurred by a Gaussian of standard deviation `radius` pixels (default 2; > 0; Pillow's
    ``GaussianBlur``, alpha premultiplied), other fields kept."""

    def setup(self, radius: float | str = 2.0) -> None:
        self.radius = _number(radius, "Blur", "radius", 0.0, "a number of pixels > 0", above=True)

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        img, mode = image_of(event, "Blur")
        return _replaced(event, _filtered(img, mode, ImageFilter.GaussianBlur(self.radius)), mode)


class Sharpen(_Checked):
    """Handler: an image event (as ``Decode`` gives) -> the same event with its image
    sharpened by an unsharp mask (Pillow's ``UnsharpMask``, alpha premultiplied), other
    fields kept.

    Params
        radius: the blur the mask subtracts, in pixels (default 2; > 0).
        percent: how much sharper, in percent (default 150; 1 to 1000).
        threshold: the smallest difference between a pixel and its blur, in levels
            (0 to 255), that is sharpened (default 3): flat areas and noise stay as they are."""

    def setup(self, radius: float | str = 2.0, percent: int | str = 150, threshold: int | str = 3) -> None:
        who = "Sharpen"
        self.radius = _number(radius, who, "radius", 0.0, "a number of pixels > 0", above=True)
        self.percent = _whole(percent, who, "percent", 1, 1000)
        self.threshold = _whole(threshold, who, "threshold", 0, 255)

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        img, mode = image_of(event, "Sharpen")
        mask = ImageFilter.UnsharpMask(self.radius, self.percent, self.threshold)
        return _replaced(event, _filtered(img, mode, mask), mode)


class Convert(_Checked):
    """Handler: an image event (as ``Decode`` gives) -> the same event with its image in
    another mode, other fields kept.

    Params
        mode: ``L`` (grey, ITU-R 601-2 luma), ``LA``, ``RGB`` or ``RGBA``. Required.
            Transparency going to a mode without alpha is composited on white; a mode
            gaining alpha gets it opaque. ``icc_profile`` is dropped when the colour space
            changes (RGB to grey or back)."""

    def setup(self, mode: str) -> None:
        self.mode = _array_mode(mode, "Convert")

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        img, mode = image_of(event, "Convert")
        if mode == self.mode:
            return {**event, "mode": mode}
        out = _replaced(event, _convert(img, self.mode), self.mode)
        if not _same_space(mode, self.mode):
            out["icc_profile"] = None
        return out


class Encode(_Checked):
    """Handler: an image event (as ``Decode`` gives) -> ``{"name", "data", "width",
    "height", "source"}``, what ``stages.files:WriteFiles`` writes (and what
    ``Thumbnail`` returns): the image encoded, named as the input with its extension
    replaced. The array is not carried over.

    Params
        format: ``JPEG`` (default; ``JPG`` accepted), ``PNG`` or ``WEBP`` (any case).
        quality: 1..100 for JPEG and WEBP (default 85); PNG is lossless and ignores it.
        mode: the mode written; default: the image's own when the format stores it
            (PNG stores all four), else the nearest it does (JPEG: RGBA -> RGB, LA -> L;
            WEBP: L -> RGB, LA -> RGBA). Transparency dropped is composited on white.
        suffix: replaces the name's last extension; default from `format` (``.jpg``,
            ``.png``, ``.webp``). It may carry more: ``suffix: _small.jpg``.

    The event's ``icc_profile`` is written when the output has its colour space; no
    other metadata is. The same array and params give the same bytes."""

    def setup(
        self,
        format: str = "JPEG",
        quality: int | str = DEFAULT_QUALITY,
        mode: str | None = None,
        suffix: str | None = None,
    ) -> None:
        who = "Encode"
        self.format = _format(format, who)
        self.quality = _quality(quality, who)
        self.mode = _mode(mode, self.format, who)
        self.suffix = _suffix(FORMATS[self.format] if suffix is None else suffix, who)

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        img, mode = image_of(event, "Encode")
        name = event.get("name")
        if not isinstance(name, str):
            raise ValueError(f"Encode: the event needs a 'name' (str) to name the file, got {name!r}")
        out_mode = self.mode or _encode_mode(mode, self.format)
        icc = event.get("icc_profile")
        keep_icc = icc if isinstance(icc, bytes) and _same_space(mode, out_mode) else None
        data = _encode(img, self.format, self.quality, out_mode, keep_icc)
        source = event.get("source")
        return {
            "name": _with_suffix(name, self.suffix, name, "Encode"),
            "data": data,
            "width": img.width,
            "height": img.height,
            "source": source if isinstance(source, str) else name,
        }
