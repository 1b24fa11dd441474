"""How far a run has got, computed from the controller's metrics records. Pure.

A batch job's progress is counted in source events. An event is *done* once it has left
the pipeline: written by a sink, filtered out by a handler (returned nothing), failed,
skipped, rejected or dropped. While every handler emits at most one event per event it
takes, that sum is exact:

    done = sum over sinks of events_in
         + sum over handlers of (events_in - events_out)     (filtered, failed)
         + events the source failed or skipped
         + dropped and rejected events (never handled)

Once a handler has emitted more events than it took (fan-out, or a ``finish()`` that
emits), or when the topology sends each event to several stages (an edge list without
``when:``), events downstream no longer map to source events; progress then counts the
events the source has *read* instead, and says so (``counting == "read"``): with
bounded queues that runs ahead of the work by at most what the queues hold.

The total comes from the source's ``total()`` (``ListFiles`` knows how many files it
lists, ``ReadJsonl`` how many lines); a source without one gives no total, so no
percentage and no ETA, only counts and rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sedamp.observe.words import plural

# Rates are measured over this much of the recent past.
RATE_WINDOW_S = 5.0


@dataclass(frozen=True)
class StageLine:
    """One stage in a progress view."""

    name: str
    kind: str
    workers: int
    queue: int | None  # events waiting in its queue (None: no queue of its own)
    capacity: int | None
    done: int  # events it has handled (for a source: read)


@dataclass(frozen=True)
class View:
    """What a progress display shows of one record: events done, the rate, the ETA and each stage."""

    done: int
    total: int | None
    counting: str  # "done" or "read" (see the module docstring)
    rate: float | None  # events per second over the last RATE_WINDOW_S (None: not yet known)
    eta_s: float | None
    failed: int  # failed, rejected or poison events so far (in the dead-letter file)
    elapsed_s: float
    stages: list[StageLine]

    @property
    def fraction(self) -> float | None:
        if self.total is None:
            return None
        if self.total == 0:  # nothing to do (e.g. every output exists already): complete
            return 1.0
        return min(1.0, self.done / self.total)


def _i(x: Any) -> int:
    try:
        return int(x or 0)
    except (TypeError, ValueError):
        return 0


def copies_events(topology: Any) -> bool:
    """Whether some stage sends each event to more than one stage (a `Topology`)."""
    return any(sum(1 for e in spec.to if e.when is None) > 1 for spec in topology.stages.values())


def count(record: dict[str, Any], copies: bool = False) -> tuple[int, int | None, str, int]:
    """(done, total, counting, failed) of one metrics record; `copies`: the topology
    sends events to several stages at once (see `copies_events`)."""
    stages: dict[str, dict[str, Any]] = record.get("stages", {})
    total: int | None = None
    read = 0
    done = 0
    failed = 0
    fanned_out = False
    for st in stages.values():
        kind = st.get("kind")
        failed += _i(st.get("failed")) + _i(st.get("rejected")) + _i(st.get("poisoned"))
        done += _i(st.get("dropped")) + _i(st.get("rejected"))
        if kind == "source":
            read += _i(st.get("events_out"))
            done += _i(st.get("failed")) + _i(st.get("skipped"))
            t = st.get("total")
            if isinstance(t, int) and t >= 0:
                total = t if total is None else total + t
        elif kind == "sink":
            done += _i(st.get("events_in"))
        else:
            ins, outs = _i(st.get("events_in")), _i(st.get("events_out"))
            if outs > ins:
                fanned_out = True
            done += max(0, ins - outs)
    if fanned_out or copies:
        return read, total, "read", failed
    return done, total, "done", failed


@dataclass
class Tracker:
    """Feed it every metrics record; `view()` gives the progress with a smoothed rate."""

    copies: bool = False  # the topology sends events to several stages (copies_events)
    history: deque[tuple[float, int]] = field(default_factory=deque)
    last: View | None = None

    def update(self, record: dict[str, Any]) -> View:
        done, total, counting, failed = count(record, self.copies)
        now = float(record.get("elapsed_s", 0.0))
        self.history.append((now, done))
        while len(self.history) > 2 and now - self.history[1][0] >= RATE_WINDOW_S:
            self.history.popleft()
        t0, d0 = self.history[0]
        rate = (done - d0) / (now - t0) if now - t0 >= 0.9 else None
        finished = total is not None and 0 < total <= done
        if rate is None and finished and now > 0:
            rate = done / now  # a run shorter than the window: its whole average
        eta = None
        if finished:
            eta = 0.0
        elif total is not None and rate and rate > 0:
            eta = max(0.0, (total - done) / rate)
        lines = []
        for name, st in record.get("stages", {}).items():
            q = st.get("queue") or None
            lines.append(
                StageLine(
                    name=name,
                    kind=str(st.get("kind")),
                    workers=_i(st.get("workers")),
                    queue=_i(q.get("length")) if q else None,
                    capacity=_i(q.get("capacity")) if q else None,
                    done=_i(st.get("events_out") if st.get("kind") == "source" else st.get("events_in")),
                )
            )
        self.last = View(done, total, counting, rate, eta, failed, now, lines)
        return self.last


def duration(seconds: float | None) -> str:
    """``1:02:03``, ``2:03`` or ``5s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    if m:
        return f"{m}:{s:02d}"
    return f"{s}s"


