"""The Python API: load, build and run a topology from code.

`Pipeline` builds a topology in code. It makes the same plain tree a YAML file would
hold and validates it with `sedamp.spec.build_topology`, so a pipeline obeys every
rule of the YAML format and fails with the same messages (placed at
``Pipeline('NAME')`` instead of ``file:line``). Worker processes import stages by
name, so a stage given as a Python object is turned into its ``module:qualname``
reference, and only objects that can be imported by that name are accepted.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sedamp.control.controller import run_topology
from sedamp.control.summary import RunOptions, Summary
from sedamp.executor import EXECUTORS, open_executor
from sedamp.executor.base import Executor
from sedamp.executor.local import LocalExecutor
from sedamp.runtime import journal
from sedamp.spec import StageKind, Topology, build_topology, load_topology

__all__ = ["Pipeline", "load", "run"]

# The keyword arguments of Pipeline.source/handler/sink that are stage keys, not params:
# every key of a YAML stage but the kind and params (tests/test_api.py checks the two agree)
STAGE_OPTIONS = (
    "to", "workers", "queue", "batch", "group", "on_error", "timeout_s", "max_events", "max_rss_mb", "dedupe",
    "max_event_bytes", "fuse", "description",
)  # fmt: skip

StageRef = str | Callable[..., Any]
"""A stage: a ``"module:attribute"`` string, or a function or class defined at the top
level of an importable module."""


def load(path: str | Path, overrides: Sequence[str] = (), check_handlers: bool = True) -> Topology:
    """Load and validate a topology file; raises TopologyError listing every problem."""
    return load_topology(path, overrides=overrides, check_handlers=check_handlers)


def run(
    topology: str | Path | Topology | Pipeline,
    overrides: Sequence[str] = (),
    *,
    workdir: str | Path | None = None,
    cores: int | None = None,
    drain_timeout_s: float | None = None,
    executor: str | Executor | None = None,
    address: str | None = None,
    metrics_path: str | Path | None = None,
    resume: bool = False,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    trace_sample: float = 0.0,
) -> Summary:
    """Run a topology to completion and return its summary (``.exit_code`` says how it
    ended, with the codes of `sedamp run`).

    `topology` is a YAML file, a `Pipeline` or an already loaded `Topology`.
    `overrides` are ``--set`` strings (``"count.workers=2"``), applied before validation;
    a loaded `Topology` is already validated, so it takes none (pass its path or its
    `Pipeline` instead). Raises `TopologyError` when the topology is invalid.

    `executor` says where the workers run: ``"local"`` (processes on this machine) or
    ``"ray"`` (actors on the Ray cluster at `address`, default ``controller.address``,
    else RAY_ADDRESS, else the cluster started on this machine); by default the
    topology's ``controller.executor``. Raises `sedamp.errors.ExecutorError` when Ray is
    missing or no cluster answers. An executor opened already
    (`sedamp.executor.open_executor`) is run on as it is, and closed with the run.

    `metrics_path` gets one JSON line of measurements per period; `on_tick` is called
    with each of those records (and the final one). With `resume`, the events the sinks
    of earlier runs of this topology wrote are skipped (every sink must be resumable).
    With `trace_sample` > 0 that share of events is traced: each process writes its
    records under the run directory's ``traces/`` (`sedamp.observe.trace` merges them).

    `workdir` (default ``.sedamp`` in the topology's folder, where its stages run: see
    `sedamp.spec.paths`) holds the run directories and journals. Ctrl-C during the call
    drains and stops the run as `sedamp run` does. Raises `sedamp.errors.StorageError`
    when no run directory can be made in `workdir` (nothing is started); a file that
    cannot be written later is the summary's `error`."""
    if isinstance(topology, Topology) and overrides:
        raise ValueError(
            f"run({topology.name!r}): overrides apply before validation, and this Topology is validated "
            "already: pass the topology's path or its Pipeline instead"
        )
    if isinstance(executor, str) and executor not in EXECUTORS:
        raise ValueError(f"run(executor={executor!r}): the executor is one of {', '.join(EXECUTORS)}")
    top, run_on = _prepare(topology, overrides, executor, address, resume)
    options = RunOptions(
        workdir=Path(workdir) if workdir is not None else None,
        cores=cores,
        drain_timeout_s=drain_timeout_s,
        executor=run_on,
        metrics_path=None if metrics_path is None else Path(metrics_path),
        resume=resume,
        on_tick=on_tick,
        trace_sample=trace_sample,
    )
    return run_topology(top, options)


def _prepare(
    topology: str | Path | Topology | Pipeline,
    overrides: Sequence[str],
    executor: str | Executor | None,
    address: str | None,
    resume: bool,
) -> tuple[Topology, Executor]:
    """The validated topology and the executor to run it on (on a failure, whatever was
    opened is closed again)."""
    if executor is not None and not isinstance(executor, str):
        try:
            if address is not None:
                raise ValueError(f"run(address={address!r}): the executor is open already; give it its address")
            return _checked(_validated(topology, overrides), None, None, resume), executor
        except BaseException:
            executor.close()
            raise
    local = LocalExecutor()  # boots while the topology loads
    try:
        top = _checked(_validated(topology, overrides), executor, address, resume)
    except BaseException:
        local.close()
        raise
    return top, open_executor(executor or top.controller.executor, address or top.controller.address, local)


