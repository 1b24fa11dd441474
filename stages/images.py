"""Image stages, made with Pillow: thumbnails of a folder of images, and images as
arrays of pixels between stages (decode, resize, blur, sharpen, convert, encode).

Needs Pillow: ``pip install 'sedamp[images]'``. Importing this module without Pillow
raises ImportError saying exactly that. The stages on arrays need NumPy too
(``pip install 'sedamp[arrays]'``); asking for one without it raises ImportError saying
so, and ``Thumbnail`` never needs it.

Event shapes
    ``Thumbnail`` (handler) takes ``{"path": str, ...}`` (an image file, as
    ``stages.files:ListFiles`` yields) or ``{"name": str, "data": bytes, ...}`` (an image
    already in memory) and returns
    ``{"name": str, "data": bytes, "width": int, "height": int, "source": str}``: the
    output file name (relative), the encoded thumbnail, its size in pixels and the
    input's ``path`` (or ``name``). Other input fields are not carried over. The output
    is what ``stages.files:WriteFiles`` writes.

    ``Decode`` (handler) takes the same events and returns an *image event*
    ``{"name": str, "source": str, "image": array, "mode": str, "icc_profile": bytes |
    None}``: the image, turned upright by its EXIF orientation, as a NumPy array of
    height x width x channels uint8 in `mode` (``L``: 1 channel, ``LA``: 2, ``RGB``: 3,
    ``RGBA``: 4); its name (relative to `root`, extension kept) and the input's ``path``
    (or ``name``). ``Resize``, ``Blur``, ``Sharpen`` and ``Convert`` (handlers) take an
    image event and return it with a new array, other fields kept (or with the same
    array, when there is nothing to do). ``Encode`` (handler) turns one into what
    ``Thumbnail`` returns, for ``WriteFiles``. An array made elsewhere works too: a 2-D
    array is a grey image, and without ``mode`` the channels tell it. So ``ListFiles ->
    Decode -> Resize -> Sharpen -> Encode -> WriteFiles`` (topologies/photos.yaml) has
    arrays between its stages: sedamp carries each array beside the event's MessagePack
    as a frame of its own, without copying it, and the next stage receives it read-only
    (none of these stages writes into an array it is given). Each class says its params.

Thumbnail params (``setup``)
    size: the bounding box in pixels: an int ``N`` (N x N: the longer edge of a
        ``contain`` thumbnail is at most N) or ``[width, height]``. Default 256. A string
        of digits is accepted too (what ``${VAR}`` gives).
    fit: how the image meets the box.
        ``contain`` (default): keep the aspect ratio, fit inside the box, never enlarge
        (an image already inside the box keeps its size).
        ``cover``: fill the box exactly (width x height), keeping the aspect ratio by
        cropping the centre; a smaller image is enlarged.
        ``exact``: stretch to width x height (aspect ratio not kept).
    format: ``JPEG`` (default; ``JPG`` accepted), ``PNG`` or ``WEBP`` (any case).
    quality: 1..100 for JPEG and WEBP (default 85); PNG is lossless and ignores it.
    mode: the Pillow mode to convert to before encoding. Default: ``RGB`` for JPEG;
        for PNG and WEBP the image keeps its mode when the format can store it
        (PNG: 1, L, LA, I, I;16, RGB, RGBA; WEBP: RGB, RGBA), else becomes RGBA (if it
        has transparency) or RGB. Palette images (P) are made RGB/RGBA before resizing,
        so they come out that way. A mode the format cannot store is a ValueError in
        ``setup``. Transparency going to a mode without alpha (e.g. a PNG with alpha
        going to JPEG) is composited on white; 16-bit greyscale is scaled to 8 bits
        (not clipped).
    root: when given, the output name keeps the input's path relative to `root`
        (subfolders kept: ``<root>/2024/a.png`` -> ``2024/a.jpg``); an input outside
        `root` is a ValueError. When not given, the output name is the file name alone
        (``2024/a.png`` -> ``a.jpg``; two inputs with the same file name then collide).
    suffix: replaces the input name's last extension; default from `format`
        (``.jpg``, ``.png``, ``.webp``). It may carry more than an extension:
        ``suffix: _thumb.jpg`` gives ``a_thumb.jpg``. ``a.png`` and ``a.jpg`` in one
        folder would both become ``a.jpg``: ``stages.files:WriteFiles`` writes the
        first and dead-letters the second, naming both (or use `keep_ext`).
    keep_ext: keep the input's extension and add `suffix` after it (``a.png`` ->
        ``a.png.jpg``, ``a.jpg`` -> ``a.jpg.jpg``), so that inputs differing only in
        their extension get outputs of their own. Default false. A ListFiles
        ``skip_existing`` template then uses ``{relpath}`` (``out/{relpath}.jpg``).
    max_pixels: refuse an image whose width x height (read from its header, before
        decoding) is above this; default 50,000,000. The guard against decompression
        bombs: a small file that decodes to a huge image. Pillow's own warning past
        ``PIL.Image.MAX_IMAGE_PIXELS`` (~89 MP) is an error too unless `max_pixels` is
        larger; Pillow refuses images over twice that (~179 MP) whatever `max_pixels`
        says. ``None`` leaves only that last limit.
    draft: decode a JPEG at 1/2, 1/4 or 1/8 scale when the thumbnail is much smaller
        (libjpeg's DCT scaling: less decoding work and memory; from 1.5x faster for a
        grainy 4 MP file to over 3x for a smooth one, making a 256 px thumbnail), while
        keeping at least twice the thumbnail's resolution for the LANCZOS resize, so
        the result is the same to the eye and exactly the same size. Default true.
    accept: the input formats Pillow may open (Pillow's names, as in
        ``PIL.Image.OPEN``); default JPEG (camera MPO files included), PNG, WEBP, GIF,
        BMP, TIFF. A file of another format (say an EPS renamed ``.jpg``, which Pillow
        would hand to Ghostscript) is refused as not a readable image. ``None``
        accepts every format Pillow knows.

What a thumbnail is, exactly
    The image is opened, its EXIF orientation applied (as ``ImageOps.exif_transpose``:
    a photo taken with the camera turned comes out upright, and the orientation tag is
    not written to the output), resized with LANCZOS, converted to the output mode and
    encoded. No metadata is copied except the ICC colour profile, and only when the
    output has the same colour space (RGB or grey) as the input. Multi-frame images
    (GIF, TIFF pages) give their first frame. The output size, for an upright image of
    W x H and a box of w x h:
        contain: W x H if W <= w and H <= h; else, if W * h >= H * w, w x round(H * w / W),
        otherwise round(W * h / H) x h (half rounds up, at least 1 px).
        cover and exact: w x h.

Errors
    A file that cannot be read, is not an image of an accepted format, is corrupt or
    truncated, or is too large raises ValueError naming it
    (``Thumbnail: 'photos/broken.jpg' is not a readable image: <reason>``), so the
    runtime writes the event to the dead-letter file with that message and carries on.
    Bad params raise ValueError in ``setup``, naming the param; ``sedamp validate`` (and
    ``sedamp run``, before it starts anything) refuses them already, through
    ``Thumbnail.check_params``.

Functions (usable without sedamp)
    ``open_image(source, name=None, *, max_pixels=..., accept=...)`` -> a loaded
        ``PIL.Image.Image`` with its EXIF orientation applied; `source` is a path or the
        file's bytes, `name` what error messages call it.
    ``target_size(width, height, size, fit)`` -> ``(width, height)`` of the thumbnail.
    ``resize(img, size, fit="contain")`` -> a new image (`img` is left as it is).
    ``encode(img, format="JPEG", quality=85, mode=None)`` -> bytes.
    ``make_thumbnail(source, name=None, *, size, fit, format, quality, mode,
        max_pixels, draft, accept)`` -> ``Thumb(data, width, height)``: all of the above
        as ``Thumbnail`` does it, with its params and defaults (draft decoding included;
        naming is ``thumbnail_name``'s job).
    ``thumbnail_name(source, root=None, suffix=".jpg", keep_ext=False)`` -> the output name.
    They are meant for one thread per process, as sedamp's workers call them: opening an
    image sets warning filters for a moment (``warnings.catch_warnings``, to turn
    Pillow's decompression-bomb warning into an error), and Python shares those filters
    between the threads of a process.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import posixpath
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

try:
    from PIL import Image, ImageOps, UnidentifiedImageError
except ImportError as exc:  # the optional dependency
    raise ImportError("stages.images needs Pillow: pip install 'sedamp[images]'") from exc

if TYPE_CHECKING:  # imported at run time by __getattr__, when first asked for
    from stages._image_arrays import Blur, Convert, Decode, Encode, Resize, Sharpen

__all__ = [
    "DEFAULT_ACCEPT",
    "DEFAULT_MAX_PIXELS",
    "FITS",
    "FORMATS",
    "Blur",
    "Convert",
    "Decode",
    "Encode",
    "Resize",
    "Sharpen",
    "Thumb",
    "Thumbnail",
    "encode",
    "make_thumbnail",
    "open_image",
    "resize",
    "target_size",
    "thumbnail_name",
]

FITS = ("contain", "cover", "exact")
# Output formats and the suffix each gives by default.
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_FORMAT_ALIASES = {"JPG": "JPEG"}
# The modes each output format stores as they are.
_STORABLE = {
    "JPEG": ("L", "RGB", "CMYK"),
    "PNG": ("1", "L", "LA", "I;16", "RGB", "RGBA"),  # not "I": Pillow cannot write 32-bit grey PNG
    "WEBP": ("RGB", "RGBA"),
}
DEFAULT_ACCEPT = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# The plugins of the default formats beyond those Pillow loads first (`Image.preinit`).
# Loading only these takes ~20 ms where every plugin (`Image.init`) takes ~45 ms, paid
# where the topology is checked and again in every worker; any other name still loads
# them all before it is judged.
_PLUGINS = {"WEBP": "PIL.WebPImagePlugin", "TIFF": "PIL.TiffImagePlugin"}
# 50 MP: any camera up to full-frame 45 MP passes; a small file decoding to more is
# refused before a pixel is decoded. A 50 MP RGB image takes 150 MB once decoded.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_SIZE = 256
DEFAULT_QUALITY = 85
# A JPEG is decoded at a reduced scale only as far as leaves this many decoded pixels per
# thumbnail pixel on each axis: LANCZOS from 2x is indistinguishable from a full decode
# (Pillow's own Image.thumbnail uses the same gap), at a fraction of the decoding time.
DRAFT_GAP = 2.0

_ORIENTATION_KEY = 0x0112  # EXIF Orientation
# What ImageOps.exif_transpose does for each EXIF orientation (1 = upright).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_GREY = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_RGB = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"})

Size = tuple[int, int]
Box = tuple[float, float, float, float]

# The stages on arrays, in stages._image_arrays: imported when first asked for, so that
# this module (and Thumbnail) needs no NumPy.
_ARRAY_STAGES = frozenset({"Blur", "Convert", "Decode", "Encode", "Resize", "Sharpen"})


def __getattr__(name: str) -> Any:
    if name in _ARRAY_STAGES:
        from stages import _image_arrays

        return getattr(_image_arrays, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Thumb:
    """An encoded thumbnail and its size in pixels."""

    data: bytes
    width: int
    height: int


# --------------------------------------------------------------------------- params


def _box(size: Any, who: str) -> Size:
    """`size` (int, digit string or [w, h]) as a (width, height) box."""
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    if isinstance(size, int) and not isinstance(size, bool):
        pair: Sequence[Any] = (size, size)
    elif isinstance(size, list | tuple) and len(size) == 2:
        pair = size
    else:
        raise ValueError(f"{who}: size must be a number of pixels or [width, height], got {size!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{who}: size must be whole pixels >= 1, got {size!r}")
    return int(pair[0]), int(pair[1])


def _fit(fit: Any, who: str) -> str:
    if fit not in FITS:
        raise ValueError(f"{who}: fit must be one of {', '.join(FITS)}, got {fit!r}")
    return str(fit)


def _format(fmt: Any, who: str) -> str:
    name = str(fmt).upper() if isinstance(fmt, str) else ""
    name = _FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"{who}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if name == "WEBP":
        from PIL import features

        if not features.check("webp"):
            raise ValueError(f"{who}: this Pillow was built without WEBP support; use format JPEG or PNG")
    return name


def _quality(quality: Any, who: str) -> int:
    if isinstance(quality, str) and quality.strip().isdigit():
        quality = int(quality)
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise ValueError(f"{who}: quality must be an int from 1 to 100, got {quality!r}")
    return quality


def _mode(mode: Any, fmt: str, who: str) -> str | None:
    if mode is None:
        return None
    if mode not in _STORABLE[fmt]:
        raise ValueError(f"{who}: mode {mode!r} cannot be written as {fmt}; use one of {', '.join(_STORABLE[fmt])}")
    return str(mode)


def _max_pixels(value: Any, who: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{who}: max_pixels must be an int >= 1 (or null for Pillow's own limit), got {value!r}")
    return value


def _load_plugins(names: Sequence[str]) -> None:
    """Make Pillow know the formats `names` if it can: the common plugins, the named
    ones among `_PLUGINS`, and every plugin only if a name is still unknown."""
    Image.preinit()
    for name in names:
        if name not in Image.OPEN and name in _PLUGINS:
            importlib.import_module(_PLUGINS[name])
    if any(name not in Image.OPEN for name in names):
        Image.init()


def _accept(value: Any, who: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{who}: accept must be a list of Pillow format names (e.g. [JPEG, PNG]), got {value!r}")
    names = tuple(v.upper() for v in value)
    _load_plugins(names)
    unknown = [v for v in names if v not in Image.OPEN]
    if unknown:
        raise ValueError(f"{who}: accept names formats Pillow cannot open: {', '.join(unknown)}")
    return names


def _flag(value: Any, name: str, who: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{who}: {name} must be true or false, got {value!r}")
    return value


def _suffix(suffix: Any, who: str) -> str:
    if not isinstance(suffix, str) or not suffix or any(c in suffix for c in "/\\\x00"):
        raise ValueError(f"{who}: suffix must be a non-empty file-name ending such as '.jpg', got {suffix!r}")
    return suffix


# --------------------------------------------------------------------------- geometry


def target_size(width: int, height: int, size: int | Sequence[int], fit: str = "contain") -> Size:
    """The size of the thumbnail of an upright `width` x `height` image (see the module
    docstring for the exact rule)."""
    return _plan(width, height, _box(size, "target_size"), _fit(fit, "target_size"))[0]


def _plan(width: int, height: int, box: Size, fit: str) -> tuple[Size, Box]:
    """The output size and the region of the source it shows (floats, source pixels)."""
    bw, bh = box
    full: Box = (0.0, 0.0, float(width), float(height))
    if fit == "exact":
        return (bw, bh), full
    if fit == "cover":
        if width * bh > height * bw:  # wider than the box: crop the sides
            crop_w = height * bw / bh
            x0 = (width - crop_w) / 2
            return (bw, bh), (x0, 0.0, x0 + crop_w, float(height))
        if width * bh < height * bw:  # taller: crop top and bottom
            crop_h = width * bh / bw
            y0 = (height - crop_h) / 2
            return (bw, bh), (0.0, y0, float(width), y0 + crop_h)
        return (bw, bh), full
    if width <= bw and height <= bh:  # contain never enlarges
        return (width, height), full
    if width * bh >= height * bw:  # the width meets the box
        return (bw, max(1, (2 * height * bw + width) // (2 * width))), full
    return (max(1, (2 * width * bh + height) // (2 * height)), bh), full


# --------------------------------------------------------------------------- modes


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def _resizable(img: Image.Image) -> Image.Image:
    """Palette and 1-bit images in a mode LANCZOS works on (Pillow resizes those with
    NEAREST otherwise)."""
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if _has_alpha(img) else "RGB")
    if img.mode == "1":
        return img.convert("L")
    return img


def _default_mode(img: Image.Image, fmt: str) -> str:
    if fmt == "JPEG":
        return "RGB"
    if img.mode in _STORABLE[fmt]:
        return img.mode
    return "RGBA" if _has_alpha(img) else "RGB"


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """`img` in `mode`: transparency dropped by compositing on white, 16-bit grey scaled
    to 8 bits."""
    if img.mode == mode:
        return img
    if img.mode in _SIXTEEN_BIT and mode not in _SIXTEEN_BIT:
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
        if img.mode == mode:
            return img
    if _has_alpha(img) and mode not in ("RGBA", "LA"):
        flat = Image.new("RGBA", img.size, (255, 255, 255, 255))
        flat.alpha_composite(img.convert("RGBA"))
        img = flat.convert("RGB")
        if img.mode == mode:
            return img
    return img.convert(mode)


def _same_space(a: str, b: str) -> bool:
    return (a in _RGB and b in _RGB) or (a in _GREY and b in _GREY) or a == b


# --------------------------------------------------------------------------- the steps


def _unreadable(who: str, name: str, exc: BaseException) -> ValueError:
    reason = str(exc) or type(exc).__name__
    return ValueError(f"{who}: {name!r} is not a readable image: {reason}")


def _name_of(source: Any, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return os.fspath(source)


class _Opened:
    """An image file opened for reading (header only), closed on exit. Every failure,
    whatever Pillow raises, is a ValueError naming the file."""

    def __init__(self, source: Any, name: str, who: str, max_pixels: int | None, accept: Sequence[str] | None) -> None:
        self.source = source
        self.name = name
        self.who = who
        self.max_pixels = max_pixels
        self.accept = list(accept) if accept is not None else None
        self.file: IO[bytes] | None = None
        self.warnings = warnings.catch_warnings()

    def __enter__(self) -> Image.Image:
        if isinstance(self.source, bytes | bytearray | memoryview):
            fp: IO[bytes] = io.BytesIO(bytes(self.source))
        else:
            try:
                fp = self.file = open(self.source, "rb")  # closed in __exit__
            except OSError as exc:
                raise ValueError(f"{self.who}: cannot read {self.name!r}: {exc.strerror or exc}") from exc
        self.warnings.__enter__()
        # Pillow warns past MAX_IMAGE_PIXELS: an error here, unless max_pixels allows more.
        limit = Image.MAX_IMAGE_PIXELS
        if self.max_pixels is None or (limit is not None and self.max_pixels > limit):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        else:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp, formats=self.accept)
        except BaseException as exc:
            self.__exit__(None, None, None)
            if not isinstance(exc, Exception):
                raise
            raise self.error(exc) from exc
        w, h = img.size
        if self.max_pixels is not None and w * h > self.max_pixels:
            self.__exit__(None, None, None)
            raise ValueError(
                f"{self.who}: {self.name!r} is not a readable image: {w} x {h} = {w * h:,} pixels is over "
                f"max_pixels ({self.max_pixels:,}), refused as a possible decompression bomb "
                "(raise max_pixels to accept it)"
            )
        return img

    def error(self, exc: Exception) -> ValueError:
        if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
            return ValueError(
                f"{self.who}: {self.name!r} is not a readable image: refused as a possible decompression bomb: {exc}"
            )
        if isinstance(exc, UnidentifiedImageError):  # its message shows a file object, not the name
            formats = ", ".join(self.accept) if self.accept is not None else "any Pillow opens"
            return ValueError(
                f"{self.who}: {self.name!r} is not a readable image: not an image in an accepted format ({formats})"
            )
        return _unreadable(self.who, self.name, exc)

    def __exit__(self, *exc_info: object) -> None:
        self.warnings.__exit__(None, None, None)
        if self.file is not None:
            self.file.close()
            self.file = None


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_KEY, 1)
    except Exception:  # a broken EXIF block: treat the image as upright
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def open_image(
    source: str | os.PathLike[str] | bytes,
    name: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    accept: Sequence[str] | None = DEFAULT_ACCEPT,
) -> Image.Image:
    """The image at path `source` (or encoded in the bytes `source`), decoded, with its
    EXIF orientation applied (``ImageOps.exif_transpose``). `name` is what an error
    calls it (default: the path, or ``<bytes>``). ValueError naming it if it cannot be
    read, is not an image of an `accept` format, or is over `max_pixels`."""
    who = "open_image"
    label = _name_of(source, name)
    opened = _Opened(source, label, who, _max_pixels(max_pixels, who), _accept(accept, who))
    with opened as img:
        try:
            img.load()
            out = ImageOps.exif_transpose(img)
        except Exception as exc:
            raise opened.error(exc) from exc
    return out


def resize(img: Image.Image, size: int | Sequence[int], fit: str = "contain") -> Image.Image:
    """`img` resized to `size` by `fit` (see the module docstring) with LANCZOS; a new
    image (a copy when no resizing is needed). Palette and 1-bit images come back RGB(A)
    and L."""
    who = "resize"
    (w, h), crop = _plan(img.width, img.height, _box(size, who), _fit(fit, who))
    src = _resizable(img)
    if (w, h) == img.size and crop == (0.0, 0.0, float(img.width), float(img.height)):
        return src.copy() if src is img else src
    return src.resize((w, h), Image.Resampling.LANCZOS, box=crop)


def encode(img: Image.Image, format: str = "JPEG", quality: int = DEFAULT_QUALITY, mode: str | None = None) -> bytes:
    """`img` encoded as `format` (JPEG, PNG or WEBP) at `quality` (JPEG/WEBP), first
    converted to `mode` (default: RGB for JPEG; for PNG/WEBP its own mode if the format
    stores it, else RGB or RGBA). Transparency going to a mode without alpha is
    composited on white. ValueError for a bad format, quality or mode."""
    who = "encode"
    fmt = _format(format, who)
    return _encode(img, fmt, _quality(quality, who), _mode(mode, fmt, who), icc=None)


def _encode(img: Image.Image, fmt: str, quality: int, mode: str | None, icc: bytes | None) -> bytes:
    out = _convert(img, mode or _default_mode(img, fmt))
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if icc:
        options["icc_profile"] = icc
    buf = io.BytesIO()
    out.save(buf, fmt, **options)
    return buf.getvalue()


def make_thumbnail(
    source: str | os.PathLike[str] | bytes,
    name: str | None = None,
    *,
    size: int | Sequence[int] = DEFAULT_SIZE,
    fit: str = "contain",
    format: str = "JPEG",
    quality: int = DEFAULT_QUALITY,
    mode: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft: bool = True,
    accept: Sequence[str] | None = DEFAULT_ACCEPT,
) -> Thumb:
    """The thumbnail of the image at path `source` (or in the bytes `source`), exactly as
    ``Thumbnail`` makes it: the same params, the same errors (ValueError naming `name`,
    default the path)."""
    who = "make_thumbnail"
    fmt = _format(format, who)
    return _thumbnail(
        source,
        _name_of(source, name),
        who,
        _box(size, who),
        _fit(fit, who),
        fmt,
        _quality(quality, who),
        _mode(mode, fmt, who),
        _max_pixels(max_pixels, who),
        bool(draft),
        _accept(accept, who),
    )


def _thumbnail(
    source: Any,
    name: str,
    who: str,
    box: Size,
    fit: str,
    fmt: str,
    quality: int,
    mode: str | None,
    max_pixels: int | None,
    draft: bool,
    accept: Sequence[str] | None,
) -> Thumb:
    """Resize in the stored orientation, then turn the small result upright: the crop of
    ``cover`` is centred, so it is the same region either way, and only the thumbnail's
    pixels are transposed."""
    opened = _Opened(source, name, who, max_pixels, accept)
    with opened as img:
        try:
            stored_w, stored_h = img.size
            is_jpeg = img.format in ("JPEG", "MPO")
            if not is_jpeg:
                img.load()  # some formats (PNG) carry their EXIF after the pixels
            orientation = _orientation(img)  # a JPEG's is in its header: read before decoding
            swap = orientation in _SWAPS_AXES
            (out_w, out_h), crop = _plan(stored_h if swap else stored_w, stored_w if swap else stored_h, box, fit)
            out_s = (out_h, out_w) if swap else (out_w, out_h)
            crop_s = (crop[1], crop[0], crop[3], crop[2]) if swap else crop
            scale = 1.0
            if draft and is_jpeg:
                # The smallest decode that still leaves DRAFT_GAP source pixels per output pixel.
                need = (
                    max(1, math.ceil(DRAFT_GAP * out_s[0] * stored_w / (crop_s[2] - crop_s[0]))),
                    max(1, math.ceil(DRAFT_GAP * out_s[1] * stored_h / (crop_s[3] - crop_s[1]))),
                )
                if need[0] * 2 <= stored_w and need[1] * 2 <= stored_h:
                    drafted = img.draft(None, need)
                    if drafted is not None:
                        scale = drafted[1][2] / stored_w
                img.load()
            source_mode = img.mode
            icc = img.info.get("icc_profile")
            work = _resizable(img)
            region: Box = (crop_s[0] * scale, crop_s[1] * scale, crop_s[2] * scale, crop_s[3] * scale)
            if out_s != work.size or region != (0.0, 0.0, float(work.width), float(work.height)):
                work = work.resize(out_s, Image.Resampling.LANCZOS, box=region)
            if orientation in _TRANSPOSE:
                work = work.transpose(_TRANSPOSE[orientation])
            out_mode = mode or _default_mode(work, fmt)
            keep_icc = icc if isinstance(icc, bytes) and _same_space(source_mode, out_mode) else None
            data = _encode(work, fmt, quality, out_mode, keep_icc)
        except Exception as exc:
            raise opened.error(exc) from exc
    return Thumb(data, work.width, work.height)


def thumbnail_name(
    source: str, root: str | os.PathLike[str] | None = None, suffix: str = ".jpg", keep_ext: bool = False
) -> str:
    """The output name of the thumbnail of `source` (a path or an image's name): its path
    relative to `root` (``/`` separated), or its file name alone without `root`, with the
    last extension replaced by `suffix` (with `keep_ext`, `suffix` added after it).
    ValueError if `source` is not under `root`."""
    return _with_suffix(_relative_name(source, root, "Thumbnail"), suffix, source, "Thumbnail", keep_ext)


def _relative_name(source: str, root: str | os.PathLike[str] | None, who: str) -> str:
    """`source`'s path relative to `root` (``/`` separated), or its file name alone."""
    if root is None:
        return os.path.basename(source)
    rel = os.path.relpath(source, root)
    parts = rel.split(os.sep)
    if os.path.isabs(rel) or ".." in parts or rel == os.curdir:
        raise ValueError(f"{who}: {source!r} is not under root {os.fspath(root)!r}")
    return "/".join(parts)


def _with_suffix(rel: str, suffix: str, source: str, who: str, keep_ext: bool = False) -> str:
    """`rel` with its last extension replaced by `suffix` (with `keep_ext`: kept, and
    `suffix` added after it)."""
    stem = rel if keep_ext else posixpath.splitext(rel)[0]
    if not stem or stem.endswith("/"):
        raise ValueError(f"{who}: {source!r} does not name a file")
    return stem + suffix


def _source_of(event: Any, who: str) -> tuple[Any, str]:
    """What to decode from an image event, and what to call it: ``{"path": str, ...}``
    gives the path, ``{"name": str, "data": bytes, ...}`` the bytes."""
    if isinstance(event, dict) and isinstance(event.get("path"), str):
        return event["path"], event["path"]
    if isinstance(event, dict) and isinstance(event.get("name"), str) and isinstance(event.get("data"), bytes):
        return event["data"], event["name"]
    shape = sorted(event) if isinstance(event, dict) else type(event).__name__
    raise ValueError(
        f"{who}: the event must be {{'path': str, ...}} or {{'name': str, 'data': bytes, ...}}, got {shape}"
    )


def _check_each(cls: type, params: dict[str, Any]) -> dict[str, str]:
    """What is wrong with `params`, by param name (empty: nothing): each param given
    alone to ``cls().setup`` (mode with its format, when both are given), so the checks
    are the very ones of ``setup``, which must open nothing. What ``check_params`` of the
    image stages returns, for ``sedamp validate``."""
    problems: dict[str, str] = {}
    for name in sorted(params, key=lambda n: n == "mode"):  # mode after format
        one = {name: params[name]}
        if name == "mode" and "format" in params:
            if "format" in problems:
                continue
            one["format"] = params["format"]
        try:
            cls().setup(**one)
        except ValueError as exc:
            problems[name] = str(exc)
    return problems


# --------------------------------------------------------------------------- the stage


class Thumbnail:
    """Handler: an image file (``{"path": str, ...}``) or an image in memory
    (``{"name": str, "data": bytes, ...}``) -> ``{"name", "data", "width", "height",
    "source"}``, its thumbnail, ready for ``stages.files:WriteFiles``. Params and rules:
    see the module docstring. A corrupt, unreadable or too large image raises ValueError
    naming the file (the event goes to the dead-letter file; the run carries on)."""

    def setup(
        self,
        size: int | str | Sequence[int] = DEFAULT_SIZE,
        fit: str = "contain",
        format: str = "JPEG",
        quality: int = DEFAULT_QUALITY,
        mode: str | None = None,
        root: str | os.PathLike[str] | None = None,
        suffix: str | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        draft: bool = True,
        accept: Sequence[str] | None = DEFAULT_ACCEPT,
        keep_ext: bool = False,
    ) -> None:
        who = "Thumbnail"
        self.box = _box(size, who)
        self.fit = _fit(fit, who)
        self.format = _format(format, who)
        self.quality = _quality(quality, who)
        self.mode = _mode(mode, self.format, who)
        self.root = os.fspath(root) if root is not None else None
        self.suffix = _suffix(FORMATS[self.format] if suffix is None else suffix, who)
        self.max_pixels = _max_pixels(max_pixels, who)
        self.draft = _flag(draft, "draft", who)
        self.accept = _accept(accept, who)
        self.keep_ext = _flag(keep_ext, "keep_ext", who)

    @classmethod
    def check_params(cls, **params: Any) -> dict[str, str]:
        """What is wrong with `params`, by param name (empty: nothing): each param set
        up alone (mode with its format), with the very checks of ``setup``, which opens
        nothing. ``sedamp validate`` calls it."""
        return _check_each(cls, params)

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        source, label = _source_of(event, "Thumbnail")
        out_name = thumbnail_name(label, self.root, self.suffix, self.keep_ext)
        thumb = _thumbnail(
            source,
            label,
            "Thumbnail",
            self.box,
            self.fit,
            self.format,
            self.quality,
            self.mode,
            self.max_pixels,
            self.draft,
            self.accept,
        )
        return {"name": out_name, "data": thumb.data, "width": thumb.width, "height": thumb.height, "source": label}
