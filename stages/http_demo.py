"""The request handlers of ``topologies/http-service.yaml``: a cheap endpoint, a
CPU-bound one (~5 ms of pure Python) and an image thumbnailer (Pillow)."""

from __future__ import annotations

import io
import os
from typing import Any

from stages.burn import calibrate, spin

__all__ = ["hello", "thumbnail", "work"]


def hello(request: dict[str, Any]) -> str:
    return "hello\n"


# HTTP_DEMO_WORK_ITERATIONS fixes the work per request (a benchmark sets it once for every
# system it compares); otherwise it is measured when the module is imported (~0.3 s, once
# per process). Measured on a busy machine, it comes out low: the work gets cheaper.
ITERATIONS_5MS = int(os.environ.get("HTTP_DEMO_WORK_ITERATIONS") or 0) or calibrate(5.0)


def work(request: dict[str, Any]) -> dict[str, Any]:
    """~5 ms of pure-Python CPU work per request."""
    seed = len(request.get("query", ""))
    return {"status": 200, "body": {"result": spin(ITERATIONS_5MS, seed)}}


def thumbnail(request: dict[str, Any], size: int = 128) -> dict[str, Any]:
    """POST an image; get a JPEG thumbnail (EXIF orientation respected) or a 400."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(request["body"])) as original:
            im = ImageOps.exif_transpose(original)
            im.thumbnail((size, size))
            out = io.BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=85)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return {"status": 400, "body": f"not an image: {type(exc).__name__}\n"}
    return {"status": 200, "headers": {"content-type": "image/jpeg"}, "body": out.getvalue()}
