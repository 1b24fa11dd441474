"""sedamp.policy: initial pool sizes from the topology and the core budget."""

from __future__ import annotations

from sedamp import policy
from sedamp.topology import Edge, StageSpec, Topology, WorkersSpec


def top(**workers: WorkersSpec) -> Topology:
    stages = {"src": StageSpec("src", "source", "m:f", to=(Edge(next(iter(workers))),))}
    names = list(workers)
    for i, (name, w) in enumerate(workers.items()):
        to = (Edge(names[i + 1]),) if i + 1 < len(names) else ()
        stages[name] = StageSpec(name, "handler" if to else "sink", "m:f", workers=w, to=to)
    return Topology(name="t", stages=stages)


def test_fixed_pools_get_their_size() -> None:
    t = top(a=WorkersSpec(3, 3), b=WorkersSpec(1, 1))
    assert policy.initial_targets(t, 2) == {"a": 3, "b": 1}


def test_ranged_pools_share_the_rest_within_bounds() -> None:
    t = top(a=WorkersSpec(1, None), b=WorkersSpec(1, 2), c=WorkersSpec(1, 1))
    assert policy.initial_targets(t, 8) == {"a": 3, "b": 2, "c": 1}
    assert policy.initial_targets(t, 2) == {"a": 1, "b": 1, "c": 1}
    t = top(a=WorkersSpec(4, 8), c=WorkersSpec(1, 1))
    assert policy.initial_targets(t, 2) == {"a": 4, "c": 1}  # min wins over the budget


def test_bounds_resolve_auto_max() -> None:
    s = StageSpec("a", "handler", "m:f", workers=WorkersSpec(2, None))
    assert policy.worker_bounds(s, 6) == (2, 6)
    assert policy.worker_bounds(s, 1) == (2, 2)


def test_usable_cores_is_positive() -> None:
    assert policy.usable_cores() >= 1
