"""The checks of a topology's graph: edges to known stages, sinks without and sources and
handlers with outputs, cycles, reachability from a source, routing keys, groups that form
chains, and the constraints of sinks that dedupe. Pure.

They read the `StageDraft`s of `sedamp.spec.checks_stage` and record into the shared
`Problems`; `sedamp.spec.load` runs `check_graph` first, and the group and dedupe checks
only on a topology with no problem so far.
"""

from __future__ import annotations

import difflib
from typing import Any

from sedamp.spec.checks_stage import StageDraft
from sedamp.spec.keys import POOL_KEYS
from sedamp.spec.model import Edge, count_paths
from sedamp.spec.problems import Problems, bounds_text

__all__ = ["check_dedupe", "check_graph", "check_groups"]

Adjacency = dict[str, list[tuple[str, tuple[Any, ...]]]]  # stage -> (next stage, path of the edge)


def check_graph(p: Problems, drafts: dict[str, StageDraft]) -> None:
    """Every edge, cycle, source, reachability and routing-key problem of the graph."""
    names = list(drafts)
    adjacency, reach = _follow_edges(p, drafts)
    _cycles(p, names, adjacency)
    kinds_known = all(d.kind is not None for d in drafts.values())
    if kinds_known and not any(d.kind == "source" for d in drafts.values()):
        p.add(("stages",), "there is no source stage", "add a stage with source: module:function feeding the others")
    elif all(d.to_ok for d in drafts.values()):
        _reachability(p, drafts, reach)
    _key_routing(p, drafts)


def _follow_edges(p: Problems, drafts: dict[str, StageDraft]) -> tuple[Adjacency, dict[str, list[str]]]:
    """Check each stage's outputs and edge targets; return the graph of the valid edges and,
    for reachability, every edge with its typos resolved to the closest stage."""
    names = list(drafts)
    adjacency: Adjacency = {n: [] for n in names}
    reach: dict[str, list[str]] = {n: [] for n in names}  # typos resolved, for reachability
    for d in drafts.values():
        spath: tuple[Any, ...] = ("stages", d.name)
        if d.kind == "sink" and d.edges:
            p.add(
                (*spath, "to"),
                "a sink has no output, so it cannot have to:",
                "remove to:, or make it a handler if it should pass events on",
            )
            continue
        if d.kind in ("source", "handler") and not d.edges and d.to_ok:
            p.add(
                (*spath, "to"),
                f"a {d.kind} must send its events somewhere, but has no to:",
                "add to: <next stage>" + (", or make it a sink" if d.kind == "handler" else ""),
            )
        for edge, epath in d.edges:
            if edge.stage not in drafts:
                close = difflib.get_close_matches(edge.stage, names, n=1)
                p.add(
                    epath,
                    f"unknown stage {edge.stage!r}",
                    f"did you mean {close[0]!r}?" if close else f"the stages are: {', '.join(names)}",
                )
                if close:
                    reach[d.name].append(close[0])
                continue
            target = drafts[edge.stage]
            reach[d.name].append(edge.stage)
            if target.kind == "source":
                p.add(
                    epath,
                    f"cannot send to {edge.stage!r}: it is a source, which has no input",
                    "send to a handler or sink instead",
                )
                continue
            adjacency[d.name].append((edge.stage, epath))
    return adjacency, reach