def headline(v: View) -> str:
    """One line: ``412/1,000 done (41%), 37.5/s, ETA 16s, 2 failed``."""
    what = "done" if v.counting == "done" else "read"
    parts = [f"{v.done:,}/{v.total:,} {what} ({v.fraction:.0%})" if v.total is not None else f"{v.done:,} {what}"]
    parts.append(f"{v.rate:,.1f}/s" if v.rate is not None else "-/s")
    if v.total is not None:
        parts.append(f"ETA {duration(v.eta_s)}")
    parts.append(f"{v.failed:,} failed")
    return ", ".join(parts)


def stage_line(v: View) -> str:
    """The stages in one compact line: ``list 500 read | thumb q 12/64 w2 | write q 0/64 w1``."""
    out = []
    for s in v.stages:
        if s.kind == "source":
            out.append(f"{s.name} {s.done:,} read")
        elif s.queue is None:
            out.append(f"{s.name} {s.done:,} in")  # a later member of a group: shares its pool
        else:
            out.append(f"{s.name} q {s.queue}/{s.capacity} w{s.workers}")
    return " | ".join(out)


class Listening:
    """Where the stages of a run listen (a source's ``stats()["listening"]``, e.g. the HTTP
    front end's URL), from its metrics records: each address told once, when it first
    appears: ``sedamp: listening on http://127.0.0.1:8080 (stage http)``."""

    def __init__(self) -> None:
        self.told: set[tuple[str, str]] = set()

    def __call__(self, record: dict[str, Any]) -> list[str]:
        lines = []
        for name, st in (record.get("stages") or {}).items():
            url = ((st.get("stats") if isinstance(st, dict) else None) or {}).get("listening")
            if isinstance(url, str) and url and (name, url) not in self.told:
                self.told.add((name, url))
                lines.append(f"sedamp: listening on {url} (stage {name})")
        return lines


def answered_line(stage: str, stats: dict[str, Any] | None) -> str | None:
    """What a serving stage answered (its ``stats()["answered"]``: counts by status), for
    the summary: ``http: answered 1,234 requests (200: 1,200, 503: 30, 504: 4)``."""
    answered = (stats or {}).get("answered")
    if not isinstance(answered, dict):
        return None
    counts = sorted((str(k), _i(v)) for k, v in answered.items())
    total = sum(n for _, n in counts)
    detail = f" ({', '.join(f'{k}: {n:,}' for k, n in counts)})" if counts else ""
    return f"{stage}: answered {plural(total, 'request')}{detail}"
