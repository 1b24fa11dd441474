"""Tests of sedamp.spec.checks_graph on stage drafts built by hand (no YAML, no imports)."""

from __future__ import annotations

from sedamp.spec.checks_graph import check_dedupe, check_graph, check_groups
from sedamp.spec.checks_stage import StageDraft
from sedamp.spec.model import Edge, StageKind, WorkersSpec
from sedamp.spec.problems import Problems


def draft(name: str, kind: StageKind, *to: str, key: str | None = None, **fields: object) -> StageDraft:
    edges = [(Edge(t, key), ("stages", name, "to")) for t in to]
    d = StageDraft(name=name, line=None, kind=kind, ref="m:f", edges=edges, to_ok=True, workers_ok=True)
    for k, v in fields.items():
        setattr(d, k, v)
    return d


def messages(check: object, *drafts: StageDraft) -> list[str]:
    p = Problems("t.yaml")
    check(p, {d.name: d for d in drafts})  # type: ignore[operator]
    return [f"{x.field}: {x.message}" for x in p.problems]


def test_a_valid_chain_has_no_problem() -> None:
    chain = (draft("s", "source", "h"), draft("h", "handler", "k"), draft("k", "sink"))
    assert messages(check_graph, *chain) == []


def test_a_cycle_is_reported_once_and_an_island_as_unreachable() -> None:
    got = messages(
        check_graph,
        draft("s", "source", "a"),
        draft("a", "handler", "b"),
        draft("b", "handler", "a"),
        draft("lost", "sink"),
    )
    assert got == [
        "stages.b.to: cycle: a -> b -> a",
        "stages.lost: stage 'lost' is not reachable from any source",
    ]


def test_a_keyed_edge_needs_a_fixed_pool() -> None:
    got = messages(check_graph, draft("s", "source", "k", key="user"), draft("k", "sink", workers=WorkersSpec(1, 4)))
    assert got == [
        "stages.k.workers: stage 'k' is reached through an edge keyed by 'user', so it needs a fixed worker "
        "count, got min 1, max 4"
    ]


def test_a_group_must_be_a_chain_entered_at_its_first_stage() -> None:
    got = messages(
        check_groups,
        draft("s", "source", "a", "b"),
        draft("a", "handler", "b", group="g"),
        draft("b", "sink", group="g", given=frozenset({"workers"})),
    )
    assert got == [
        "stages.b.group: 'b' is inside group 'g', so only 'a' may send to it, but 's' does",
        "stages.b.workers: 'b' is inside group 'g', whose pool is set on its first stage",
    ]


def test_a_sink_that_dedupes_needs_one_worker_or_keyed_edges() -> None:
    source = draft("s", "source", "k")
    assert messages(check_dedupe, source, draft("k", "sink", dedupe=True, workers=WorkersSpec(1, 1))) == []
    assert messages(check_dedupe, source, draft("k", "sink", dedupe=True, workers=WorkersSpec(2, 2))) == [
        "stages.k.dedupe: 'k' dedupes in its worker, so its copies of an event must all reach one worker, "
        "but 'k' may run 2 workers on unkeyed edges"
    ]
