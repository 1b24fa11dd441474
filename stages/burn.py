"""The CPU benchmark workload: integer seeds, pure-Python busy loops, a checksum.

Event shapes
    ``Seeds`` (source) yields ``{"seed": int}`` for seed = 0 .. count-1.
    ``burn`` (handler): ``{"seed": int, ...}`` -> the same dict plus ``{<field>: int}``.
    ``tiny`` (handler): any event -> the same event.
    ``Collect`` (sink): ``{<field>: int, ...}`` -> ``{"count": int, "checksum": int}``
    written as JSON at the end.

The busy loop is a 31-bit linear congruential generator, ``x = (x * 1103515245 + 12345)
& 0x7FFFFFFF``, run for a given number of iterations. Stages are chained by reading the
previous stage's output as their seed (``seed_field``): since they all step the same
generator, a chain of stages with ``n1, n2, ...`` iterations ends on
``spin_from(seed, n1 + n2 + ...)``, which ``jump`` computes in O(log n) steps. So
``expected_checksum`` gives the exact result of a whole pipeline instantly, and a lost,
duplicated or skipped event (or stage) changes the checksum or the count.

Recalibrate the iteration counts of topologies/burn.yaml on another machine with
``python -m stages.burn 1 4 0.5`` (milliseconds per stage).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stages.files import atomic_write

__all__ = [
    "Collect",
    "Paced",
    "Seeds",
    "burn",
    "burn_shift",
    "calibrate",
    "expected_checksum",
    "iterations_per_ms",
    "jump",
    "spin",
    "spin_from",
    "tiny",
]

_A = 1103515245
_C = 12345
_MASK = 0x7FFFFFFF  # arithmetic modulo 2**31


def spin(n: int, seed: int = 0) -> int:
    """Exactly `n` iterations of the LCG from ``seed & 0x7FFFFFFF``; returns the final
    value, an int in [0, 2**31). Pure Python, deterministic, CPU-bound (holds the GIL)."""
    x = seed & _MASK
    a, c, mask = _A, _C, _MASK
    for _ in range(int(n)):
        x = (x * a + c) & mask
    return x


def spin_from(seed: int, n: int) -> int:
    """``spin(n, seed)``: the value `n` LCG steps after `seed`."""
    return spin(n, seed)


def _step_power(n: int) -> tuple[int, int]:
    """(A, C) such that n LCG steps map x to ``(A * x + C) & 0x7FFFFFFF``."""
    if n < 0:
        raise ValueError(f"the number of iterations must be >= 0, got {n}")
    mul, add = 1, 0  # the identity map
    base_mul, base_add = _A, _C
    while n:
        if n & 1:
            mul, add = (base_mul * mul) & _MASK, (base_mul * add + base_add) & _MASK
        base_mul, base_add = (base_mul * base_mul) & _MASK, (base_mul * base_add + base_add) & _MASK
        n >>= 1
    return mul, add


def jump(seed: int, n: int) -> int:
    """The same value as ``spin_from(seed, n)``, computed in O(log n) steps."""
    mul, add = _step_power(int(n))
    return (mul * (seed & _MASK) + add) & _MASK


def burn(event: dict[str, Any], iterations: int, field: str, seed_field: str = "seed") -> dict[str, Any]:
    """Handler: ``{<seed_field>: int, ...}`` -> a new dict, the event plus
    ``{<field>: spin_from(event[seed_field], iterations)}``.

    Params: `iterations` (the CPU cost: see ``calibrate``), `field` (where the result
    goes), `seed_field` (default ``"seed"``; name the previous burn stage's `field` to
    chain stages). Raises ValueError if the seed is missing or not an int."""
    if not isinstance(event, dict) or seed_field not in event:
        raise ValueError(f"burn: the event has no {seed_field!r} field")
    seed = event[seed_field]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"burn: field {seed_field!r} must be an int, got {type(seed).__name__}")
    return {**event, field: spin(int(iterations), seed)}


class SlowStart:
    """Handler: `burn`, by a stage whose workers take `setup_s` seconds to set up (as one
    that loads a model or a large table would): the controller's slow set-up case."""

    def setup(self, iterations: int, field: str, setup_s: float = 2.0) -> None:
        self.iterations, self.field = int(iterations), field
        time.sleep(float(setup_s))

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        return burn(event, self.iterations, self.field)


def burn_shift(
    event: dict[str, Any], first: int, second: int, at: int, field: str, seed_field: str = "seed"
) -> dict[str, Any]:
    """Handler: `burn` with `first` iterations for events whose ``"seed"`` is below `at`
    and `second` for the rest: a stage whose cost changes half way through a job (the
    controller's shift benchmark). Chained shifts whose iterations add up to the same
    total per event give the same checksum as `expected_checksum` of the totals."""
    if not isinstance(event, dict) or not isinstance(event.get("seed"), int):
        raise ValueError("burn_shift: the event has no int 'seed' field")
    return burn(event, first if event["seed"] < int(at) else second, field, seed_field)