def _validated(topology: str | Path | Topology | Pipeline, overrides: Sequence[str]) -> Topology:
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, Pipeline):
        return topology.build(overrides)
    return load(topology, overrides)


def _checked(top: Topology, executor: str | None, address: str | None, resume: bool) -> Topology:
    """`top`, once the options that depend on it are known to make sense for it."""
    if address is not None and (executor or top.controller.executor) != "ray":
        raise ValueError(f"run(address={address!r}): the address applies to the ray executor (executor='ray')")
    problem = journal.resume_problem(top) if resume else None
    if problem is not None:
        raise ValueError(f"run(resume=True): {problem}")
    return top


class Pipeline:
    """A topology built in code, stage by stage, with the keys of the YAML format::

        p = sedamp.Pipeline("shout")
        p.source("read", "shout:Lines", path="input.txt", to="shout")
        p.handler("shout", shout.shout, suffix="!!", workers={"min": 1, "max": 4}, to="save")
        p.sink("save", shout.Save, out="shout.txt")
        summary = sedamp.run(p, overrides=["shout.workers=2"])

    `source`, `handler` and `sink` add a stage (in order; they return the pipeline, so
    calls chain). The stage is a ``"module:attribute"`` string or a function or class
    defined at the top level of a module that worker processes can import (from
    `base_dir`, the current directory or the installed packages; not the ``__main__``
    script). Their keyword arguments are the stage's params, except the stage options
    (`to`, `workers`, `queue`, `batch`, `group`, `on_error`, `timeout_s`,
    `max_events`, `max_rss_mb`, `dedupe`, `max_event_bytes`, `fuse`, `description`), which take
    the values their YAML keys take: ``to="next"``, ``to=["a", "b"]``,
    ``to={"stage": "count", "key": "word"}``, ``workers=4``,
    ``workers={"min": 1, "max": "auto"}``, ``on_error={"retry": 2, "then": "skip"}``...
    A param whose name is also an option goes in ``params={...}``.

    `controller` takes the keys of the YAML ``controller:`` section. `build` validates
    (every problem at once, as a `TopologyError`); `sedamp.run` builds and runs.
    Params travel to the worker processes as plain data: str, int, float, bool, None,
    lists, tuples (received as lists), dicts with string keys, and paths (as str).
    `base_dir` (default: the current directory) is importable by the workers, is
    ``${TOPOLOGY_DIR}`` in overrides, and is where the stages run and relative paths
    resolve (as a topology file's folder is).
    """

    def __init__(self, name: str, *, description: str | None = None, base_dir: str | Path | None = None) -> None:
        self.name = name
        self.description = description
        self.base_dir = Path(base_dir if base_dir is not None else os.getcwd()).resolve()
        self._stages: dict[str, dict[str, Any]] = {}
        self._controller: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, stages={list(self._stages)!r})"

    def source(
        self,
        name: str,
        ref: StageRef,
        /,
        *,
        to: str | Sequence[str | Mapping[str, Any]] | Mapping[str, Any] | None = None,
        workers: int | Mapping[str, Any] | None = None,
        queue: Mapping[str, Any] | None = None,
        batch: int | Mapping[str, Any] | None = None,
        group: str | None = None,
        on_error: str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        max_events: int | None = None,
        max_rss_mb: int | None = None,
        dedupe: bool | None = None,
        max_event_bytes: int | None = None,
        fuse: str | None = None,
        description: str | None = None,
        params: Mapping[str, Any] | None = None,
        **more_params: Any,
    ) -> Pipeline:
        """Add a source stage: a function ``f(**params)`` returning an iterable of events,
        or a class with ``setup(**params)`` and ``__iter__``. It needs `to`; `batch` is
        the events per message it sends. The options are those of the YAML stage keys."""
        options = {key: value for key, value in locals().items() if key in STAGE_OPTIONS}
        return self._add("source", name, ref, options, params, more_params)

    def handler(
        self,
        name: str,
        ref: StageRef,
        /,
        *,
        to: str | Sequence[str | Mapping[str, Any]] | Mapping[str, Any] | None = None,
        workers: int | Mapping[str, Any] | None = None,
        queue: Mapping[str, Any] | None = None,
        batch: int | Mapping[str, Any] | None = None,
        group: str | None = None,
        on_error: str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        max_events: int | None = None,
        max_rss_mb: int | None = None,
        dedupe: bool | None = None,
        max_event_bytes: int | None = None,
        fuse: str | None = None,
        description: str | None = None,
        params: Mapping[str, Any] | None = None,
        **more_params: Any,
    ) -> Pipeline:
        """Add a handler stage: ``f(event, **params)`` returning one event, None or
        several (a generator or `sedamp.Many`), or a class with ``setup(**params)`` and
        ``handle(event)``. It needs `to`. The options are those of the YAML stage keys."""
        options = {key: value for key, value in locals().items() if key in STAGE_OPTIONS}
        return self._add("handler", name, ref, options, params, more_params)

    def sink(
        self,
        name: str,
        ref: StageRef,
        /,
        *,
        to: str | Sequence[str | Mapping[str, Any]] | Mapping[str, Any] | None = None,
        workers: int | Mapping[str, Any] | None = None,
        queue: Mapping[str, Any] | None = None,
        batch: int | Mapping[str, Any] | None = None,
        group: str | None = None,
        on_error: str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        max_events: int | None = None,
        max_rss_mb: int | None = None,
        dedupe: bool | None = None,
        max_event_bytes: int | None = None,
        fuse: str | None = None,
        description: str | None = None,
        params: Mapping[str, Any] | None = None,
        **more_params: Any,
    ) -> Pipeline:
        """Add a sink stage: ``f(event, **params)``, or a class with ``setup(**params)``,
        ``handle(event)`` and ``teardown()`` (flush there). A sink has no `to`. The
        options are those of the YAML stage keys."""
        options = {key: value for key, value in locals().items() if key in STAGE_OPTIONS}
        return self._add("sink", name, ref, options, params, more_params)

    def controller(self, **options: Any) -> Pipeline:
        """Set keys of the ``controller:`` section (``cores``, ``period_s``, ``policy``,
        ``drain_timeout_s``, ``transport``, ...); later calls add to earlier ones."""
        self._controller.update(_plain(options, f"Pipeline({self.name!r}).controller"))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The topology as the plain tree its YAML file would hold."""
        tree: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            tree["description"] = self.description
        tree["stages"] = {name: dict(stage) for name, stage in self._stages.items()}
        if self._controller:
            tree["controller"] = dict(self._controller)
        return tree

    def build(self, overrides: Sequence[str] = (), *, check_handlers: bool = True) -> Topology:
        """Validate the pipeline into a `Topology`, after applying `overrides` (``--set``
        strings such as ``"count.workers=2"``). With `check_handlers`, every stage is
        imported and checked against its params, as ``sedamp validate`` does.

        Raises `TopologyError` listing every problem found."""
        return build_topology(
            self.to_dict(),
            file=f"Pipeline({self.name!r})",
            base_dir=self.base_dir,
            overrides=overrides,
            check_handlers=check_handlers,
        )

    def _add(
        self,
        kind: StageKind,
        name: str,
        ref: StageRef,
        options: dict[str, Any],
        params: Mapping[str, Any] | None,
        more_params: dict[str, Any],
    ) -> Pipeline:
        where = f"Pipeline({self.name!r}).{kind}({name!r})"
        if name in self._stages:
            raise ValueError(f"{where}: stage {name!r} is defined already; give each stage its own name")
        both = sorted(set(params or {}) & set(more_params))
        if both:
            raise ValueError(f"{where}: param {both[0]!r} is given twice, in params= and as a keyword; keep one")
        stage: dict[str, Any] = {kind: ref_of(ref, where)}
        all_params = {**(params or {}), **more_params}
        if all_params:
            stage["params"] = _plain(all_params, f"{where} params")
        stage.update(_plain({k: v for k, v in options.items() if v is not None}, where))
        self._stages[name] = stage
        return self


def ref_of(obj: StageRef, where: str = "stage") -> str:
    """The ``module:attribute`` reference of a stage given as a string (returned as is)
    or as a function or class. Raises TypeError or ValueError, naming `where`, for an
    object worker processes could not import by name."""
    if isinstance(obj, str):
        return obj
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise TypeError(
            f"{where}: got {type(obj).__name__} {obj!r}; give a function or class defined at the top level "
            "of a module, or a 'module:attribute' string"
        )
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if getattr(obj, "__name__", "") == "<lambda>":
        raise ValueError(
            f"{where}: a lambda has no name worker processes can import; define a function at the top level "
            "of a module and pass it (or its 'module:function' string)"
        )
    if "<locals>" in qualname:
        raise ValueError(
            f"{where}: {qualname} is defined inside a function, so worker processes cannot import it by name; "
            "define it at the top level of a module"
        )
    if module is None or module == "__main__":
        raise ValueError(
            f"{where}: {qualname} is defined in the __main__ script, which worker processes do not import; move "
            "it into a module of its own and import it from there (or pass its 'module:attribute' string)"
        )
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if target is not obj:
        raise ValueError(
            f"{where}: {obj!r} is not reachable as {module}:{qualname} (e.g. a decorator replaced it); pass the "
            "'module:attribute' string worker processes should import"
        )
    return f"{module}:{qualname}"


def _plain(value: Any, where: str) -> Any:
    """`value` as the plain data a YAML file would hold (tuples as lists, paths as str),
    or TypeError naming the first value that cannot travel to the workers."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string; use string keys")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"{where}: {type(value).__name__} {value!r} cannot travel to the worker processes; use str, int, float, "
        "bool, None, lists and dicts (e.g. pass a path or a name, and load the object in the stage's setup)"
    )
