"""The handler chain of a worker: the handlers of one stage, or of a fused ``group:``,
called in order on a batch. Pure of processes and sockets.

A `Chain` holds one `Link` per stage of the chain, each with its runner and its own
counters. `run` calls the first handler on a batch, names the outputs of each event
(the parent's id for one output, ``"<parent>.<i>"`` for several) and passes them, as
Python objects, to the next handler; the tail's outputs go to a router (a sink's are
only counted and, if it is resumable, journaled). An event a handler fails on is
tried again under the stage's ``on_error`` (``retry`` times, ``backoff_s`` apart,
doubling), then skipped, dead-lettered, or dead-lettered and the run stopped through
the `stop_run` the owner gives (which does not return).

What it touches is given to it: the dead-letter file, the router (anything with
`keyed`, `limit`, `route` and `route_packed`), the journal, the worker's slot (which
event of the lease is in the handler, and the deadline of the call), the set of
ids a deduplicating sink has seen, and the `tick` of the worker's memory guard,
called after every event and every few outputs of a generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from sedamp.errors import WireError
from sedamp.runtime import results as results_
from sedamp.runtime import wire
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.dedupe import IdSet
from sedamp.runtime.journal import Journal
from sedamp.runtime.results import Results
from sedamp.runtime.slot import Slot
from sedamp.runtime.stage import Failure, HandlerRunner, Rest, Singles, Spill

NO_RETRY = (0, 0.0, "dead_letter")


class Routes(Protocol):
    """Where the tail's outputs go (`sedamp.runtime.outlet.Router`)."""

    keyed: bool
    limit: int
    max_bytes: int

    def route(self, parent_id: Any, outputs: list[Any], estimate: bool = False, first: int = 0) -> None: ...

    def route_packed(self, ids: list[Any], packed: list[bytes]) -> None: ...


@dataclass(eq=False)
class Link:
    """One stage of the chain a worker runs, with its own counters."""

    stage: str
    kind: str
    runner: HandlerRunner
    retry: int = 0
    backoff_s: float = 0.0
    then: str = "dead_letter"
    n_in: int = 0
    n_out: int = 0
    n_failed: int = 0  # dead-lettered
    n_retried: int = 0  # calls made again after a failure
    n_skipped: int = 0  # failed and dropped (on_error: skip)
    crossing: bool = False  # fused by the runtime: its input is what MessagePack would deliver
    warned: bool = False  # it turned a dict into a list once (`Chain.warnings` says so)


def links_of(
    stage: str,
    kind: str,
    ref: str,
    params: dict[str, Any],
    on_error: tuple[int, float, str],
    rest: tuple[dict[str, Any], ...],
) -> list[Link]:
    """The links of a worker: its own stage, then the rest of its group, each of `rest`
    a ``{"stage", "kind", "ref", "params"[, "on_error", "crossing"]}``."""
    links = [Link(stage, kind, HandlerRunner(ref, params), *on_error)]
    for d in rest:
        retry, backoff_s, then = d.get("on_error", NO_RETRY)
        runner = HandlerRunner(d["ref"], d["params"])
        links.append(Link(d["stage"], d["kind"], runner, retry, backoff_s, then, crossing=d.get("crossing", False)))
    return links


