"""Stages that pass NumPy arrays (integration tests of large payloads)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


class Arrays:
    """Source: {"n": i, "a": an array of `nbytes` bytes, all equal to i} for i < count."""

    def setup(self, count: int, nbytes: int, dtype: str = "float64") -> None:
        self.count, self.nbytes, self.dtype = int(count), int(nbytes), np.dtype(dtype)

    def total(self) -> int:
        return self.count

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(self.count):
            yield {"n": i, "a": np.full(self.nbytes // self.dtype.itemsize, i, dtype=self.dtype)}


def touch(event: dict[str, Any], fail_modulo: int = 0, delay_s: float = 0.0) -> dict[str, Any]:
    """A new array, one more than the input; its first bytes as `head` (bytes)."""
    if fail_modulo and event["n"] % fail_modulo == 0:
        raise ValueError(f"n={event['n']} fails on purpose")
    if delay_s:
        import time

        time.sleep(delay_s)
    a = event["a"]
    return {"n": event["n"], "a": a + 1, "head": a[:16].tobytes(), "was_writeable": bool(a.flags.writeable)}


class Frames:
    """A generator handler: `count` outputs per event, each a new array of `nbytes`
    (frames of a video, records of a file). At teardown, writes its peak memory (MiB,
    over its memory after setup) to `report/<pid>`."""

    def setup(self, count: int, nbytes: int, report: str) -> None:
        import resource

        self.count, self.nbytes, self.report = int(count), int(nbytes), Path(report)
        self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def handle(self, event: dict[str, Any]):  # type: ignore[no-untyped-def]
        for i in range(self.count):
            yield {"n": event["n"], "i": i, "a": np.full(self.nbytes // 8, float(i))}

    def teardown(self) -> None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (self.report / str(os.getpid())).write_text(json.dumps({"base": self.base, "peak": peak}))


def once(event: dict[str, Any], die_at: int, fail_at: int, marker_dir: str) -> dict[str, Any]:
    """Passes `touch`'s output on, but SIGKILLs its worker the first time it sees event
    `die_at`, and raises the first time it sees `fail_at` (then the retry passes)."""
    import signal

    for n, act in ((die_at, "die"), (fail_at, "fail")):
        if event["n"] != n:
            continue
        try:
            os.close(os.open(os.path.join(marker_dir, act), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        if act == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"n={n} fails once")
    return touch(event)


def kill_at(event: dict[str, Any], n: int) -> dict[str, Any]:
    """`touch`, but SIGKILLs its worker whenever it is handed event `n` (a poison event)."""
    if event["n"] == n:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return touch(event)


def reshape(event: dict[str, Any]) -> dict[str, Any]:
    """The array as 2-D, strided (a transposed view): it must be sent in C order."""
    a = event["a"]
    side = int(len(a) ** 0.5)
    event["a"] = a[: side * side].reshape(side, side).T
    return event


class Digest:
    """Sink: one JSON line per event: n, shape, dtype, sum, head length, at teardown."""

    def setup(self, out: str) -> None:
        self.out = Path(out)
        self.rows: list[dict[str, Any]] = []

    def handle(self, event: dict[str, Any]) -> None:
        a = event["a"]
        self.rows.append(
            {
                "n": event["n"],
                "i": event.get("i"),
                "shape": list(a.shape),
                "dtype": a.dtype.str,
                "sum": float(a.sum()),
                "corner": float(a.flat[min(1, a.size - 1)]) if a.size else None,
                "head": len(event.get("head", b"")),
                "writeable": bool(a.flags.writeable),
                "was_writeable": event.get("was_writeable"),
            }
        )

    def teardown(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        rows = sorted(self.rows, key=lambda r: (r["n"], r["i"] or 0))
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.out)


class SaveArrays:
    """Sink: each event's array to ``<out>/<n>.npy``, whole once handle() returns (a
    temporary file moved into place), slowly (`delay_s` an event): resumable."""

    resumable = True

    def setup(self, out: str, delay_s: float = 0.0) -> None:
        self.out, self.delay_s = Path(out), float(delay_s)
        self.out.mkdir(parents=True, exist_ok=True)

    def handle(self, event: dict[str, Any]) -> None:
        import time

        time.sleep(self.delay_s)
        path = self.out / f"{event['n']:04d}.npy"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.save(f, event["a"])
        os.replace(tmp, path)


class KeepArrays:
    """Sink: keeps every array it is handed as it came (no copy), and only at `finish()`
    writes one JSON line per event: n and the sum of its array then. An array over a
    shared block that was freed and written again meanwhile would sum wrong."""

    def setup(self, out: str) -> None:
        self.out = Path(out)
        self.kept: list[tuple[int, Any]] = []

    def handle(self, event: dict[str, Any]) -> None:
        self.kept.append((event["n"], event["a"]))

    def finish(self) -> None:
        rows = [{"n": n, "sum": float(a.sum()), "size": int(a.size)} for n, a in sorted(self.kept, key=lambda x: x[0])]
        self.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
