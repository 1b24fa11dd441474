"""The JSON Schema (draft 2020-12) of the topology YAML format, for editors. Pure.

`topology_schema()` describes every key the loader (`sedamp.spec.load`) accepts, with the same types,
bounds and choices, so that an editor (e.g. the YAML language server, through a
``# yaml-language-server: $schema=...`` comment) completes keys, shows their meaning and
flags mistakes as they are typed. `sedamp schema` prints it.

The loader stays the authority: the schema cannot see the graph (a ``to:`` naming no
stage, cycles, reachability, groups that are not chains, key routing) nor import
handlers, so a file the schema accepts may still be refused by ``sedamp validate``. Two
deliberate leniencies keep the schema from refusing files the loader accepts:

- wherever a typed value (a number, a choice, a reference) is expected, a string holding
  a ``${VAR}`` is accepted too, since the loader substitutes it before checking the type
  (``workers: ${N:-4}`` is the integer 4; only the loader knows whether it was quoted);
- an optional key may be null (written ``key:`` with no value): the loader reads that
  as "not given".

The keys listed here are checked against the loader's own lists (`sedamp.spec.keys`) by
tests/unit/spec/test_schema.py, so the two cannot drift apart. The schema is a set of
module-level tables, built once at import; `topology_schema()` hands out a copy.
"""

from __future__ import annotations

import copy
from typing import Any

from sedamp.runtime import wire
from sedamp.spec.model import (
    BUDGET_MIN_EVENTS,
    DEFAULT_CAPACITY_EVENTS,
    DEFAULT_ERROR_BUDGET,
    EXECUTOR_CHOICES,
    FUSE_CHOICES,
    MAX_BATCH,
    ON_ERROR_THEN,
    ON_FULL_CHOICES,
    POLICY_CHOICES,
    SIZE_PATTERN,
)

__all__ = ["DIALECT", "topology_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_IDENT = "[A-Za-z_][A-Za-z0-9_]*"
STAGE_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_-]*$"
REF_PATTERN = rf"^\s*{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\s*$"
# Python identifiers: ASCII ones exactly, other letters loosely (str.isidentifier decides)
PARAM_NAME_PATTERN = "^[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*$"
# a string the loader will substitute before reading it: ${NAME} or ${NAME:-default}
VARIABLE_PATTERN = rf"\$\{{{_IDENT}(\}}|:-)"

_VAR_REF = {"$ref": "#/$defs/variable"}
_NULL = {"type": "null"}
_TARGET = {"anyOf": [{"$ref": "#/$defs/stage_name"}, _VAR_REF]}  # a stage named in to: (a value: substituted)


