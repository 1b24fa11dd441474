"""The stage graph of a topology as a diagram: a Mermaid flowchart or a Graphviz digraph.
Pure: reads a validated `Topology`, returns the text (`sedamp graph` prints it)."""

from __future__ import annotations

from sedamp.spec.model import Edge, StageSpec, Topology, WorkersSpec

__all__ = ["to_dot", "to_mermaid"]


def _node_label(s: StageSpec, newline: str) -> str:
    return newline.join([s.name, f"{s.kind}: {s.ref}", f"workers: {_bounds_short(s.workers)}"])


def _bounds_short(spec: WorkersSpec) -> str:
    if spec.fixed:
        return str(spec.min)
    return f"{spec.min}..{spec.max if spec.max is not None else 'auto'}"


def to_mermaid(top: Topology) -> str:
    """A Mermaid flowchart of the stage graph: sources are stadiums, handlers rectangles,
    sinks cylinders; keyed edges are labelled ``key: FIELD``."""
    ids = {name: f"s{i}" for i, name in enumerate(top.stages)}
    lines = ["flowchart LR", f"    %% topology: {top.name}"]
    shapes = {"source": ('(["', '"])'), "handler": ('["', '"]'), "sink": ('[("', '")]')}
    for s in top.stages.values():
        left, right = shapes[s.kind]
        label = _node_label(s, "<br/>").replace('"', "#quot;")
        lines.append(f"    {ids[s.name]}{left}{label}{right}")
    for s in top.stages.values():
        for e in s.to:
            if e.stage not in ids:
                continue
            label = _edge_label(e).replace('"', "#quot;")
            if label:
                lines.append(f'    {ids[s.name]} -->|"{label}"| {ids[e.stage]}')
            else:
                lines.append(f"    {ids[s.name]} --> {ids[e.stage]}")
    return "\n".join(lines) + "\n"


def _edge_label(e: Edge) -> str:
    parts = [f"key: {e.key}"] if e.key is not None else []
    if e.when:
        parts.append("when " + ", ".join(f"{k}={v}" for k, v in e.when))
    return "; ".join(parts)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(top: Topology) -> str:
    """A Graphviz digraph of the stage graph: sources are ``invhouse``, handlers boxes,
    sinks cylinders; keyed edges are labelled ``key: FIELD``."""
    shapes = {"source": "invhouse", "handler": "box", "sink": "cylinder"}
    lines = [
        f"digraph {_dot_quote(top.name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
    ]
    for s in top.stages.values():
        lines.append(f"    {_dot_quote(s.name)} [shape={shapes[s.kind]}, label={_dot_quote(_node_label(s, chr(10)))}];")
    for s in top.stages.values():
        for e in s.to:
            attrs = f" [label={_dot_quote(_edge_label(e))}]" if _edge_label(e) else ""
            lines.append(f"    {_dot_quote(s.name)} -> {_dot_quote(e.stage)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"
