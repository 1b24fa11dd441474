"""What a chain makes of a handler's results for one batch: the ids and events the next
stage gets, the failures, and what crosses a fused boundary. Pure.

A result per event is the list of its outputs or a `Failure`, or, for the whole batch,
`Singles` (one plain output per event: `HandlerRunner.handle_batch`). An event with
one output keeps its id; one with several gives ``"<id>.<i>"`` for its i-th.
"""

from __future__ import annotations

from typing import Any

from sedamp.errors import WireError
from sedamp.runtime import wire
from sedamp.runtime.stage import Failure, Singles

Results = list[list[Any] | Failure]


def per_event(results: Results) -> Results:
    """The results as one list (or `Failure`) per event, `Singles` included."""
    if type(results) is Singles:
        return [[v] for v in results]
    return results


def ids_of(eid: Any, n: int) -> list[Any]:
    """The ids of an event's `n` outputs."""
    return [eid] if n == 1 else [f"{eid}.{i}" for i in range(n)]


def fan_out(ids: list[Any], results: Results) -> tuple[list[Any], list[Any], list[int]]:
    """The ids and events the next stage gets, and the indices of the events that failed."""
    if type(results) is Singles:  # one plain output per event: nothing to look at per event
        return list(ids), list(results), []
    next_ids: list[Any] = []
    next_events: list[Any] = []
    failed: list[int] = []
    add_id, add_event = next_ids.append, next_events.append
    for i, (eid, res) in enumerate(zip(ids, results, strict=True)):
        if type(res) is list and len(res) == 1:  # one output: the common case, first
            add_id(eid)
            add_event(res[0])
        elif isinstance(res, Failure):
            failed.append(i)
        else:
            next_ids.extend(ids_of(eid, len(res)))
            next_events.extend(res)
    return next_ids, next_events, failed


def cross_each(ids: list[Any], results: Results) -> tuple[list[Any], list[Any], list[tuple[int, WireError]]]:
    """Each event's outputs as MessagePack delivers them, one event at a time: the ids
    and events that crossed, and the events (index, why) whose outputs cannot cross.
    Failures are left out (they are dealt with already)."""
    next_ids: list[Any] = []
    next_events: list[Any] = []
    bad: list[tuple[int, WireError]] = []
    for i, (eid, res) in enumerate(zip(ids, per_event(results), strict=True)):
        if isinstance(res, Failure):
            continue
        try:
            crossed = [wire.unpack_event(wire.pack_event(out)) for out in res]
        except WireError as exc:
            bad.append((i, exc))
            continue
        next_ids.extend(ids_of(eid, len(res)))
        next_events.extend(crossed)
    return next_ids, next_events, bad


def list_for_dict(events: list[Any], results: Results) -> str | None:
    """The type name (list or tuple) of the first event's one output, when that event
    is a dict: a handler that most likely meant several events. Only the first event is
    looked at: nothing is paid per event."""
    if not events or type(events[0]) is not dict or not results:
        return None
    first = results[0] if type(results) is Singles else _only(results[0])
    return type(first).__name__ if type(first) in (list, tuple) else None


def _only(result: list[Any] | Failure) -> Any:
    """The one output of an event's result, or None (a failure, none, or several)."""
    return result[0] if type(result) is list and len(result) == 1 else None
