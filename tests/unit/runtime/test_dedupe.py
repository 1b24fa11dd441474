"""sedamp.runtime.dedupe.IdSet against a plain set."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from sedamp.runtime.dedupe import IdSet


def test_in_order_ids_are_one_range() -> None:
    s = IdSet()
    assert all(s.add(i) for i in range(10_000))
    assert len(s) == 10_000 and s.ranges == 1
    assert not s.add(5000) and 9999 in s and 10_000 not in s and -1 not in s


def test_string_ids_are_kept_apart_from_integers() -> None:
    s = IdSet()
    assert s.add("12.3") and s.add(12)
    assert "12.3" in s and 12 in s and "12" not in s and 13 not in s
    assert not s.add("12.3")
    assert len(s) == 2


@given(st.lists(st.one_of(st.integers(-50, 50), st.sampled_from(["a", "b.1", "x.end.0"])), max_size=300))
def test_behaves_like_a_set(ids: list[object]) -> None:
    s = IdSet()
    ref: set[object] = set()
    for eid in ids:
        assert s.add(eid) == (eid not in ref)
        ref.add(eid)
        assert eid in s
    assert len(s) == len(ref)
    for probe in range(-55, 56):
        assert (probe in s) == (probe in ref)
    # ranges are disjoint, sorted and never adjacent (merged)
    assert all(e < n for e, n in zip(s._ends, s._starts[1:], strict=False))


def test_fan_out_ids_cost_per_parent_not_per_output() -> None:
    tracemalloc.start()
    try:
        s = IdSet()
        for p in range(20_000):
            for i in range(10):
                assert s.add(f"{p}.{i}")
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # ids in a set took about 90 bytes each (the string and its slot); a parent's count is ~80
    assert held / 200_000 < 16
    assert len(s) == 200_000 and s.parents == 20_000
    assert "19999.9" in s and "19999.10" not in s and not s.add("7.3")


def test_outputs_out_of_order_are_kept_exactly() -> None:
    s = IdSet()
    assert s.add("5.3") and s.add("5.0") and s.add("5.1")
    assert "5.2" not in s and "5.3" in s and "5.0" in s
    assert s.add("5.200") and "5.199" not in s and not s.add("5.200")
    assert s.add("5.2") and all(f"5.{i}" in s for i in range(4))
    assert len(s) == 5


def test_ids_that_only_look_like_fan_out_are_kept_apart() -> None:
    s = IdSet()
    assert s.add("12.3") and s.add("12.03") and s.add("012.3") and s.add("a.b") and s.add("12.")
    assert s.add("x.end.0") and s.add("x.end.1") and s.add(".4") and s.add(f"1.{10**9}")
    assert len(s) == 9 and "12.003" not in s and "12.3" in s and "x.end.2" not in s


_fan_out_ids = st.builds(
    lambda parent, i: f"{parent}.{i}",
    st.one_of(st.integers(0, 5), st.sampled_from(["a", "3.1", "s.0.end", "07"])),
    st.one_of(st.integers(0, 20), st.sampled_from(["01", "x", ""])),
)


@given(st.lists(st.one_of(st.integers(0, 30), _fan_out_ids), max_size=300))
def test_fan_out_ids_behave_like_a_set(ids: list[object]) -> None:
    s = IdSet()
    ref: set[object] = set()
    for eid in ids:
        assert s.add(eid) == (eid not in ref)
        ref.add(eid)
    assert len(s) == len(ref)
    for probe in [*ref, *(f"{p}.{i}" for p in (0, 1, 5, "a", "3.1") for i in range(22))]:
        assert (probe in s) == (probe in ref)
