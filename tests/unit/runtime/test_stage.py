"""sedamp.runtime.stage: the return conventions, runners and reference checks (no processes)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import sedamp
from sedamp.runtime.stage import Failure, HandlerRunner, Singles, SourceRunner, check_ref, load_ref, outputs_of


@pytest.fixture(autouse=True)
def user_module() -> Any:
    m = types.ModuleType("userstages")

    def double(event: int, factor: int = 2) -> int:
        return event * factor

    def evens(event: int) -> Any:
        if event % 2 == 0:
            yield event
            yield -event

    def boom(event: int) -> int:
        if event == 3:
            raise KeyError("three")
        return event

    class Acc:
        def setup(self, start: int = 0) -> None:
            self.total = start
            self.closed = False

        def handle(self, event: int) -> None:
            self.total += event

        def finish(self) -> Any:
            return sedamp.Many([self.total])

        def teardown(self) -> None:
            self.closed = True

    class Batched:
        def setup(self) -> None:
            pass

        def handle_batch(self, events: list[int]) -> list[Any]:
            return [e + 1 for e in events]

    class WrongBatch:
        def handle_batch(self, events: list[int]) -> list[Any]:
            return [1]

    class Src:
        def setup(self, n: int) -> None:
            self.n = n

        def total(self) -> int:
            return self.n

        def __iter__(self) -> Any:
            return iter(range(self.n))

    def gen_source(n: int) -> Any:
        return (i for i in range(n))

    for name, obj in list(locals().items()):
        if name != "m":
            setattr(m, name, obj)
    m.NOT_CALLABLE = 42
    sys.modules["userstages"] = m
    yield m
    del sys.modules["userstages"]


def test_outputs_convention() -> None:
    assert outputs_of(None) == []
    assert outputs_of(5) == [5]
    assert outputs_of([1, 2]) == [[1, 2]]  # a list is one event
    assert outputs_of((1, 2)) == [(1, 2)]
    assert outputs_of({"a": 1}) == [{"a": 1}]
    assert outputs_of(sedamp.Many([1, 2])) == [1, 2]
    assert outputs_of(iter([1, 2])) == [1, 2]
    assert outputs_of(x for x in range(3)) == [0, 1, 2]


def test_function_handler_with_params_and_failures() -> None:
    r = HandlerRunner("userstages:double", {"factor": 3})
    r.setup()
    assert r.handle_batch([1, 2]) == [[3], [6]]
    r = HandlerRunner("userstages:boom", {})
    r.setup()
    res = r.handle_batch([1, 3, 5])
    assert res[0] == [1] and res[2] == [5]
    assert isinstance(res[1], Failure) and res[1].type == "KeyError" and "three" in res[1].message
    assert "boom" in res[1].traceback


def test_singles_are_the_values_while_every_event_gives_one_plain_value() -> None:
    """A cheap stage's batch comes back as its values (`Singles`), the chain's fast path;
    the first event that fails, is dropped or fans out turns the batch into one result
    per event from there, without calling the handler on any event twice."""
    calls: list[int] = []

    def spy(event: int) -> Any:
        calls.append(event)
        if event == 3:
            raise KeyError("three")
        return None if event == 4 else iter([event, event]) if event == 5 else event * 10

    mark = [99]
    r = HandlerRunner("userstages:double", {"factor": 3})
    r.setup()
    got = r.handle_batch([1, 2], mark=mark, singles=True)
    assert type(got) is Singles and got == [3, 6] and mark == [1]
    assert r.handle_batch([1, 2]) == [[3], [6]]  # not asked for: one list per event
    r._call = spy
    got = r.handle_batch([4, 1, 4], singles="sink")  # a sink's None is not a dropped event
    assert type(got) is Singles and got == [None, 10, None]
    assert type(r.handle_batch([4, 1], singles=True)) is list
    for events in ([1, 3, 2], [4, 1], [1, 2, 5, 1]):
        calls.clear()
        got = r.handle_batch(events, mark=mark, singles=True)
        assert type(got) is list and calls == events and mark == [len(events) - 1]
        for ev, res in zip(events, got, strict=True):
            if ev == 3:
                assert isinstance(res, Failure) and res.type == "KeyError"
            else:
                assert res == ([] if ev == 4 else [ev, ev] if ev == 5 else [ev * 10])


def test_generator_handler_fans_out_or_drops() -> None:
    r = HandlerRunner("userstages:evens", {})
    r.setup()
    assert r.handle_batch([1, 2]) == [[], [2, -2]]


def test_class_handler_lifecycle() -> None:
    r = HandlerRunner("userstages:Acc", {"start": 10})
    r.setup()
    assert r.handle_batch([1, 2, 3]) == [[], [], []]
    assert r.finish() == [16]
    obj = r._obj
    r.teardown()
    assert obj.closed


def test_handle_batch_and_its_length_check() -> None:
    r = HandlerRunner("userstages:Batched", {})
    r.setup()
    assert r.handle_batch([1, 2]) == [[2], [3]]
    r = HandlerRunner("userstages:WrongBatch", {})
    r.setup()
    res = r.handle_batch([1, 2])
    assert all(isinstance(x, Failure) and "2 events" in x.message for x in res)


def test_sources_and_their_totals() -> None:
    s = SourceRunner("userstages:Src", {"n": 3})
    s.setup()
    assert s.total() == 3 and list(s) == [0, 1, 2]
    s = SourceRunner("userstages:gen_source", {"n": 2})
    s.setup()
    assert s.total() is None and list(s) == [0, 1]


def test_check_ref_messages() -> None:
    assert check_ref("handler", "userstages:double", {"factor": 2}) is None
    assert "does not accept" in (check_ref("handler", "userstages:double", {"size": 2}) or "")
    assert "cannot import module 'nosuchmod'" in (check_ref("handler", "nosuchmod:f", {}) or "")
    assert "no attribute" in (check_ref("handler", "userstages:nope", {}) or "")
    assert "not a function or class" in (check_ref("handler", "userstages:NOT_CALLABLE", {}) or "")
    assert "no __iter__" in (check_ref("source", "userstages:Acc", {}) or "")
    assert check_ref("source", "userstages:Src", {"n": 1}) is None
    assert check_ref("handler", "userstages:Acc", {"start": 1}) is None
    assert "does not accept" in (check_ref("handler", "userstages:Acc", {"stop": 1}) or "")


def test_load_ref_forms() -> None:
    assert load_ref("userstages:Acc.setup") is not None
    with pytest.raises(ValueError):
        load_ref("userstages.double")


def test_dead_letters_survive_events_json_cannot_key(tmp_path: Any) -> None:
    from sedamp.runtime.deadletter import DeadLetters, read_dead_letters

    d = DeadLetters(tmp_path / "d.jsonl")
    d.write(stage="s", event_id=1, error_type="E", message="m", traceback=None, event={b"k": 1, (1, 2): "t"})
    d.write(stage="s", event_id=2, error_type="E", message="m", traceback=None, event={"b": b"\x00"})
    d.close()
    got = read_dead_letters(tmp_path / "d.jsonl")
    assert "b'k'" in got[0]["event"] and got[1]["event"] == {"b": {"$bytes": "AA=="}}


def test_a_generator_is_stopped_past_the_outputs_limit() -> None:
    """10 million small outputs of one event took 5 GB before the first was sent; a
    generator is now stopped one past the limit and the event fails with a message."""
    from sedamp.runtime.stage import MAX_OUTPUTS_PER_EVENT

    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    with pytest.raises(ValueError, match="more than 1,000,000 events for one event"):
        outputs_of(endless())
    assert pulled == MAX_OUTPUTS_PER_EVENT + 1
    assert len(outputs_of(iter(range(MAX_OUTPUTS_PER_EVENT)))) == MAX_OUTPUTS_PER_EVENT
