"""sedamp.runtime.dedupe.IdSet against a plain set."""

from __future__ import annotations

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
