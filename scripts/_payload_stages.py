"""The stages of the large-payload benchmark (`bench_payloads.py`), for sedamp and its
peers alike: a source of NumPy arrays, three stages that touch each array lightly (read
a strided sample of it, as a stage that inspects an image or a table chunk would), and
a sink that checks every event arrived whole."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

STRIDE = 4096  # elements between the values a stage reads


class Arrays:
    """Source: {"n": i, "a": float64 array of `nbytes` bytes, all equal to i}."""

    def setup(self, count: int, nbytes: int) -> None:
        self.count, self.nbytes = int(count), int(nbytes)

    def total(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.count):
            yield {"n": i, "a": np.full(self.nbytes // 8, float(i))}


def look(event: dict[str, Any], field: str) -> dict[str, Any]:
    """Touch the array lightly: the sum of a strided sample of it, into `field`."""
    event[field] = float(event["a"][::STRIDE].sum())
    return event


def look1(event: dict[str, Any]) -> dict[str, Any]:
    return look(event, "s1")


def look2(event: dict[str, Any]) -> dict[str, Any]:
    return look(event, "s2")


def look3(event: dict[str, Any]) -> dict[str, Any]:
    return look(event, "s3")


class Check:
    """Sink: counts the events and the bytes that arrived, checks each array's last
    element and the samples; writes {"count", "bytes", "bad"} at teardown."""

    def setup(self, out: str) -> None:
        self.out = Path(out)
        self.count = self.bytes = self.bad = 0

    def handle(self, event: dict[str, Any]) -> None:
        a, n = event["a"], event["n"]
        samples = len(range(0, a.size, STRIDE))
        if a[-1] != n or not event["s1"] == event["s2"] == event["s3"] == n * samples:
            self.bad += 1
        self.count += 1
        self.bytes += a.nbytes

    def teardown(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": self.count, "bytes": self.bytes, "bad": self.bad}))
        os.replace(tmp, self.out)


def expected(count: int, nbytes: int) -> dict[str, int]:
    return {"count": count, "bytes": count * (nbytes // 8) * 8, "bad": 0}