def _reachability(p: Problems, drafts: dict[str, StageDraft], reach: dict[str, list[str]]) -> None:
    """Every stage is reachable from a source (or from a stage of unknown kind)."""
    roots = [d.name for d in drafts.values() if d.kind in ("source", None)]
    seen = set(roots)
    todo = list(roots)
    while todo:
        for nxt in reach[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    for d in drafts.values():
        if d.name not in seen:
            p.add(
                ("stages", d.name),
                f"stage {d.name!r} is not reachable from any source",
                "add it to the to: of an upstream stage, or remove it",
            )


def _cycles(p: Problems, names: list[str], adjacency: Adjacency) -> None:
    """Report every back edge of a depth-first walk, with the cycle it closes."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    reported: set[frozenset[tuple[str, str]]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt, epath in adjacency[node]:
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt) :] + [nxt]
                sig = frozenset(zip(loop, loop[1:], strict=False))
                if sig not in reported:
                    reported.add(sig)
                    p.add(
                        epath,
                        f"cycle: {' -> '.join(loop)}",
                        "a pipeline must be acyclic: remove one of these edges",
                    )
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for n in names:
        if n not in state:
            visit(n)


def _key_routing(p: Problems, drafts: dict[str, StageDraft]) -> None:
    incoming: dict[str, list[tuple[str, Edge, tuple[Any, ...]]]] = {}
    for d in drafts.values():
        if d.kind == "sink":
            continue
        for edge, epath in d.edges:
            if edge.stage in drafts and drafts[edge.stage].kind != "source":
                incoming.setdefault(edge.stage, []).append((d.name, edge, epath))
    for target, edges in incoming.items():
        first_src, first, _ = edges[0]
        for src, edge, epath in edges[1:]:
            if edge.key != first.key:
                p.add(
                    epath[:-1] if epath[-1] == "stage" else epath,
                    f"edges into {target!r} disagree on the routing key: "
                    f"{first_src!r} routes by {_key_text(first.key)}, {src!r} by "
                    f"{_key_text(edge.key)}",
                    f"route every edge into {target!r} by the same key: field, or none",
                )
                break
        keyed = next((e.key for _, e, _ in edges if e.key is not None), None)
        d = drafts[target]
        if keyed is not None and d.workers_ok and not d.workers.fixed:
            p.add(
                ("stages", target, "workers"),
                f"stage {target!r} is reached through an edge keyed by {keyed!r}, so "
                f"it needs a fixed worker count, got {bounds_text(d.workers)}",
                "add workers: N, or make min equal max",
            )


def check_groups(p: Problems, drafts: dict[str, StageDraft]) -> None:
    """Stages sharing a group run in one process pool, calling each other directly:
    they must form a chain (each sends only to the next, unkeyed, and receives only
    from the previous), hold no source, and set workers/queue/batch only on the
    first stage, whose queue and pool serve the whole group."""
    by_group: dict[str, list[StageDraft]] = {}
    for d in drafts.values():
        if d.group is not None:
            by_group.setdefault(d.group, []).append(d)
    for group, members in by_group.items():
        for i, d in enumerate(members):
            path: tuple[Any, ...] = ("stages", d.name)
            if d.kind == "source":
                p.add(
                    (*path, "group"),
                    f"a source cannot join group {group!r}: it runs in its own process",
                    "remove group: from the source",
                )
                continue
            if i + 1 < len(members):
                nxt = members[i + 1].name
                e0 = d.edges[0][0] if d.edges else None
                if len(d.edges) != 1 or e0 is None or e0.stage != nxt or e0.key is not None or e0.when:
                    p.add(
                        (*path, "to"),
                        f"stages of group {group!r} must form a chain: {d.name!r} must send only to "
                        f"{nxt!r}, the next stage of the group, without a key",
                        f"write to: {nxt}, or leave {d.name!r} out of the group",
                    )
            if i > 0:
                prev = members[i - 1].name
                senders = [x.name for x in drafts.values() if any(e.stage == d.name for e, _ in x.edges)]
                if senders != [prev]:
                    p.add(
                        (*path, "group"),
                        f"{d.name!r} is inside group {group!r}, so only {prev!r} may send to it, "
                        f"but {', '.join(repr(x) for x in senders if x != prev) or 'nothing'} does",
                        "send to the group's first stage, or leave this stage out of the group",
                    )
                for key in POOL_KEYS:
                    if key in d.given:
                        p.add(
                            (*path, key),
                            f"{d.name!r} is inside group {group!r}, whose pool is set on its first stage",
                            f"move {key}: to stage {members[0].name!r}",
                        )


def check_dedupe(p: Problems, drafts: dict[str, StageDraft]) -> None:
    """A sink that dedupes remembers the ids it handled in its worker, so every
    copy of an event must reach the same worker: one worker, or keyed edges."""
    for d in drafts.values():
        if not d.dedupe:
            continue
        pool = d
        if d.group is not None:
            pool = next(x for x in drafts.values() if x.group == d.group)
        if pool.max_events is not None or pool.max_rss_mb is not None:
            p.add(
                ("stages", d.name, "dedupe"),
                f"{d.name!r} dedupes in its worker, which max_events / max_rss_mb would replace, "
                "forgetting what it had handled",
                f"drop max_events and max_rss_mb from {pool.name!r}, or dedupe: false",
            )
            continue
        if _paths_to(drafts, d.name) > 1:
            p.add(
                ("stages", d.name, "dedupe"),
                f"{d.name!r} dedupes by event id, but events reach it along more than one path (several "
                "sources, or edges that split and meet again): ids are positions at each source and a copy "
                "keeps its parent's id, so a real event would be dropped as a duplicate of another",
                "dedupe: false, or give each path its own sink",
            )
            continue
        keyed = all(e.key is not None for x in drafts.values() for e, _ in x.edges if e.stage == pool.name)
        senders = [x for x in drafts.values() if any(e.stage == pool.name for e, _ in x.edges)]
        if pool.workers.max != 1 and not (senders and keyed):
            p.add(
                ("stages", d.name, "dedupe"),
                f"{d.name!r} dedupes in its worker, so its copies of an event must all reach one worker, "
                f"but {pool.name!r} may run {bounds_text(pool.workers)} workers on unkeyed edges",
                f"give {pool.name!r} workers: 1, or route to it by a key (to: {{stage: {pool.name}, key: id}})",
            )


def _paths_to(drafts: dict[str, StageDraft], name: str) -> int:
    edges = {d.name: [e.stage for e, _ in d.edges] for d in drafts.values()}
    sources = [d.name for d in drafts.values() if d.kind == "source"]
    return count_paths(edges, sources).get(name, 0)


def _key_text(key: str | None) -> str:
    return repr(key) if key is not None else "no key"
