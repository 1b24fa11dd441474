"""Measurement helpers shared by the processes and the controller. Pure.

Latency samples travel as ``[value, weight]`` pairs (a batch's service time per event,
weighted by its events); `thin` caps how many a process sends per period and
`percentiles` summarises what the controller gathered. `dig`, `as_dict` and `is_number`
read the metrics records (possibly hand-edited or truncated) without trusting their shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# Most samples a process sends per period. One sample per batch is far below this in
# practice; the cap only bounds a pathological period (thousands of one-event batches).
MAX_SAMPLES = 2000


def thin(samples: list[tuple[float, int]], limit: int = MAX_SAMPLES) -> list[tuple[float, int]]:
    """At most `limit` samples, keeping an even spread (and every sample's weight is
    scaled so the total weight is kept)."""
    if len(samples) <= limit:
        return samples
    step = len(samples) / limit
    kept = [samples[int(i * step)] for i in range(limit)]
    scale = sum(n for _, n in samples) / max(1, sum(n for _, n in kept))
    return [(v, max(1, round(n * scale))) for v, n in kept]


def percentiles(samples: Iterable[Sequence[float]], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float] | None:
    """Weighted percentiles (nearest rank) of ``(value, weight)`` samples, as
    ``{"p50": ..., "p90": ..., "p99": ...}``; None when there is no sample."""
    pts = sorted((float(v), float(w)) for v, w in samples if w > 0)
    if not pts:
        return None
    total = sum(w for _, w in pts)
    out: dict[str, float] = {}
    for q in qs:
        rank = q / 100 * total
        acc = 0.0
        value = pts[-1][0]
        for v, w in pts:
            acc += w
            if acc >= rank:
                value = v
                break
        out[f"p{q:g}"] = round(value, 3)
    return out


def as_dict(x: Any) -> dict[str, Any]:
    """`x` if it is a dict, else an empty one."""
    return x if isinstance(x, dict) else {}


def is_number(x: Any) -> bool:
    """An int or a float, not a bool (which Python counts as an int)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None as soon as a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d
