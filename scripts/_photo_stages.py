"""The photo benchmark's own pieces (scripts/bench_photos.py): the sink sedamp runs, and
the Pool peer as its own program.

    python scripts/_photo_stages.py DATA OUT RADIUS QUALITY

runs the peer: the photos under DATA listed as the topology lists them
(``stages.files:ListFiles``), then ``multiprocessing.Pool(cores).imap`` of one function
doing ``Decode -> Blur -> Encode`` per photo (the same stage classes and params sedamp
runs), chunks of one photo; the encoded bytes come back to this process, which digests
them as ``Digest`` does and writes ``{"count", "digest"}`` to OUT.

Imports only the stdlib, sedamp's stages and NumPy/Pillow (through them).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from stages.files import ListFiles, atomic_write
from stages.images import Blur, Decode, Encode

PATTERN = "*.jpg"


class Digest:
    """Sink: the SHA-256 of each encoded photo by name; at ``teardown()`` writes
    ``{"count": n, "digest": hex}`` (one digest over the names and hashes, in name
    order, so the order of arrival does not matter) to `out` as JSON. One worker."""

    def setup(self, out: str) -> None:
        self.out = out
        self.hashes: dict[str, str] = {}

    def handle(self, event: dict[str, Any]) -> None:
        self.hashes[event["name"]] = hashlib.sha256(event["data"]).hexdigest()

    def result(self) -> dict[str, Any]:
        whole = hashlib.sha256()
        for name in sorted(self.hashes):
            whole.update(f"{name}\0{self.hashes[name]}\n".encode())
        return {"count": len(self.hashes), "digest": whole.hexdigest()}

    def teardown(self) -> None:
        atomic_write(self.out, json.dumps(self.result()).encode())


def stages(radius: float, quality: int) -> list[Any]:
    """The three stages, set up with the params the benchmark's topology gives them."""
    decode, blur, encode = Decode(), Blur(), Encode()
    decode.setup(mode="RGB")
    blur.setup(radius=radius)
    encode.setup(format="JPEG", quality=quality)
    return [decode, blur, encode]


_CHAIN: list[Any] = []


def _init(radius: float, quality: int) -> None:
    _CHAIN[:] = stages(radius, quality)


def fused(event: dict[str, Any]) -> dict[str, Any]:
    """Decode -> Blur -> Encode of one photo, in this process."""
    for stage in _CHAIN:
        event = stage.handle(event)
    return event


def main(data: str, out: str, radius: float, quality: int) -> None:
    import multiprocessing

    listing = ListFiles()
    listing.setup(root=data, pattern=PATTERN)
    sink = Digest()
    sink.setup(out)
    with multiprocessing.Pool(len(os.sched_getaffinity(0)), _init, (radius, quality)) as pool:
        for event in pool.imap(fused, listing, chunksize=1):
            sink.handle(event)
    sink.teardown()


if __name__ == "__main__":
    main(sys.argv[1], str(Path(sys.argv[2])), float(sys.argv[3]), int(sys.argv[4]))
