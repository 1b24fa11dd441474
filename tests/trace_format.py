"""The Chrome trace-event format (the "JSON Object Format" of the Trace Event Format
document, also read by Perfetto) as a JSON Schema, and the rules viewers rely on that a
schema cannot say: complete slices on one thread nest, and a flow event lies inside a
slice of its thread (it binds to the enclosing slice, "bp": "e")."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import jsonschema

_COMMON = {
    "name": {"type": "string"},
    "cat": {"type": "string"},
    "pid": {"type": "integer"},
    "tid": {"type": "integer"},
    "ts": {"type": "number", "minimum": 0},
    "args": {"type": "object"},
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ph", "pid", "tid", "name"],
                "oneOf": [
                    {  # complete event: a slice with a duration
                        "properties": {**_COMMON, "ph": {"const": "X"}, "dur": {"type": "number", "minimum": 0}},
                        "required": ["ts", "dur"],
                    },
                    {  # flow events: start, step, end; bp "e": bind to the enclosing slice
                        "properties": {
                            **_COMMON,
                            "ph": {"enum": ["s", "t", "f"]},
                            "id": {"type": ["integer", "string"]},
                            "bp": {"const": "e"},
                        },
                        "required": ["ts", "id", "cat"],
                    },
                    {  # metadata: names and order of processes and threads
                        "properties": {
                            **_COMMON,
                            "ph": {"const": "M"},
                            "name": {
                                "enum": ["process_name", "thread_name", "process_sort_index", "thread_sort_index"]
                            },
                        },
                        "required": ["args"],
                    },
                ],
            },
        },
        "displayTimeUnit": {"enum": ["ms", "ns"]},
    },
}


def check_chrome_trace(doc: dict[str, Any]) -> None:
    """Raise AssertionError (or jsonschema.ValidationError) unless `doc` is a valid
    Chrome trace-event document whose slices nest and whose flows bind."""
    jsonschema.validate(doc, SCHEMA)
    slices: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for track, spans in slices.items():
        spans.sort(key=lambda s: (s[0], -s[1]))
        open_ends: list[float] = []
        for t0, t1 in spans:
            while open_ends and open_ends[-1] <= t0:
                open_ends.pop()
            assert not open_ends or t1 <= open_ends[-1], f"slices overlap without nesting on {track} at {t0}"
            open_ends.append(t1)
    flows: dict[Any, list[str]] = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] in ("s", "t", "f"):
            spans = slices[(e["pid"], e["tid"])]
            assert any(t0 <= e["ts"] <= t1 for t0, t1 in spans), f"flow {e['id']} at {e['ts']} binds to no slice"
            flows[e["id"]].append(e["ph"])
    for fid, phases in flows.items():
        assert phases[0] == "s" and phases[-1] == "f" and set(phases[1:-1]) <= {"t"}, (fid, phases)
