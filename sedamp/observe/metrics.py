"""Measurement helpers shared by the processes and the controller. Pure.

Latency samples travel as ``[value, weight]`` pairs (a batch's service time per event,
weighted by its events); `thin` caps how many a process sends per period and
`percentiles` summarises what the controller gathered. `fraction_of` and `bottleneck`
turn the time processes spent blocked into the stage that holds the others back.
`dig`, `as_dict` and `is_number` read the metrics records (possibly hand-edited or
truncated) without trusting their shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Most samples a process sends per period. One sample per batch is far below this in
# practice; the cap only bounds a pathological period (thousands of one-event batches).
MAX_SAMPLES = 2000
# A stage is held back when its processes spent at least this share of a period
# blocked (their outputs waiting for credit from a queue downstream): more of their time
# than anything else, so the stage it sends to sets its pace. Lower, a burst or a mild
# imbalance would name a bottleneck that moves from period to period; higher, a stage
# held back two thirds of the time would go unnamed.
HELD_BACK = 0.5


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


def fraction_of(seconds_per_s: float | None, processes: int) -> float | None:
    """A stage's seconds per second summed over its `processes` (at least one) as the
    share of the period the mean one spent so, 0..1 (None: not measured)."""
    if seconds_per_s is None:
        return None
    return min(1.0, max(0.0, seconds_per_s / max(1, processes)))


def bottleneck(
    blocked: Mapping[str, float | None], downstream: Mapping[str, Sequence[str]], fill: Mapping[str, float]
) -> dict[str, str] | None:
    """The stage that held the others back in a period, and why; None when no stage was
    held back.

    `blocked`: per stage with processes of its own (a source, a pool's first stage), the
    share of the period they were blocked (`fraction_of`; None: not measured);
    `downstream`: per such stage, the stages its outputs go to; `fill`: how full each
    stage's queue was (0..1). A stage holds its upstream neighbour back when that one
    was blocked at least HELD_BACK of the period and it was not (a stage blocked itself
    is held back in turn, by one further down). Of several, the one whose neighbour was
    blocked the most; of a neighbour's several next stages, the one with the fullest
    queue (it is where the credit ran out)."""
    best: tuple[tuple[float, float], str, str] | None = None
    for up, outs in downstream.items():
        held = blocked.get(up)
        if held is None or held < HELD_BACK:
            continue
        for down in outs:
            own = blocked.get(down)
            if own is not None and own >= HELD_BACK:
                continue
            key = (held, fill.get(down, 0.0))
            if best is None or key > best[0]:
                best = (key, up, down)
    if best is None:
        return None
    (held, _), up, down = best
    return {
        "stage": down,
        "reason": f"{up} was blocked {held:.0%} of the period: the queue of {down} had no room for its outputs",
    }


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