class Chain:
    def __init__(
        self,
        links: list[Link],
        dead: DeadLetters,
        stop_run: Callable[[str, Failure], NoReturn],
        slot: Slot | None = None,
        seen: IdSet | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.links = links
        self.tail = links[-1]
        self.dead = dead
        self.stop_run = stop_run
        self.slot = slot
        self.seen = seen
        self.sleep = sleep
        self.duplicates = 0
        self.router: Routes | None = None  # set by the owner once its outlets exist
        self.tick: Callable[[], None] | None = None  # set by an owner that watches its memory
        self.journal: Journal | None = None  # set by the owner for a resumable sink
        # set by an owner that sends a generator's outputs as they come (stage.SPILL_EVENTS)
        self.on_spill: Callable[[], None] | None = None
        self.warnings: list[str] = []  # what the user should know, once per stage (`_look_at`)

    # ---------------------------------------------------------------- life

    def setup(self) -> tuple[Link, Failure] | None:
        """Set every stage up, in order; the first that raised, and how, if any."""
        for link in self.links:
            try:
                link.runner.setup()
            except BaseException as exc:
                return link, Failure.from_exception(exc)
        return None

    def finish(self, index: int) -> Failure | None:
        """Call every stage's finish(), passing what it emits down the chain (named
        ``<stage>.<index>.end.<k>``); the first failure, if any."""
        error: Failure | None = None
        last = len(self.links) - 1
        for i, link in enumerate(self.links):
            try:
                outputs = link.runner.finish()
            except Exception as exc:
                error = error or Failure.from_exception(exc)
                continue
            if not outputs:
                continue
            ids = [f"{link.stage}.{index}.end.{k}" for k in range(len(outputs))]
            if i < last:
                link.n_out += len(outputs)
                self.run(i + 1, ids, outputs)
            elif link.kind != "sink":
                for eid, ev in zip(ids, outputs, strict=True):
                    self._route_one(eid, None, [ev])
        return error

    def teardown(self, error: Failure | None) -> Failure | None:
        """Tear every stage down; `error`, or else the first teardown failure."""
        for link in self.links:
            try:
                link.runner.teardown()
            except Exception as exc:
                error = error or Failure.from_exception(exc)
        return error

    @property
    def stateful(self) -> bool:
        """Some stage emits at the end of input: its state would be lost if retired."""
        return any(link.runner.has_finish for link in self.links)

    # ---------------------------------------------------------------- work

    def run(self, start: int, ids: list[Any], events: list[Any], one_by_one: bool = False) -> None:
        """Handle events from link `start` through the tail, then route the tail's
        outputs (a sink's are only counted). Inside a group, events pass from stage
        to stage as Python objects (no serialization until they leave the process),
        except into a stage the runtime fused, which gets what MessagePack would deliver.

        With `one_by_one` (the owner's choice for slow events), a chain that ends in a
        sink takes each event through every stage before the next: the sink has the
        first event's outputs (a request/response route: its answer) as soon as they
        are made, not after the whole batch has been through the first stage."""
        if one_by_one and start == 0 and len(events) > 1 and len(self.links) > 1 and self.tail.kind == "sink":
            for k in range(len(events)):
                self._run(0, ids[k : k + 1], events[k : k + 1], [k])
            return
        # where each event sits in the lease: None = in lease order, [] = not known
        self._run(start, ids, events, None if start == 0 else [])

    def _run(self, start: int, ids: list[Any], events: list[Any], pos: list[int] | None) -> None:
        for i in range(start, len(self.links) - 1):
            link = self.links[i]
            results = self._call(link, events, pos)
            self._look_at(link, events, results)
            link.n_in += len(events)
            ids, events = self._fan_out(link, ids, events, results, self.links[i + 1].crossing)
            pos = []
            if not events:
                return
        tail = self.tail
        if self.seen is not None:
            ids, events, pos = self._unseen(ids, events, pos)
            if not events:
                return
        spill = spiller(self, ids) if tail.kind != "sink" and self.on_spill is not None else None
        results = self._call(tail, events, pos, spill)
        tail.n_in += len(events)
        if tail.kind != "sink":
            self._look_at(tail, events, results)
            self._route(ids, events, results)
            return
        failed = 0
        if type(results) is not Singles:  # Singles: none failed
            for eid, ev, res in zip(ids, events, results, strict=True):
                if isinstance(res, Failure):
                    self._failed(tail, eid, res, ev)
                    failed += 1
        tail.n_out += len(results) - failed
        if self.journal is not None:  # before the ACK: what is journaled is written
            self.journal.add(eid for eid, res in zip(ids, results, strict=True) if not isinstance(res, Failure))

    def _look_at(self, link: Link, events: list[Any], results: Results) -> None:
        """Warn once per stage when a handler turns a dict event into a list (or tuple):
        the next stage gets it as ONE event, where several were most likely meant."""
        kind = None if link.warned else results_.list_for_dict(events, results)
        if kind is not None:
            link.warned = True
            self.warnings.append(
                f"stage {link.stage!r} returned a {kind} for a dict event: the next stage gets "
                "it as ONE event (a list); to emit several events, yield them or return sedamp.Many([...])"
            )

    def _fan_out(
        self, link: Link, ids: list[Any], events: list[Any], results: Results, crossing: bool = False
    ) -> tuple[list[Any], list[Any]]:
        """The ids and events the next link gets from `link`'s results (`crossing`: as
        MessagePack would deliver them; an event whose outputs cannot cross is
        dead-lettered, as a router would)."""
        next_ids, next_events, failed = results_.fan_out(ids, results)
        for i in failed:
            self._failed(link, ids[i], results[i], events[i])  # type: ignore[arg-type]
        link.n_out += len(next_events)
        if not crossing or not next_events:
            return next_ids, next_events
        crossed = wire.roundtrip(next_events)
        if crossed is not None:
            return next_ids, crossed
        next_ids, next_events, bad = results_.cross_each(ids, results)
        per = results_.per_event(results)
        for i, exc in bad:
            link.n_out -= len(per[i])  # type: ignore[arg-type]
            message = f"stage {link.stage!r} returned an event that cannot be sent: {exc}"
            self._dead(link, ids[i], "WireError", message, None, events[i])
        return next_ids, next_events

    def _route(self, ids: list[Any], events: list[Any], results: Results) -> None:
        """Give each event's outputs to the router. One output per event on unkeyed
        edges (the common case) is packed in bulk; anything else goes one by one."""
        router = self.router
        assert router is not None, "a handler chain needs a router"
        if type(results) is Singles and not router.keyed:  # one plain output per event: in bulk as they are
            fast_ids, fast_out = ids, list(results)
        else:
            fast_ids, fast_out = self._route_each(ids, events, results)
        if fast_ids:
            packed = wire.pack_all(fast_out, router.limit, router.max_bytes)
            if packed is not None:
                router.route_packed(fast_ids, packed)
                self.tail.n_out += len(packed)
            else:  # one is too large or cannot be packed: find it without packing it again
                by_id = dict(zip(ids, events, strict=True))
                for eid, out in zip(fast_ids, fast_out, strict=True):
                    self._route_one(eid, by_id[eid], [out], estimate=True)

    def _route_each(self, ids: list[Any], events: list[Any], results: Results) -> tuple[list[Any], list[Any]]:
        """Route the events `_route` cannot pack in bulk; return those it can."""
        results = results_.per_event(results)
        fast_ids: list[Any] = []
        fast_out: list[Any] = []
        add_id, add_out = fast_ids.append, fast_out.append
        keyed = self.router is not None and self.router.keyed
        for eid, ev, res in zip(ids, events, results, strict=True):
            if type(res) is list and len(res) == 1 and not keyed:
                add_id(eid)
                add_out(res[0])
                continue
            if isinstance(res, Failure):
                self._failed(self.tail, eid, res, ev)
                continue
            self._route_one(eid, ev, res)
        return fast_ids, fast_out

    def _route_one(self, eid: Any, ev: Any, outputs: list[Any], estimate: bool = False) -> None:
        assert self.router is not None, "a handler chain needs a router"
        tail = self.tail
        try:
            self.router.route(eid, outputs, estimate, first=outputs.first if type(outputs) is Rest else 0)
        except WireError as exc:
            message = f"stage {tail.stage!r} returned an event that cannot be sent: {exc}"
            self._dead(tail, eid, "WireError", message, None, ev)
            return
        except KeyError as exc:
            self._dead(tail, eid, "KeyError", f"stage {tail.stage!r}: {exc.args[0]}", None, ev)
            return
        tail.n_out += len(outputs)

    def _hooks(self, pos: list[int] | None) -> tuple[Callable[[int, int], None] | None, Any]:
        """How the handler loop notes in the slot which event of the lease is in the
        handler (see `run` for `pos`): a one-item view it writes the index to, the
        cheap common case, or a callable when there is a deadline to set or the
        index must be translated."""
        slot = self.slot
        if slot is None:
            return None, None
        if pos is None:
            return (slot.at, None) if slot.timeout_s else (None, slot.position)
        if not pos:
            slot.position[0] = -1
            return (lambda _i, n: slot.at(-1, n)) if slot.timeout_s else None, None
        return (lambda i, n: slot.at(pos[i] if i >= 0 else -1, n)), None

    def _call(self, link: Link, events: list[Any], pos: list[int] | None, spill: Spill | None = None) -> Results:
        """Handle a batch; events that failed are tried again one by one, up to the
        stage's `retry` times, `backoff_s` apart (doubling each time)."""
        singles = "sink" if link.kind == "sink" else True
        results = link.runner.handle_batch(events, *self._hooks(pos), self.tick, spill, singles=singles)
        if self.slot is not None and self.slot.timeout_s:
            self.slot.pause()  # the deadline covers user code only, not routing or journaling
        if not link.retry or type(results) is Singles:  # Singles: nothing failed
            return results
        for i, res in enumerate(results):
            delay = link.backoff_s
            for _ in range(link.retry):
                if not isinstance(res, Failure):
                    break
                if delay > 0:
                    if self.slot is not None:
                        self.slot.pause()
                    self.sleep(delay)
                    delay *= 2
                link.n_retried += 1
                one = [i] if pos is None else [pos[i]] if pos else []
                res = link.runner.handle_batch([events[i]], *self._hooks(one), self.tick)[0]
                if self.slot is not None and self.slot.timeout_s:
                    self.slot.pause()
            results[i] = res
        return results

    def _failed(self, link: Link, eid: Any, fail: Failure, event: Any) -> None:
        """An event the handler failed on (after its retries): apply on_error.then."""
        if link.then == "skip":
            link.n_skipped += 1
            return
        self._dead(link, eid, fail.type, fail.message, fail.traceback, event)
        if link.then == "fail":
            tries = f" after {link.retry + 1} tries" if link.retry else ""
            self.stop_run(
                f"stage {link.stage!r} failed on event {eid!r}{tries}: {fail.type}: {fail.message} "
                "(on_error: fail; the event is in the dead-letter file)",
                fail,
            )

    def _unseen(
        self, ids: list[Any], events: list[Any], pos: list[int] | None
    ) -> tuple[list[Any], list[Any], list[int] | None]:
        """Drop events this deduplicating sink has already handled."""
        assert self.seen is not None
        keep_ids: list[Any] = []
        keep: list[Any] = []
        keep_pos: list[int] = []
        for i, (eid, ev) in enumerate(zip(ids, events, strict=True)):
            if self.seen.add(eid):
                keep_ids.append(eid)
                keep.append(ev)
                if pos is None:
                    keep_pos.append(i)
                elif pos:
                    keep_pos.append(pos[i])
            else:
                self.duplicates += 1
        if len(keep) == len(events):
            return ids, events, pos
        return keep_ids, keep, keep_pos

    def dead_input(self, ids: list[Any], message: str) -> None:
        """Dead-letter a batch the first stage cannot even decode."""
        for eid in ids:
            self._dead(self.links[0], eid, "WireError", message, None, None)

    def _dead(self, link: Link, eid: Any, etype: str, message: str, tb: str | None, event: Any) -> None:
        link.n_failed += 1
        self.dead.write(stage=link.stage, event_id=eid, error_type=etype, message=message, traceback=tb, event=event)


def spiller(chain: Chain, ids: list[Any]) -> Spill:
    """How the tail sends a generator's outputs while it runs: routed (named after
    the ones sent before) and handed to the owner (`on_spill`), which sends them and
    waits for room downstream. An output that cannot be routed fails the event
    there (those sent before it stay sent)."""

    def spill(i: int, outputs: list[Any], first: int) -> None:
        assert chain.router is not None and chain.on_spill is not None, "spilling needs a router and an owner"
        chain.router.route(ids[i], outputs, first=first)
        chain.tail.n_out += len(outputs)
        chain.on_spill()

    return spill