def _or_var(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or a string holding a ``${VAR}`` (checked by the loader once expanded)."""
    return {"anyOf": [schema, _VAR_REF]}


def _optional(description: str, *alternatives: dict[str, Any]) -> dict[str, Any]:
    """An optional key: one of `alternatives`, or null (= not given)."""
    return {"description": description, "anyOf": [*alternatives, _NULL]}


def _int(minimum: int, maximum: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        out["maximum"] = maximum
    return out


def _seconds() -> dict[str, Any]:
    return {"type": "number", "exclusiveMinimum": 0}


# A stage reference (module:attribute), and the description shared by source:, handler: and sink:
_STAGE_REF = _or_var({"type": "string", "pattern": REF_PATTERN})
_KIND_TEXT = (
    "{} module:attribute (a function or class). Exactly one of source:, handler: and sink: per stage. "
    "The directory of the topology file and the current directory are importable."
)
_STAGE_PROPERTIES: dict[str, Any] = {
    "source": {
        **_STAGE_REF,
        "description": _KIND_TEXT.format(
            "A source: a function f(**params) returning an iterable of events, or a class with "
            "setup(**params), __iter__ and optional total() and teardown(). Runs in one process."
        ),
        "examples": ["stages.files:ListFiles"],
    },
    "handler": {
        **_STAGE_REF,
        "description": _KIND_TEXT.format(
            "A handler: f(event, **params) returning one event, None (drop) or several (a generator or "
            "sedamp.Many), or a class with setup(**params), handle(event), optional handle_batch(events), "
            "finish() and teardown()."
        ),
        "examples": ["my_module:decode"],
    },
    "sink": {
        **_STAGE_REF,
        "description": _KIND_TEXT.format(
            "A sink: f(event, **params), or a class with setup(**params), handle(event) or "
            "handle_batch(events), and teardown() once at the end (flush here)."
        ),
        "examples": ["stages.files:WriteFiles"],
    },
    "params": _optional(
        "Keyword arguments for the function or setup() (for a class without setup, __init__). "
        "Names are Python identifiers; values are any YAML.",
        {"type": "object", "propertyNames": {"pattern": PARAM_NAME_PATTERN}},
    ),
    "workers": _optional(
        "Pool size: an integer N means exactly N processes; {min, max} bounds the pool the controller "
        "resizes (max: auto = the core budget). Default: a handler starts with an even share of the cores "
        "left after fixed pools, a sink gets 1 worker; a source always runs in one process. A stage reached "
        "through a keyed edge needs a fixed count. In a group, set on its first stage only.",
        _or_var(_int(1)),
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "min": _optional("The fewest workers (default 1).", _or_var(_int(1))),
                "max": _optional(
                    "The most workers, at least min; auto = as many as the core budget allows (default: min).",
                    _or_var(_int(1)),
                    {"const": "auto"},
                ),
            },
        },
    ),
    "queue": _optional(
        "The stage's input queue. In a group, set on its first stage only.",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "capacity": _optional(
                    f"The queue bound in events: held + leased to workers + credit granted to producers "
                    f"(default {DEFAULT_CAPACITY_EVENTS} per process that may produce into it).",
                    _or_var(_int(1)),
                ),
                "max_bytes": _optional(
                    "The queue bound in bytes, counted as capacity is (events with the arrays and byte strings "
                    "beside them): an integer, or a size such as 256MiB, 1GiB, 500MB (default 256MiB). One "
                    "event larger than it is dead-lettered.",
                    _or_var({"oneOf": [_int(1), {"type": "string", "pattern": SIZE_PATTERN}]}),
                ),
                "on_full": _optional(
                    "What a producer does when the queue has no room: block (the default: backpressure, up "
                    "to the source), drop (dropped and counted in 'dropped'), reject (to the dead-letter file "
                    "as Rejected, counted in 'rejected', exit code 1).",
                    _or_var({"enum": list(ON_FULL_CHOICES)}),
                ),
            },
        },
    ),
    "batch": _optional(
        f"Events per batch: an integer fixes the size (for a source: events per message it sends, at most; default "
        f"4096); {{min, max}} bounds the adaptive size. Without it each worker sizes its batches so that one "
        f"takes about 50 ms (1 to 4096 events). 1..{MAX_BATCH}. In a group, set on its first stage only.",
        _or_var(_int(1, MAX_BATCH)),
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "min": {**_or_var(_int(1, MAX_BATCH)), "description": "The smallest batch (default 1)."},
                "max": {
                    **_or_var(_int(1, MAX_BATCH)),
                    "description": f"The largest batch, at least min (default {MAX_BATCH}).",
                },
            },
        },
    ),
    "to": _optional(
        "Where the stage's events go: a stage name; a list (fan-out: every event goes to each); or an edge "
        "{stage, key, when}. Sources and handlers need it, sinks have none.",
        _TARGET,
        {"$ref": "#/$defs/edge"},
        {"type": "array", "uniqueItems": True, "items": {"anyOf": [_TARGET, {"$ref": "#/$defs/edge"}]}},
    ),
    "group": _optional(
        "Consecutive stages with the same group share one process pool, calling each other directly. A group "
        "must be a chain entered only at its first stage, which alone sets workers, queue, batch, timeout_s, "
        "max_events and max_rss_mb. Sources cannot join a group.",
        _or_var({"type": "string", "pattern": STAGE_NAME_PATTERN}),
    ),
    "description": _optional("Free text.", {"type": "string"}),
    "on_error": _optional(
        "When a handler raises: try again up to retry times, backoff_s apart (doubling), then dead_letter "
        "(the default: to the dead-letter file, exit code 1), skip (dropped, counted in 'skipped') or fail "
        "(the run stops with exit code 3). The same 'then' applies to a poison event. Once the stage has "
        f"handled {BUDGET_MIN_EVENTS} events, dead-lettering more than budget of them stops the run (exit "
        "code 3). A string is the 'then' alone. Handlers and sinks only.",
        _or_var({"enum": list(ON_ERROR_THEN)}),
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "retry": _optional("Attempts after the first (default 0).", _or_var(_int(0, 100))),
                "backoff_s": _optional(
                    "Seconds before the first retry, doubling after each (default 0).",
                    _or_var({"type": "number", "minimum": 0, "maximum": 3600}),
                ),
                "then": _optional("dead_letter (the default) | skip | fail.", _or_var({"enum": list(ON_ERROR_THEN)})),
                "budget": _optional(
                    f"The fraction of the stage's events that may be dead-lettered before the run stops, judged "
                    f"once it has handled {BUDGET_MIN_EVENTS} (default {DEFAULT_ERROR_BUDGET}; 1 never stops it).",
                    _or_var({"type": "number", "minimum": 0, "maximum": 1}),
                ),
            },
        },
    ),
    "timeout_s": _optional(
        "A handler call running longer than this gets its worker killed (per event; per call for a class's "
        "own handle_batch, times its events). The event is blamed as a poison event. Handlers and sinks "
        "only; in a group, on its first stage.",
        _or_var(_seconds()),
    ),
    "max_events": _optional(
        "A worker is replaced after handling this many events (a stage with finish() logs a warning "
        "instead). Handlers and sinks only; in a group, on its first stage.",
        _or_var(_int(1)),
    ),
    "max_rss_mb": _optional(
        "A worker is replaced when its memory passes this many MiB. Handlers and sinks only; in a group, on "
        "its first stage.",
        _or_var(_int(1)),
    ),
    "dedupe": _optional(
        "Sinks: remember the ids of the events handled and skip redelivered copies (counted in "
        "'duplicates'). The sink must run one worker or be reached by keyed edges, and not set max_events "
        "or max_rss_mb.",
        _or_var({"type": "boolean"}),
    ),
    "max_event_bytes": _optional(
        f"An output event larger than this many bytes (packed) is dead-lettered (default and ceiling "
        f"{wire.MAX_EVENT_BYTES}, 16 MiB).",
        _or_var(_int(1, wire.MAX_EVENT_BYTES)),
    ),
    "fuse": _optional(
        "auto (the default): under policy: adaptive the runtime may run this stage in one pool with its "
        "neighbours in a chain (docs/controller.md, Stage domains); never: it always keeps its own pool.",
        _or_var({"enum": list(FUSE_CHOICES)}),
    ),
}
_NOT_ON_SOURCE = ("on_error", "timeout_s", "max_events", "max_rss_mb", "group")
_NOT_TRUE = {"not": {"const": True}}
_STAGE: dict[str, Any] = {
    "type": "object",
    "description": "A stage: exactly one of source:, handler: or sink:, and its options.",
    "additionalProperties": False,
    "properties": _STAGE_PROPERTIES,
    "oneOf": [{"required": ["source"]}, {"required": ["handler"]}, {"required": ["sink"]}],
    "allOf": [
        {
            "if": {"required": ["source"]},
            "then": {
                "required": ["to"],
                "properties": {
                    "to": {"not": _NULL},
                    "workers": {
                        "anyOf": [
                            {"const": 1},
                            {
                                "type": "object",
                                "properties": {"min": {"enum": [1, None]}, "max": {"enum": [1, None]}},
                            },
                            _NULL,
                            _VAR_REF,
                        ]
                    },
                    "dedupe": _NOT_TRUE,
                    **{key: _NULL for key in _NOT_ON_SOURCE},
                },
            },
        },
        {
            "if": {"required": ["handler"]},
            "then": {"required": ["to"], "properties": {"to": {"not": _NULL}, "dedupe": _NOT_TRUE}},
        },
        {
            "if": {"required": ["sink"]},
            "then": {"properties": {"to": {"anyOf": [_NULL, {"type": "array", "maxItems": 0}]}}},
        },
    ],
}


_TCP_ONLY = "transport: tcp (or executor: ray) only."
_CONTROLLER = _optional(
    "How the run is supervised: the core budget, how often processes report, the pool policy, the drain "
    "deadline, and the sockets' transport.",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "cores": _optional(
                "The core budget the pools may keep busy (default: auto = the usable cores).",
                _or_var(_int(1)),
                {"const": "auto"},
            ),
            "period_s": _optional(
                "How often processes report their counters, and the controller decides, in seconds (default 0.5).",
                _or_var(_seconds()),
            ),
            "policy": _optional(
                "adaptive (the default): grow busy stages with a backlog and shrink idle ones, within their "
                "workers bounds and the core budget; static: keep the initial sizes.",
                _or_var({"enum": list(POLICY_CHOICES)}),
            ),
            "drain_timeout_s": _optional(
                "How long Ctrl-C / SIGTERM lets in-flight work finish before every process is killed, in "
                "seconds (default 10).",
                _or_var(_seconds()),
            ),
            "transport": _optional(
                "ipc (the default: sockets in the private run directory) or tcp (CURVE-encrypted by default).",
                _or_var({"enum": ["ipc", "tcp"]}),
            ),
            "host": _optional(f"The address sockets bind to (default 127.0.0.1). {_TCP_ONLY}", {"type": "string"}),
            "advertise": _optional(f"The address peers connect to (default: host). {_TCP_ONLY}", {"type": "string"}),
            "curve": _optional(
                "CURVE encryption and authentication (default true; false is accepted on loopback only). " + _TCP_ONLY,
                _or_var({"type": "boolean"}),
            ),
            "keys": _optional(
                "A directory of key pairs made by `sedamp keys DIR` (default: fresh keys for each run). " + _TCP_ONLY,
                {"type": "string"},
            ),
            "executor": _optional(
                "Where workers run: local (the default: processes on this machine) or ray (Ray actors on the "
                "cluster at address; implies transport: tcp).",
                _or_var({"enum": list(EXECUTOR_CHOICES)}),
            ),
            "address": _optional(
                "The Ray cluster's address (default: RAY_ADDRESS, else the cluster started on this machine). "
                "Only with executor: ray.",
                {"type": "string"},
            ),
        },
        "allOf": [
            {
                # host, advertise, curve and keys apply to tcp only, which executor: ray implies
                "if": {
                    "anyOf": [
                        {
                            "required": ["transport"],
                            "properties": {"transport": {"anyOf": [{"const": "tcp"}, _VAR_REF]}},
                        },
                        {
                            "required": ["executor"],
                            "properties": {"executor": {"anyOf": [{"const": "ray"}, _VAR_REF]}},
                        },
                    ]
                },
                "else": {"properties": {key: _NULL for key in ("host", "advertise", "curve", "keys")}},
            },
            {
                "if": {
                    "required": ["executor"],
                    "properties": {"executor": {"anyOf": [{"const": "ray"}, _VAR_REF]}},
                },
                "else": {"properties": {"address": _NULL}},
            },
        ],
    },
)


_TOPOLOGY: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "sedamp topology",
    "description": (
        "A graph of stages run by `sedamp run`: each stage a pool of processes, joined by bounded queues. "
        "${VAR} and ${VAR:-default} are replaced from the environment in any string, ${TOPOLOGY_DIR} is the "
        "directory of the file, $$ is a literal $. `sedamp validate FILE` checks what this schema cannot: "
        "the graph and the handlers."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["stages"],
    "properties": {
        "name": _optional(
            "The topology's name, used for run directories and journals (default: the file name): "
            "letters, digits, _ . and -, at most 100, starting with a letter, a digit or _.",
            {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"},
            _VAR_REF,
        ),
        "description": _optional("Free text.", {"type": "string"}),
        "stages": {
            "description": (
                "The stages, in order; each key is a stage name ([A-Za-z_][A-Za-z0-9_-]*). There must be at "
                "least one source, every stage reachable from one, and no cycle."
            ),
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"$ref": "#/$defs/stage_name"},
            "additionalProperties": {"$ref": "#/$defs/stage"},
        },
        "controller": _CONTROLLER,
    },
    "$defs": {
        "variable": {
            "description": "A string the loader substitutes before reading it: ${VAR} or ${VAR:-default}.",
            "type": "string",
            "pattern": VARIABLE_PATTERN,
        },
        "stage_name": {
            "description": "A stage name: a letter or _, then letters, digits, _ and -.",
            "type": "string",
            "pattern": STAGE_NAME_PATTERN,
        },
        "edge": {
            "description": (
                "An edge to a stage. With key, events are routed by event[key] so that equal keys reach the "
                "same worker (that stage needs a fixed worker count). With when, only events whose fields "
                "equal all of its values go along this edge."
            ),
            "type": "object",
            "additionalProperties": False,
            "required": ["stage"],
            "properties": {
                "stage": {**_TARGET, "description": "The stage the events go to."},
                "key": _optional(
                    "The event field to route by; every edge into a stage names the same key, or none.",
                    {"type": "string", "minLength": 1},
                ),
                "when": _optional(
                    "Event fields and the plain values they must equal, e.g. {kind: image}. An event that "
                    "no edge takes when every edge is conditional is dead-lettered.",
                    {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                    },
                ),
            },
        },
        "stage": _STAGE,
    },
}


def topology_schema() -> dict[str, Any]:
    """The JSON Schema of a topology file, as a JSON-ready dict (a new one each call)."""
    return copy.deepcopy(_TOPOLOGY)  # the tables above are shared; the caller owns its copy
