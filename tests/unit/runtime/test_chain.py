"""sedamp.runtime.chain: calling the handlers of a stage or a group, fan-out, failures and
retries, without processes or sockets (a fake router, a real dead-letter file)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

import sedamp
from sedamp.runtime import wire
from sedamp.runtime.chain import Chain, Link, links_of
from sedamp.runtime.deadletter import DeadLetters, read_dead_letters
from sedamp.runtime.dedupe import IdSet
from sedamp.runtime.stage import Failure


@pytest.fixture(autouse=True)
def user_module() -> Iterator[types.ModuleType]:
    m = types.ModuleType("chainstages")
    calls: dict[int, int] = {}

    def split(event: int) -> Any:
        return sedamp.Many([event, event + 100])

    def double(event: int) -> int:
        return event * 2

    def keyed(event: int) -> Any:
        return {"k": event} if event % 2 == 0 else {"other": event}

    def fail_on_3(event: int) -> int:
        if event == 3:
            raise ValueError("three")
        return event

    def flaky(event: int) -> int:
        calls[event] = calls.get(event, 0) + 1
        if calls[event] <= 2:
            raise RuntimeError(f"try {calls[event]}")
        return event

    class Count:
        def setup(self) -> None:
            self.n = 0

        def handle(self, event: int) -> None:
            self.n += 1

        def finish(self) -> list[int]:
            return sedamp.Many([self.n])  # type: ignore[return-value]

    def as_tuple(event: Any) -> Any:
        return {"pair": (event, event), 3: "int key"} if event != 0 else {"bad": {1, 2}}

    def describe(event: Any) -> str:
        return repr(event)

    order: list[str] = []

    def noted(event: int) -> int:
        order.append(f"a{event}")
        return event

    class Noting:
        def handle(self, event: int) -> None:
            order.append(f"sink{event}")

    def many(event: int) -> Any:
        """600 outputs; event 2 fails after 550."""
        for i in range(600):
            if event == 2 and i == 550:
                raise ValueError("failed at 550")
            yield event * 1000 + i

    for f in (split, double, keyed, fail_on_3, flaky, Count, as_tuple, describe, many, noted, Noting):
        setattr(m, f.__name__, f)
    m.order = order  # type: ignore[attr-defined]
    sys.modules["chainstages"] = m
    yield m
    del sys.modules["chainstages"]


class FakeRouter:
    """Records what the chain routes; refuses an output without the key like Router."""

    def __init__(self, keyed: bool = False) -> None:
        self.keyed = keyed
        self.limit = wire.MAX_EVENT_BYTES
        self.max_bytes = 0
        self.routed: list[tuple[Any, Any]] = []

    def route(self, parent_id: Any, outputs: list[Any], estimate: bool = False, first: int = 0) -> None:
        if self.keyed and not all(isinstance(o, dict) and "k" in o for o in outputs):
            raise KeyError("an output has no field 'k' to route it to stage 'next' by")
        if len(outputs) == 1 and not first:
            ids = [parent_id]
        else:
            ids = [f"{parent_id}.{first + i}" for i in range(len(outputs))]
        self.routed.extend(zip(ids, outputs, strict=True))

    def route_packed(self, ids: list[Any], packed: list[bytes]) -> None:
        self.routed.extend(zip(ids, wire.unpack_events(packed, len(packed)), strict=True))


class Stopped(Exception):
    pass


def stop(message: str, fail: Failure) -> NoReturn:
    raise Stopped(message)


def chain_of(
    tmp_path: Path, *stages: tuple[str, str, str, tuple[int, float, str]], **kw: Any
) -> tuple[Chain, FakeRouter, list[float]]:
    crossing = kw.pop("crossing", False)
    (first, kind, ref, on_error), *rest = stages
    rest_dicts = tuple(
        {"stage": s, "kind": k, "ref": r, "params": {}, "on_error": e, "crossing": crossing} for s, k, r, e in rest
    )
    links = links_of(first, kind, ref, {}, on_error, rest_dicts)
    slept: list[float] = []
    chain = Chain(links, DeadLetters(tmp_path / "dead.jsonl"), stop, sleep=slept.append, **kw)
    router = FakeRouter()
    chain.router = router
    assert chain.setup() is None
    return chain, router, slept


NO = (0, 0.0, "dead_letter")


def counts(link: Link) -> list[int]:
    return [link.n_in, link.n_out, link.n_failed, link.n_retried, link.n_skipped]


def test_a_group_passes_objects_from_stage_to_stage_and_names_a_fan_out(tmp_path: Path) -> None:
    chain, router, _ = chain_of(
        tmp_path, ("a", "handler", "chainstages:split", NO), ("b", "handler", "chainstages:double", NO)
    )
    chain.run(0, [7, 8], [1, 2])
    assert router.routed == [("7.0", 2), ("7.1", 202), ("8.0", 4), ("8.1", 204)]
    assert [counts(link) for link in chain.links] == [[2, 4, 0, 0, 0], [4, 4, 0, 0, 0]]


def test_a_boundary_the_runtime_fused_hands_on_what_messagepack_would(tmp_path: Path) -> None:
    """Fusing never changes results: into a stage fused by the runtime, a tuple arrives as
    a list, as it would from a queue; an output that could not be sent is dead-lettered
    at the stage that made it, as a router would. A hand-made group passes objects."""
    stages = (("a", "handler", "chainstages:as_tuple", NO), ("b", "handler", "chainstages:describe", NO))
    fused, router, _ = chain_of(tmp_path, *stages, crossing=True)
    fused.run(0, [0, 1], [0, 1])
    assert router.routed == [(1, "{'pair': [1, 1], 3: 'int key'}")]
    [dead] = read_dead_letters(tmp_path / "dead.jsonl")
    assert (dead["stage"], dead["event_id"], dead["error_type"]) == ("a", 0, "WireError")
    assert dead["message"].startswith("stage 'a' returned an event that cannot be sent: cannot serialize")
    assert [counts(link) for link in fused.links] == [[2, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    (tmp_path / "g").mkdir()
    grouped, router, _ = chain_of(tmp_path / "g", *stages)
    grouped.run(0, [1], [1])
    assert router.routed == [(1, "{'pair': (1, 1), 3: 'int key'}")]


def test_failures_follow_on_error_dead_letter_skip_and_fail(tmp_path: Path) -> None:
    chain, router, _ = chain_of(
        tmp_path, ("a", "handler", "chainstages:fail_on_3", NO), ("b", "handler", "chainstages:fail_on_3", NO)
    )
    chain.run(0, [0, 1], [3, 4])
    assert router.routed == [(1, 4)]
    [dead] = read_dead_letters(tmp_path / "dead.jsonl")
    assert (dead["stage"], dead["event_id"], dead["error_type"], dead["message"], dead["event"]) == (
        "a",
        0,
        "ValueError",
        "three",
        3,
    )
    skipping, _, _ = chain_of(tmp_path, ("s", "handler", "chainstages:fail_on_3", (0, 0.0, "skip")))
    skipping.run(0, [0, 1], [3, 4])
    assert counts(skipping.tail) == [2, 1, 0, 0, 1]
    (tmp_path / "f").mkdir()
    failing, _, _ = chain_of(tmp_path / "f", ("f", "handler", "chainstages:fail_on_3", (1, 0.0, "fail")))
    expected = r"stage 'f' failed on event 5 after 2 tries: ValueError: three \(on_error: fail"
    with pytest.raises(Stopped, match=expected):
        failing.run(0, [5], [3])
    assert read_dead_letters(tmp_path / "f" / "dead.jsonl")[-1]["event_id"] == 5  # written before the stop


def test_a_failed_event_is_retried_alone_with_a_doubling_backoff(tmp_path: Path) -> None:
    chain, router, slept = chain_of(tmp_path, ("a", "handler", "chainstages:flaky", (3, 0.1, "dead_letter")))
    chain.run(0, [0], [9])
    assert router.routed == [(0, 9)] and slept == [0.1, 0.2]
    assert counts(chain.tail) == [1, 1, 0, 2, 0]


def test_an_output_the_router_refuses_is_dead_lettered_with_its_input(tmp_path: Path) -> None:
    chain, router, _ = chain_of(tmp_path, ("a", "handler", "chainstages:keyed", NO))
    chain.router = router = FakeRouter(keyed=True)
    chain.run(0, [0, 1], [2, 3])
    assert router.routed == [(0, {"k": 2})]
    [dead] = read_dead_letters(tmp_path / "dead.jsonl")
    assert dead["event_id"] == 1 and dead["error_type"] == "KeyError" and dead["event"] == 3
    assert dead["message"] == "stage 'a': an output has no field 'k' to route it to stage 'next' by"
    assert counts(chain.tail) == [2, 1, 1, 0, 0]


def test_a_deduplicating_sink_handles_each_id_once_and_finish_flows_down_the_chain(tmp_path: Path) -> None:
    chain, _, _ = chain_of(tmp_path, ("c", "handler", "chainstages:Count", NO), ("s", "sink", "chainstages:Count", NO))
    chain.seen = IdSet()
    chain.run(1, [0, 1], [0, 0])
    chain.run(1, [1, 2], [0, 0])
    assert chain.duplicates == 1 and counts(chain.tail) == [3, 3, 0, 0, 0]
    assert chain.stateful
    assert chain.finish(index=4) is None
    # c emitted its count (0: nothing reached it) as "c.4.end.0", which the sink handled
    assert counts(chain.links[0]) == [0, 1, 0, 0, 0] and chain.tail.n_in == 4
    assert chain.teardown(None) is None


def test_setup_reports_the_first_stage_that_raised(tmp_path: Path) -> None:
    missing = {"stage": "b", "kind": "sink", "ref": "nowhere:x", "params": {}}
    links = links_of("a", "handler", "chainstages:double", {}, NO, (missing,))
    chain = Chain(links, DeadLetters(tmp_path / "dead.jsonl"), stop)
    failed = chain.setup()
    assert failed is not None and failed[0].stage == "b" and failed[1].type == "ModuleNotFoundError"


def test_a_generator_at_the_tail_is_sent_as_it_runs_and_named_in_order(tmp_path: Path) -> None:
    chain, router, _ = chain_of(tmp_path, ("a", "handler", "chainstages:many", NO))
    spills: list[int] = []
    chain.on_spill = lambda: spills.append(len(router.routed))
    chain.run(0, [7, 8], [1, 2])
    # event 7: two chunks of 256 sent while the generator ran, the last 88 after it
    assert spills == [256, 512, 768, 1024]
    sevens = [(eid, ev) for eid, ev in router.routed if eid.startswith("7.")]
    assert sevens == [(f"7.{i}", 1000 + i) for i in range(600)]
    # event 8 failed after 550 outputs: the 512 sent before stay sent; the event is dead-lettered
    assert [eid for eid, _ in router.routed if eid.startswith("8.")] == [f"8.{i}" for i in range(512)]
    [letter] = read_dead_letters(tmp_path / "dead.jsonl")
    assert letter["event_id"] == 8 and letter["message"] == "failed at 550"


def test_without_an_owner_a_generator_is_held_whole(tmp_path: Path) -> None:
    chain, router, _ = chain_of(tmp_path, ("a", "handler", "chainstages:many", NO))
    chain.run(0, [7], [1])
    assert [eid for eid, _ in router.routed] == [f"7.{i}" for i in range(600)]


def test_slow_events_go_one_by_one_through_a_chain_that_ends_in_a_sink(
    tmp_path: Path, user_module: types.ModuleType
) -> None:
    """A request/response route (Call, then Respond, in one group) answered a batch's
    first request only after the last one had been handled: with `one_by_one` (the
    worker's choice for slow events) each event reaches the sink before the next is
    handled, and the slot still names each event by its place in the lease."""
    chain, _, _ = chain_of(tmp_path, ("a", "handler", "chainstages:noted", NO), ("s", "sink", "chainstages:Noting", NO))
    chain.run(0, [10, 11, 12], [0, 1, 2])
    assert user_module.order == ["a0", "a1", "a2", "sink0", "sink1", "sink2"]
    user_module.order.clear()
    marks: list[tuple[int, int]] = []
    chain.slot = types.SimpleNamespace(timeout_s=0, position=[-1], at=lambda i, n: marks.append((i, n)), pause=None)
    chain.run(0, [10, 11, 12], [0, 1, 2], one_by_one=True)
    assert user_module.order == ["a0", "sink0", "a1", "sink1", "a2", "sink2"]
    assert [i for i, _ in marks if i >= 0][:3] == [0, 1, 2]  # lease positions, not 0, 0, 0
    assert [counts(link) for link in chain.links] == [[6, 6, 0, 0, 0], [6, 6, 0, 0, 0]]
