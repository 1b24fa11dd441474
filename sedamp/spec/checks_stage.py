"""The checks of one stage of a topology: its name, kind and handler reference, params,
workers, queue, batch, edges and reliability options. Pure but for `check_handlers`, which
imports the user's modules to check each reference against its params.

`check_stage` reads one stage's raw mapping and returns a `StageDraft`: the stage as far
as it could be read, which the graph checks (`sedamp.spec.checks_graph`) and then the
freezing into a `StageSpec` use. Problems go to the shared `Problems` recorder.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedamp.runtime import stage as stage_mod
from sedamp.runtime import wire
from sedamp.spec.keys import EDGE_KEYS, ON_ERROR_KEYS, QUEUE_KEYS, STAGE_KEYS, WORKERS_KEYS
from sedamp.spec.model import (
    DEFAULT_CAPACITY_EVENTS,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_BYTES,
    FUSE_CHOICES,
    KINDS,
    MAX_BATCH,
    ON_ERROR_THEN,
    ON_FULL_CHOICES,
    Edge,
    FuseChoice,
    OnErrorSpec,
    QueueSpec,
    StageKind,
    WorkersSpec,
)
from sedamp.spec.problems import Problems, bounds_text, describe

__all__ = ["STAGE_NAME", "EdgeAt", "StageDraft", "check_handlers", "check_stage", "param_problems"]

STAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")  # stage and group names
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")

EdgeAt = tuple[Edge, tuple[Any, ...]]  # an edge with the path its stage name is reported at


@dataclass
class StageDraft:
    """A stage as far as it could be read, with what the graph checks need. It holds every
    field of its `StageSpec` under the same name, except `kind` (None until known) and
    `edges` (each edge with the path of its stage name, where the checks report it)."""

    name: str
    line: int | None  # line of the stage's key
    kind: StageKind | None = None
    ref: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    workers: WorkersSpec = WorkersSpec(1, None)
    workers_ok: bool = False
    queue: QueueSpec = QueueSpec()
    batch: int | None = None
    edges: list[EdgeAt] = field(default_factory=list)
    to_ok: bool = False
    ref_line: int | None = None
    batch_bounds: tuple[int, int] | None = None
    group: str | None = None
    given: frozenset[str] = frozenset()  # the keys the stage set explicitly
    on_error: OnErrorSpec = OnErrorSpec()
    timeout_s: float | None = None
    max_events: int | None = None
    max_rss_mb: int | None = None
    dedupe: bool = False
    max_event_bytes: int | None = None
    fuse: FuseChoice = "auto"


def check_stage(p: Problems, key: Any, raw: Any) -> StageDraft:
    """Read stage `key` of stages: (its raw mapping `raw`), recording its problems."""
    name = str(key)
    path: tuple[Any, ...] = ("stages", key)
    draft = StageDraft(name=name, line=p.lines.line(path))
    if not isinstance(key, str) or not STAGE_NAME.match(key):
        p.add(
            path,
            f"invalid stage name {key!r}",
            "a stage name starts with a letter or _ and holds only letters, digits, _ and -",
        )
    if raw is None:
        p.add(path, f"stage {name!r} is empty", "give it one of source:, handler: or sink: (a module:function)")
        return draft
    if not isinstance(raw, dict):
        p.add(
            path,
            f"a stage must be a mapping, got {describe(raw)}",
            f"e.g. {name}: {{handler: module:function, to: next_stage}}",
        )
        return draft
    p.unknown_keys(path, raw, STAGE_KEYS, f"stage {name!r}")
    draft.given = frozenset(k for k in raw if raw[k] is not None)
    draft.group = _group(p, path, raw)
    _kind_and_ref(p, path, raw, draft)
    draft.params = _params(p, (*path, "params"), raw.get("params"))
    draft.workers, draft.workers_ok = _workers(p, (*path, "workers"), raw.get("workers"), draft.kind)
    draft.queue = _queue(p, (*path, "queue"), raw.get("queue"))
    _batch(p, path, raw, draft)
    if raw.get("description") is not None:
        p.string((*path, "description"), raw["description"], "a string")
    draft.edges, draft.to_ok = _edges(p, (*path, "to"), raw.get("to"))
    _reliability(p, path, raw, draft)
    if raw.get("fuse") is not None:
        fuse: Any = p.choice((*path, "fuse"), raw["fuse"], FUSE_CHOICES)
        draft.fuse = fuse or "auto"
    return draft


def _group(p: Problems, path: tuple[Any, ...], raw: dict[Any, Any]) -> str | None:
    if raw.get("group") is None:
        return None
    g = raw["group"]
    if isinstance(g, str) and STAGE_NAME.match(g):
        return g
    p.add(
        (*path, "group"),
        f"must be a group name, got {describe(g)}",
        "e.g. group: parse (the same name on consecutive stages)",
    )
    return None


def _kind_and_ref(p: Problems, path: tuple[Any, ...], raw: dict[Any, Any], draft: StageDraft) -> None:
    """Exactly one of source:/handler:/sink:, whose value is a ``module:attribute``."""
    kinds = [k for k in KINDS if k in raw]
    if not kinds:
        p.add(
            path,
            "a stage needs one of source:, handler: or sink:",
            "add handler: module:function (or source:/sink:)",
        )
        return
    if len(kinds) > 1:
        p.add(
            (*path, kinds[1]),
            f"a stage has exactly one of source:/handler:/sink:, got {' and '.join(kinds)}",
            "split it into two stages joined by to:",
        )
        return
    kind = kinds[0]
    draft.kind = kind
    kpath = (*path, kind)
    draft.ref_line = p.lines.value_line(kpath)
    ref = raw[kind]
    if not isinstance(ref, str):
        p.add(
            kpath,
            f"must be a 'module:attribute' string, got {describe(ref)}",
            f"e.g. {kind}: mymodule:my_function",
        )
    elif not _REF.match(ref.strip()):
        p.add(kpath, f"{ref!r} is not of the form module:attribute", f"e.g. {kind}: {_suggest_ref(ref)}")
    else:
        draft.ref = ref.strip()


def _batch(p: Problems, path: tuple[Any, ...], raw: dict[Any, Any], draft: StageDraft) -> None:
    """batch: N fixes the events per batch; batch: {min, max} bounds the adaptive size."""
    if isinstance(raw.get("batch"), dict):
        bpath = (*path, "batch")
        braw = raw["batch"]
        p.unknown_keys(bpath, braw, ("min", "max"), "batch")
        hint = f"batch: {{min: 8, max: 128}} bounds the adaptive batch size, 1..{MAX_BATCH}"
        lo = p.integer((*bpath, "min"), braw.get("min", 1), minimum=1, maximum=MAX_BATCH, hint=hint)
        hi = p.integer((*bpath, "max"), braw.get("max", MAX_BATCH), minimum=1, maximum=MAX_BATCH, hint=hint)
        if lo is not None and hi is not None:
            if hi < lo:
                p.add((*bpath, "max"), f"must be >= min ({lo}), got {hi}", f"e.g. batch: {{min: {lo}, max: {lo * 8}}}")
            else:
                draft.batch_bounds = (lo, hi)
    elif raw.get("batch") is not None:
        draft.batch = p.integer(
            (*path, "batch"),
            raw["batch"],
            minimum=1,
            maximum=MAX_BATCH,
            hint=f"batch is events per batch (1..{MAX_BATCH}), or {{min, max}} to bound the adaptive size",
        )


def _reliability(p: Problems, path: tuple[Any, ...], raw: dict[Any, Any], draft: StageDraft) -> None:
    """on_error, timeout_s, max_events, max_rss_mb, dedupe, max_event_bytes."""
    for key in ("on_error", "timeout_s", "max_events", "max_rss_mb") if draft.kind == "source" else ():
        if raw.get(key) is not None:
            p.add(
                (*path, key),
                f"{key} applies to handlers and sinks, not to source {draft.name!r}",
                "a source that raises stops the run; move the work into a handler",
            )
    if raw.get("on_error") is not None and draft.kind != "source":
        draft.on_error = _on_error(p, (*path, "on_error"), raw["on_error"])
    if raw.get("timeout_s") is not None and draft.kind != "source":
        draft.timeout_s = p.positive_float(
            (*path, "timeout_s"), raw["timeout_s"], "timeout_s is the longest one handler call may run, e.g. 30"
        )
    if raw.get("max_events") is not None and draft.kind != "source":
        draft.max_events = p.integer(
            (*path, "max_events"), raw["max_events"], hint="a worker is replaced after this many events, e.g. 10000"
        )
    if raw.get("max_rss_mb") is not None and draft.kind != "source":
        draft.max_rss_mb = p.integer(
            (*path, "max_rss_mb"), raw["max_rss_mb"], hint="a worker is replaced past this memory (MiB), e.g. 1024"
        )
    if raw.get("max_event_bytes") is not None:
        draft.max_event_bytes = p.integer(
            (*path, "max_event_bytes"),
            raw["max_event_bytes"],
            maximum=wire.MAX_EVENT_BYTES,
            hint=f"the largest output event in bytes, at most {wire.MAX_EVENT_BYTES}",
        )
    if raw.get("dedupe") is not None:
        value = raw["dedupe"]
        if not isinstance(value, bool):
            p.add((*path, "dedupe"), f"must be true or false, got {describe(value)}", "e.g. dedupe: true")
        elif value and draft.kind != "sink":
            p.add(
                (*path, "dedupe"),
                f"dedupe applies to sinks, and {draft.name!r} is a {draft.kind or 'stage'}",
                "set dedupe: true on the sink that writes the outputs",
            )
        else:
            draft.dedupe = value


def _on_error(p: Problems, path: tuple[Any, ...], raw: Any) -> OnErrorSpec:
    hint = "e.g. on_error: {retry: 2, backoff_s: 0.5, then: dead_letter, budget: 0.9} (then: dead_letter | skip | fail)"
    if isinstance(raw, str):
        only: Any = p.choice(path, raw, ON_ERROR_THEN)
        return OnErrorSpec(then=only) if only else OnErrorSpec()
    if not isinstance(raw, dict):
        p.add(path, f"must be a mapping or one of {' | '.join(ON_ERROR_THEN)}, got {describe(raw)}", hint)
        return OnErrorSpec()
    p.unknown_keys(path, raw, ON_ERROR_KEYS, "on_error")
    retry = 0
    if raw.get("retry") is not None:
        retry = p.integer((*path, "retry"), raw["retry"], minimum=0, maximum=100, hint=hint) or 0
    backoff = 0.0
    if raw.get("backoff_s") is not None:
        b = raw["backoff_s"]
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 3600:
            p.add((*path, "backoff_s"), f"must be a number of seconds in 0..3600, got {describe(b)}", hint)
        else:
            backoff = float(b)
    then: Any = "dead_letter"
    if raw.get("then") is not None:
        then = p.choice((*path, "then"), raw["then"], ON_ERROR_THEN) or "dead_letter"
    budget = DEFAULT_ERROR_BUDGET
    if raw.get("budget") is not None:
        b = raw["budget"]
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 1:
            p.add(
                (*path, "budget"),
                f"must be a fraction of the stage's events in 0..1, got {describe(b)}",
                "e.g. budget: 0.5 stops the run once more than half of the events failed; 1 never stops it",
            )
        else:
            budget = float(b)
    return OnErrorSpec(retry=retry, backoff_s=backoff, then=then, budget=budget)


def _params(p: Problems, path: tuple[Any, ...], raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        p.add(
            path,
            f"must be a mapping of keyword params, got {describe(raw)}",
            "e.g. params: {size: 128, quality: 90}",
        )
        return {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not k.isidentifier():
            p.add(
                (*path, k),
                f"param name {k!r} is not a valid keyword",
                "param names are Python identifiers (letters, digits, _)",
            )
        else:
            out[k] = v
    return out


def _workers(p: Problems, path: tuple[Any, ...], raw: Any, kind: StageKind | None) -> tuple[WorkersSpec, bool]:
    if raw is None:
        return (WorkersSpec(1, None) if kind == "handler" else WorkersSpec(1, 1)), True
    spec: WorkersSpec | None = None
    if isinstance(raw, dict):
        p.unknown_keys(path, raw, WORKERS_KEYS, "workers")
        lo: int | None = 1
        if raw.get("min") is not None:
            lo = p.integer((*path, "min"), raw["min"], hint="e.g. min: 1")
        hi: int | None = lo
        unbounded = raw.get("max") == "auto"  # up to the controller's core budget
        if raw.get("max") is not None and not unbounded:
            hi = p.integer((*path, "max"), raw["max"], hint="e.g. max: 8, or max: auto")
        if unbounded:
            spec = WorkersSpec(lo, None) if lo is not None else None
        elif lo is not None and hi is not None:
            if hi < lo:
                p.add((*path, "max"), f"must be >= min ({lo}), got {hi}", f"raise max to at least {lo}, or lower min")
            else:
                spec = WorkersSpec(lo, hi)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        n = p.integer(path, raw, hint="workers: N runs exactly N processes, N >= 1")
        if n is not None:
            spec = WorkersSpec(n, n)
    else:
        p.add(
            path,
            f"must be an integer N or a mapping {{min: N, max: M}}, got {describe(raw)}",
            "e.g. workers: 4 or workers: {min: 1, max: 8}",
        )
    if spec is None:
        return WorkersSpec(1, None), False
    if kind == "source" and spec != WorkersSpec(1, 1):
        p.add(
            path,
            f"a source always runs in one process, got workers {bounds_text(spec)}",
            "remove workers: from the source; put the work in a handler after it",
        )
        return WorkersSpec(1, 1), False
    return spec, True


def _queue(p: Problems, path: tuple[Any, ...], raw: Any) -> QueueSpec:
    if raw is None:
        return QueueSpec(per_producer=True)
    if not isinstance(raw, dict):
        p.add(path, f"must be a mapping, got {describe(raw)}", "e.g. queue: {capacity: 256, on_full: block}")
        return QueueSpec(per_producer=True)
    p.unknown_keys(path, raw, QUEUE_KEYS, "queue")
    capacity = DEFAULT_CAPACITY_EVENTS
    if raw.get("capacity") is not None:
        capacity = (
            p.integer((*path, "capacity"), raw["capacity"], hint="capacity is the queue bound in events, >= 1")
            or capacity
        )
    on_full: Any = "block"
    if raw.get("on_full") is not None:
        on_full = p.choice((*path, "on_full"), raw["on_full"], ON_FULL_CHOICES) or "block"
    max_bytes = DEFAULT_MAX_BYTES
    if raw.get("max_bytes") is not None:
        max_bytes = p.size((*path, "max_bytes"), raw["max_bytes"]) or max_bytes
    return QueueSpec(capacity=capacity, on_full=on_full, max_bytes=max_bytes, per_producer=raw.get("capacity") is None)


def _edges(p: Problems, path: tuple[Any, ...], raw: Any) -> tuple[list[EdgeAt], bool]:
    if raw is None:
        return [], True
    if isinstance(raw, str):
        return [(Edge(raw), path)], True
    if isinstance(raw, dict):
        edge = _keyed_edge(p, path, raw)
        return ([edge] if edge else []), edge is not None
    if isinstance(raw, list):
        out: list[EdgeAt] = []
        ok = True
        seen: set[str] = set()
        for i, item in enumerate(raw):
            ipath = (*path, i)
            got: EdgeAt | None
            if isinstance(item, str):
                got = (Edge(item), ipath)
            elif isinstance(item, dict):
                got = _keyed_edge(p, ipath, item)
            else:
                p.add(
                    ipath,
                    f"must be a stage name or {{stage: NAME, key: FIELD}}, got {describe(item)}",
                    "e.g. to: [resize, {stage: stats, key: user}]",
                )
                got = None
            if got is None:
                ok = False
            elif got[0].stage in seen:
                p.add(ipath, f"stage {got[0].stage!r} is listed twice", "list each next stage once")
            else:
                seen.add(got[0].stage)
                out.append(got)
        return out, ok
    p.add(
        path,
        f"must be a stage name, a list of stage names, or {{stage: NAME, key: FIELD}}, got {describe(raw)}",
        "e.g. to: resize",
    )
    return [], False


def _keyed_edge(p: Problems, path: tuple[Any, ...], raw: dict[Any, Any]) -> EdgeAt | None:
    p.unknown_keys(path, raw, EDGE_KEYS, "an edge")
    stage = raw.get("stage")
    if stage is None:
        p.add(path, "an edge mapping needs stage:", "e.g. {stage: count, key: user}")
        return None
    if not isinstance(stage, str):
        p.add((*path, "stage"), f"must be a stage name, got {describe(stage)}", "e.g. {stage: count, key: user}")
        return None
    key = raw.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        p.add(
            (*path, "key"),
            f"must be the name of an event field, got {describe(key)}",
            "e.g. {stage: count, key: user}",
        )
        return None
    when = None
    if raw.get("when") is not None:
        w = raw["when"]
        hint = "e.g. {stage: thumbnail, when: {route: thumbnail}}: events whose route field is 'thumbnail'"
        if not isinstance(w, dict) or not w:
            p.add((*path, "when"), f"must be a mapping of event fields to values, got {describe(w)}", hint)
            return None
        bad = [k for k, v in w.items() if not isinstance(k, str) or isinstance(v, dict | list)]
        if bad:
            p.add((*path, "when"), f"field {bad[0]!r}: compare a string field with a plain value", hint)
            return None
        when = tuple(sorted(w.items()))
    return Edge(stage, key, when), (*path, "stage")


def check_handlers(p: Problems, drafts: dict[str, StageDraft], base_dir: Path) -> None:
    """Import every structurally valid stage's ref and check it against its params: their
    names, then their values where the stage can tell (`param_problems`)."""
    todo = [d for d in drafts.values() if d.kind is not None and d.ref and d.name not in p.bad_stages]
    if not todo:
        return
    stage_mod.add_import_paths([base_dir, Path.cwd()])
    for d in todo:
        assert d.kind is not None
        message = stage_mod.check_ref(d.kind, d.ref, dict(d.params))
        if message is not None:
            path = ("stages", d.name, d.kind)
            line = None if p.is_overridden(path) else d.ref_line
            p.add(path, message, _ref_hint(d.ref, message, base_dir), line=line)
            continue
        hint = "docs/stages.md says what it accepts" if d.ref.startswith("stages.") else "see what its setup() accepts"
        for name, text in param_problems(d.ref, dict(d.params)).items():
            if name:
                p.add(("stages", d.name, "params", name), text, hint)
            else:
                p.add(("stages", d.name, "params"), text, "fix check_params in the stage's module")


def param_problems(ref: str, params: dict[str, Any]) -> dict[str, str]:
    """What the stage at `ref` (imported already) says is wrong with the values of
    `params`, by param name ("": the params as a whole): a stage class (or function)
    may define ``check_params(**params)`` returning that, so that a value its setup()
    would refuse is refused before anything starts. It runs where the topology is
    validated, not where the workers run."""
    check = getattr(stage_mod.load_ref(ref), "check_params", None)
    if not callable(check):
        return {}
    try:
        problems = check(**params)
    except Exception as exc:  # a check that fails is a problem of the stage's code
        return {"": f"{ref}: check_params raised {type(exc).__name__}: {exc}"}
    if not isinstance(problems, dict):
        return {"": f"{ref}: check_params returned a {type(problems).__name__}, not a dict of param problems"}
    return {str(k) if k in params else "": str(v) for k, v in problems.items()}


# -- hints -----------------------------------------------------------------------------


def _suggest_ref(ref: str) -> str:
    ref = ref.strip()
    if ":" not in ref and "." in ref:
        module, _, attr = ref.rpartition(".")
        if module and attr:
            return f"{module}:{attr}"
    return "mymodule:my_function"


def _ref_hint(ref: str, message: str, base_dir: Path) -> str:
    """A hint for a `check_ref` message: a did-you-mean for a missing attribute, where
    modules are searched for a missing module."""
    module_name, _, attr = ref.partition(":")
    if " failed to import: No module named " in message:
        missing = message.rsplit("No module named ", 1)[1].strip("'").split(".")[0]
        return f"install {missing!r} in the environment sedamp runs in, {sys.prefix}, or fix the import"
    if " failed to import: " in message:
        return "fix the error in that file; `python -c 'import " + module_name + "'` shows the traceback"
    if message.startswith("cannot import module"):
        return (
            f"make sure {module_name!r} is importable: put it next to the topology "
            f"({base_dir}) or in the current directory, or install it"
        )
    if "has no attribute" in message:
        module = sys.modules.get(module_name)
        if module is not None and "." not in attr:
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=1)
            if close:
                return f"did you mean {module_name}:{close[0]}?"
        return f"check the attribute name in {module_name!r}"
    if "not a function or class" in message:
        return "point it at a function or a class"
    if "does not accept these params" in message:
        return "make params: match the function's keyword arguments"
    if "has neither handle() nor handle_batch()" in message or "__iter__" in message:
        return "see sedamp.runtime.stage for what a stage class must define"
    return "fix the error in the module, then retry"