class Paced:
    """Source: ``{"seed": i}`` at a rate that steps: `steps` is a list of
    ``[events_per_s, seconds]`` (the staircase benchmark). total() is the event count."""

    def setup(self, steps: list[list[float]]) -> None:
        self.steps = [(float(r), float(d)) for r, d in steps]

    def total(self) -> int:
        return sum(int(r * d) for r, d in self.steps)

    def __iter__(self) -> Iterator[dict[str, int]]:
        seed = 0
        for rate, duration in self.steps:
            start = time.monotonic()
            for k in range(int(rate * duration)):
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                yield {"seed": seed}
                seed += 1


def iterations_per_ms(sample_ms: float = 100.0, repeats: int = 3) -> float:
    """How many ``spin`` iterations this machine runs per millisecond: times a ``spin``
    of about `sample_ms`, `repeats` times, and keeps the fastest run (the one least
    disturbed by other work). Takes about `repeats` x `sample_ms`."""
    n = 1000
    while True:  # a rough rate first, from a run long enough to time (>= 5 ms)
        t0 = time.perf_counter()
        spin(n)
        elapsed = time.perf_counter() - t0
        if elapsed >= 0.005:
            break
        n *= 4
    probe = max(1, round(n * (sample_ms / 1000.0) / elapsed))
    best = float("inf")
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        spin(probe)
        best = min(best, time.perf_counter() - t0)
    return probe / (best * 1000.0)


def calibrate(target_ms: float, sample_ms: float = 100.0, repeats: int = 3) -> int:
    """The number of ``spin`` iterations that take about `target_ms` milliseconds of CPU
    on this machine (see ``iterations_per_ms``; takes about `repeats` x `sample_ms`)."""
    if target_ms <= 0:
        raise ValueError(f"calibrate: target_ms must be > 0, got {target_ms}")
    return max(1, round(target_ms * iterations_per_ms(sample_ms, repeats)))


class Seeds:
    """Source: ``{"seed": i}`` for i in ``range(count)``; ``total()`` is `count`.

    Param `count` (an int, or a str of one, as environment substitution gives)."""

    def setup(self, count: int | str) -> None:
        n = int(count)
        if n < 0:
            raise ValueError(f"Seeds: count must be >= 0, got {n}")
        self.count = n

    def total(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.count):
            yield {"seed": i}


def tiny(event: Any) -> Any:
    """Handler: returns the event unchanged (measures the runtime's own per-event cost)."""
    return event


class Collect:
    """Sink: counts events and sums one int field; at ``teardown()`` writes
    ``{"count": int, "checksum": int}`` as JSON to `out`, atomically (parent directories
    are created). The sum is an exact Python int, so it can be compared with
    ``expected_checksum``. Run it with one worker: each worker writes its own summary.

    Params: `out` (the file path), `field` (default ``"seed"``: the last burn stage's
    `field` in a burn pipeline). A missing or non-int field is a ValueError."""

    def setup(self, out: str | os.PathLike[str], field: str = "seed") -> None:
        self.out = Path(out)
        self.field = field
        self.count = 0
        self.checksum = 0
        self._written = False

    def handle(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict) or self.field not in event:
            raise ValueError(f"Collect: the event has no {self.field!r} field")
        value = event[self.field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"Collect: field {self.field!r} must be an int, got {value!r}")
        self.count += 1
        self.checksum += value

    def summary(self) -> dict[str, int]:
        return {"count": self.count, "checksum": self.checksum}

    def teardown(self) -> None:
        if self._written:
            return
        self._written = True
        atomic_write(self.out, (json.dumps(self.summary()) + "\n").encode("utf-8"))


def expected_checksum(count: int, iterations: int | Iterable[int] = ()) -> dict[str, int]:
    """What ``Collect`` writes after ``Seeds(count)`` went through burn stages chained by
    ``seed_field`` with these iteration counts, in order (a single int is one stage; none
    at all is Seeds -> Collect with ``field: seed``). Computed serially but instantly,
    without running the loops (see ``jump``)."""
    n = int(count)
    total = int(iterations) if isinstance(iterations, int | str) else sum(map(int, iterations))
    mul, add = _step_power(total)
    checksum = sum((mul * seed + add) & _MASK for seed in range(n))
    return {"count": n, "checksum": checksum}


def main(argv: list[str] | None = None) -> int:
    """``python -m stages.burn MS [MS ...]``: print the calibrated iterations per target."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m stages.burn MS [MS ...]", file=sys.stderr)
        return 2
    rate = iterations_per_ms(sample_ms=200.0, repeats=5)
    print(f"{rate:.0f} iterations per ms")
    for ms in args:
        print(f"{ms} ms: {max(1, round(float(ms) * rate))} iterations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
