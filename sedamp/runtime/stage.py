"""The user-facing stage API and the loading of user code. Pure: starts no process.

A user writes plain Python and names it in YAML as ``module:attribute``:

handler, a function
    ``def f(event, **params)`` returns one event, ``None`` (drop it), or several events
    as a generator (``yield``) or ``sedamp.Many([...])``. A list or tuple returned is ONE
    event (a MessagePack array), never a fan-out: that keeps list-valued events possible
    and the meaning of a return value obvious.
handler, a class
    ``setup(**params)`` once per worker process (if the class has no ``setup``, the params
    go to ``__init__``), ``handle(event)`` with the same return convention, an optional
    ``handle_batch(events)`` returning one result per input event, an optional
    ``finish()`` returning events to emit once the input has ended (aggregations), and an
    optional ``teardown()``.
source
    a function ``f(**params)`` returning an iterable of events (if it has ``len()``, that is
    the total shown as progress), or a class with ``setup(**params)``, ``__iter__`` and an
    optional ``total()``. On Ctrl-C the events it read that wait in queues are dropped (a
    re-run does them); a source whose events someone waits for (an HTTP request) sets
    ``drain_on_interrupt = True``, and every event it read is then handled first. A
    source class may also have ``stats()``: a small dict of plain values about itself
    (``listening``: the URL it serves; ``answered``: its answers by status), sent to the
    controller with its counters every period.
sink
    a function ``f(event, **params)`` or a class with ``setup``, ``handle`` (or
    ``handle_batch``) and ``teardown()``, which runs once at the end so it can flush.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedamp.observe.words import plural

__all__ = [
    "IDLE",
    "Failure",
    "HandlerRunner",
    "Many",
    "SourceRunner",
    "check_ref",
    "enter_run",
    "load_ref",
    "on_interrupt",
    "outputs_of",
    "run_dir",
]

log = logging.getLogger(__name__)

# Set in every worker and source process of a run to the run directory (absolute):
# where stage code keeps files that matter for one run only (stages.files:WriteFiles
# notes there which outputs the run wrote). Unset outside a run.
RUN_DIR_VAR = "SEDAMP_RUN_DIR"


class _Idle:
    """``yield sedamp.IDLE`` from a source: "nothing more for now". The source process
    sends what it has read at once instead of waiting to fill a batch (a source fed by a
    network, e.g. an HTTP front end, yields it after waiting briefly for input)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "sedamp.IDLE"


IDLE = _Idle()


class Many:
    """Several events returned by a handler: ``return sedamp.Many([a, b, c])``."""

    __slots__ = ("events",)

    def __init__(self, events: Iterable[Any]) -> None:
        self.events = list(events)

    def __repr__(self) -> str:
        return f"Many({self.events!r})"


@dataclass(frozen=True)
class Failure:
    """An exception raised by user code, as data that can cross processes."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        return cls(
            type=type(exc).__qualname__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
        )


_PLAIN = frozenset({dict, list, str, int, float, bytes, bool, tuple})
_PLAIN_OR_NONE = _PLAIN | {type(None)}
# Most events one handler call may emit: a generator is stopped past it and the event
# fails, instead of holding every output in memory (10 million small outputs took 5 GB).
MAX_OUTPUTS_PER_EVENT = 1_000_000
# With a `tick` (a worker's memory guard), a generator is read this many outputs at a
# time, the tick called between: few enough that large outputs cannot pile up far past
# a check, many enough that the call costs nothing next to the outputs.
OUTPUTS_PER_TICK = 16


class Rest(list[Any]):
    """The last outputs of a generator whose earlier outputs were sent as it ran
    (`spill`): `first` is how many went before them, so that they are named after them."""

    first: int = 0


# A generator's outputs are sent while it runs (`spill`) once this many are held, or
# about SPILL_BYTES of them: a handler that splits a file into records or a video into
# frames is consumed as its outputs are sent, under the queues' bounds, instead of
# being held whole in the worker.
SPILL_EVENTS = 256
SPILL_BYTES = 8 * 1024 * 1024

Spill = Callable[[int, list[Any], int], None]  # (event index, outputs, how many went before)


def outputs_of(
    result: Any, tick: Callable[[], None] | None = None, spill: Spill | None = None, index: int = 0
) -> list[Any]:
    """Normalise a handler's return value to the list of events it emits. `tick`, if
    given, is called every OUTPUTS_PER_TICK outputs of a generator; `spill`, if given,
    takes a generator's outputs as they come (see SPILL_EVENTS): the list returned is
    then a `Rest`."""
    if result is None:
        return []
    if type(result) in _PLAIN:  # the common case, decided without an ABC check
        return [result]
    if isinstance(result, Many):
        return result.events
    if isinstance(result, Iterator):  # generators and other iterators: fan-out
        if spill is not None:
            return _stream(result, tick, spill, index)
        if tick is None:
            out = list(itertools.islice(result, MAX_OUTPUTS_PER_EVENT + 1))
        else:
            out = _drain(result, tick)
        if len(out) > MAX_OUTPUTS_PER_EVENT:
            raise ValueError(
                f"the handler emitted more than {MAX_OUTPUTS_PER_EVENT:,} events for one event; "
                "split the work over several input events"
            )
        return out
    return [result]


def _drain(it: Iterator[Any], tick: Callable[[], None]) -> list[Any]:
    """Up to MAX_OUTPUTS_PER_EVENT + 1 outputs of `it`, calling `tick` between chunks."""
    out: list[Any] = []
    while len(out) <= MAX_OUTPUTS_PER_EVENT:
        part = list(itertools.islice(it, OUTPUTS_PER_TICK))
        out += part
        tick()
        if len(part) < OUTPUTS_PER_TICK:
            break
    return out


def _stream(it: Iterator[Any], tick: Callable[[], None] | None, spill: Spill, index: int) -> list[Any]:
    """Read a generator OUTPUTS_PER_TICK outputs at a time, handing them to `spill` once
    SPILL_EVENTS or about SPILL_BYTES are held; returns the rest, as a `Rest`."""
    out: list[Any] = []
    sent = 0
    while True:
        part = list(itertools.islice(it, OUTPUTS_PER_TICK))
        out += part
        if tick is not None:
            tick()
        if sent + len(out) > MAX_OUTPUTS_PER_EVENT:
            raise ValueError(
                f"the handler emitted more than {MAX_OUTPUTS_PER_EVENT:,} events for one event; "
                "split the work over several input events"
            )
        if len(part) < OUTPUTS_PER_TICK:
            break
        if len(out) >= SPILL_EVENTS or (part and _bytes_of(part[-1]) * len(out) >= SPILL_BYTES):
            spill(index, out, sent)
            sent += len(out)
            out = []
    rest = Rest(out)
    rest.first = sent
    return rest


def _bytes_of(event: Any) -> int:
    """A cheap estimate of an event's size: its strings, byte strings and arrays, a
    little way into containers (as `wire.size_floor`, arrays counted too)."""
    nbytes = getattr(event, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(event, str | bytes | bytearray):
        return len(event)
    if isinstance(event, dict):
        return sum(_bytes_of(v) for v in itertools.islice(event.values(), 64) if not isinstance(v, dict | list))
    return 0


class _UserModules:
    """Finds top-level user modules in the directories a run names, consulted after
    every other finder: after sys.path and after the finders of installed packages
    (an editable install's comes after sys.path, so appending to sys.path would still
    let the current directory shadow it). A user package's submodules are found
    through the package itself. A meta path finder needs only `find_spec`: not
    subclassing importlib.abc keeps importlib.resources (and tempfile, shutil, ...)
    out of every process's start."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if path is not None or not self.paths:
            return None
        return importlib.machinery.PathFinder.find_spec(name, self.paths)


_USER_MODULES = _UserModules()


def add_import_paths(paths: Sequence[Path | str]) -> None:
    """Make user modules importable from `paths` (the topology's directory, then the
    current one), searched after everything installed: a module planted in the current
    directory can never shadow an installed package (such as `stages`)."""
    for p in [str(Path(p).resolve()) for p in paths]:
        if p not in _USER_MODULES.paths:
            _USER_MODULES.paths.append(p)
    if _USER_MODULES not in sys.meta_path:
        sys.meta_path.append(_USER_MODULES)


def enter_run(run_dir: str, stage_dir: str = "") -> None:
    """Tell the stage code of this process (and what it starts) which run it is part of,
    and make `stage_dir`, the topology file's folder, its current directory: every
    relative path a topology gives its stages resolves against that folder. Called by a
    worker or source process before it loads user code."""
    if run_dir:
        os.environ[RUN_DIR_VAR] = run_dir
    if stage_dir:
        try:
            os.chdir(stage_dir)
        except OSError as exc:  # e.g. a cluster node without the topology's folder
            log.warning("cannot enter the topology's folder %s (%s): relative paths resolve against %s",
                        stage_dir, exc.strerror or exc, os.getcwd())  # fmt: skip


def run_dir() -> Path | None:
    """The directory of the run this process is part of; None outside a run."""
    value = os.environ.get(RUN_DIR_VAR)
    return Path(value) if value else None


def load_ref(ref: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted). Raises ImportError or
    AttributeError with a message naming what is missing."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{ref!r} is not of the form module:attribute")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


_ON_INTERRUPT: list[Callable[[], None]] = []


def on_interrupt(cleanup: Callable[[], None]) -> None:
    """Register `cleanup` (once), called in a worker that is stopped at once (a second
    Ctrl-C, the drain deadline passed) after its user code has unwound and before it
    exits: for what a stage keeps open across events, such as the temporary file a sink
    streams into (``stages.files.AtomicFile`` registers one that removes its own)."""
    if cleanup not in _ON_INTERRUPT:
        _ON_INTERRUPT.append(cleanup)


def run_interrupt_cleanups() -> None:
    """Call every `on_interrupt` cleanup; one that raises does not stop the others."""
    for cleanup in _ON_INTERRUPT:
        try:
            cleanup()
        except Exception:
            traceback.print_exc()


def drains_on_interrupt(ref: str) -> bool:
    """Whether the source at `ref` asks that Ctrl-C handle every event it read
    (``drain_on_interrupt = True``) instead of dropping what waits in queues."""
    try:
        return bool(getattr(load_ref(ref), "drain_on_interrupt", False))
    except Exception:  # not importable here: the source process will say why
        return False


def import_problem(module_name: str) -> str | None:
    """When module `module_name` exists but raises while it is imported (it imports a
    package that is not installed, it has a syntax error...): ``FILE:LINE failed to
    import: the error``, FILE relative to the current directory when under it. None
    when it imports, or is not there at all (which `check_ref` says otherwise)."""
    if not module_name or module_name in sys.modules:
        return None
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or module_name == exc.name or module_name.startswith(f"{exc.name}."):
            return None  # the module itself, or its package, is missing
        return _failed_import(module_name, f"No module named {exc.name!r}", exc)
    except SyntaxError as exc:
        return _failed_import(module_name, f"SyntaxError: {exc.msg}", exc)
    except Exception as exc:
        return _failed_import(module_name, f"{type(exc).__name__}: {exc}", exc)
    return None


def _failed_import(module_name: str, error: str, exc: BaseException) -> str | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.exists(spec.origin):
        return None
    origin = os.path.abspath(spec.origin)
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == origin]
    if isinstance(exc, SyntaxError) and exc.filename and os.path.abspath(exc.filename) == origin:
        lines.append(exc.lineno)
    rel = os.path.relpath(origin)
    where = origin if rel.startswith("..") else rel
    return f"{where}{f':{lines[-1]}' if lines and lines[-1] else ''} failed to import: {error}"


def check_ref(kind: str, ref: str, params: dict[str, Any]) -> str | None:
    """Import `ref` and check it can serve as a `kind` stage with `params`.

    Returns None when it can, else a one-line message saying what is wrong."""
    broken = import_problem(ref.partition(":")[0])
    if broken is not None:
        return broken
    try:
        obj = load_ref(ref)
    except ModuleNotFoundError as exc:
        return f"cannot import module {exc.name!r} for {ref!r}"
    except Exception as exc:  # a bad attribute, a malformed ref
        return f"cannot load {ref!r}: {type(exc).__name__}: {exc}"
    if not callable(obj):
        return f"{ref!r} is a {type(obj).__name__}, not a function or class"
    if inspect.isclass(obj):
        if kind == "source":
            if not hasattr(obj, "__iter__"):
                return f"source class {ref!r} has no __iter__ method"
        elif not (hasattr(obj, "handle") or hasattr(obj, "handle_batch")):
            return f"{kind} class {ref!r} has neither handle() nor handle_batch()"
        target = getattr(obj, "setup", None) or obj
        return _check_params(ref, target, params, leading=0)
    return _check_params(ref, obj, params, leading=0 if kind == "source" else 1)


def _check_params(ref: str, func: Callable[..., Any], params: dict[str, Any], leading: int) -> str | None:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None  # builtins without a signature: nothing to check
    args: list[Any] = [None] * leading
    try:
        if inspect.ismethod(func) or not inspect.isclass(func):
            bound_params = list(sig.parameters.values())
            if bound_params and bound_params[0].name == "self":
                args = [None, *args]
        sig.bind(*args, **params)
    except TypeError as exc:
        return f"{ref!r} does not accept these params: {exc}"
    return None


def _mismatch(results: int, events: int) -> ValueError:
    return ValueError(f"handle_batch returned {plural(results, 'result')} for {plural(events, 'event')}")


def _instantiate(cls: type, params: dict[str, Any]) -> Any:
    if hasattr(cls, "setup"):
        obj = cls()
        obj.setup(**params)
        return obj
    return cls(**params)


def _one_arg(obj: Any, func: Callable[..., Any] | None, params: dict[str, Any]) -> Callable[[Any], Any] | None:
    """The handler as a call of one event: a class's bound `handle`, or the function
    with its params bound once (not a ``**params`` dict built per event)."""
    if obj is not None:
        return getattr(obj, "handle", None)
    if func is None:
        return None
    return functools.partial(func, **params) if params else func


class Singles(list[Any]):
    """What ``handle_batch(..., singles=True)`` returns when the handler returned one
    plain value for every event, the common case of a cheap stage: the values
    themselves, not a list per event (no event failed, was dropped or fanned out), so
    the chain hands them on without a loop of its own."""

    __slots__ = ()


def _call_each(
    call: Callable[[Any], Any], events: Sequence[Any], mark: Any, spill: Spill | None, singles: bool | str
) -> list[Any]:
    """`HandlerRunner.handle_batch` when nothing is called between events (no
    deadline, no memory guard): the loop every cheap stage spends its time in. A
    plain return value becomes its one-event list without a call of `outputs_of`;
    with `singles`, the values are kept as they are while every event gives one
    (with ``singles="sink"``, None counts as one too: a sink's outputs are not used)."""
    plain = _PLAIN
    start = 0
    out: list[Any] = []
    if singles:
        add = out.append
        kept = _PLAIN_OR_NONE if singles == "sink" else _PLAIN
        for i, ev in enumerate(events):
            if mark is not None:
                mark[0] = i
            try:
                r = call(ev)
                if type(r) not in kept:  # none, several, or a generator: the general form from here
                    first: Any = outputs_of(r, None, spill, i)
                    break
            except Exception as exc:
                first = Failure.from_exception(exc)
                break
            add(r)
        else:
            return Singles(out)
        out = [[v] for v in out]
        out.append(first)
        start = len(out)
    append = out.append
    for i in range(start, len(events)):
        if mark is not None:
            mark[0] = i
        try:
            r = call(events[i])
            append([r] if type(r) in plain else outputs_of(r, None, spill, i))
        except Exception as exc:
            append(Failure.from_exception(exc))
    return out


def _call_batch(
    obj: Any, events: Sequence[Any], at: Any, mark: Any, tick: Callable[[], None] | None, spill: Spill | None
) -> list[Any]:
    """`HandlerRunner.handle_batch` for a class with its own ``handle_batch``: one call
    for all the events, so no single event is blamed for a crash or a raise."""
    if at is not None:
        at(-1, len(events))
    if mark is not None:
        mark[0] = -1
    try:
        results = list(obj.handle_batch(list(events)))
        if len(results) != len(events):
            raise _mismatch(len(results), len(events))
        return [outputs_of(r, tick, spill, i) for i, r in enumerate(results)]
    except Exception as exc:
        fail = Failure.from_exception(exc)
        return [fail] * len(events)


class HandlerRunner:
    """Runs a handler or sink in a worker process: set up once, then batches of events.

    `handle_batch` returns, per input event, either the list of output events or a
    `Failure`. User exceptions never escape it."""

    def __init__(self, ref: str, params: dict[str, Any]) -> None:
        self.ref = ref
        self.params = dict(params)
        self._obj: Any = None
        self._func: Callable[..., Any] | None = None
        self._call: Callable[[Any], Any] | None = None  # the handler of one event, params bound

    def setup(self) -> None:
        target = load_ref(self.ref)
        if inspect.isclass(target):
            self._obj = _instantiate(target, self.params)
        else:
            self._func = target
        self._call = _one_arg(self._obj, self._func, self.params)

    def handle_batch(
        self,
        events: Sequence[Any],
        at: Callable[[int, int], None] | None = None,
        mark: Any = None,
        tick: Callable[[], None] | None = None,
        spill: Spill | None = None,
        singles: bool | str = False,
    ) -> list[list[Any] | Failure]:
        """Before each call into user code, `at(i, n)` (if given) is called with the
        index of its first event and how many it handles, and ``mark[0] = i`` is set
        (if `mark`, a writable one-item view, is given): that is how the worker's slot
        knows which event is in the handler, and the timeout its deadline. `tick` (if
        given) is called after each event and every few outputs of a generator: the
        worker's memory guard. `spill` (if given) sends a generator's outputs as they
        come (`outputs_of`). With `singles`, the result may be a `Singles`."""
        obj = self._obj
        if obj is not None and hasattr(obj, "handle_batch"):
            return _call_batch(obj, events, at, mark, tick, spill)
        if at is None and tick is None and self._call is not None:  # nothing to call between events
            return _call_each(self._call, events, mark, spill, singles)
        call = self._call
        assert call is not None, "setup() was not called"
        out: list[list[Any] | Failure] = []
        for i, ev in enumerate(events):
            if at is not None:
                at(i, 1)
            if mark is not None:
                mark[0] = i
            try:
                out.append(outputs_of(call(ev), tick, spill, i))
            except Exception as exc:
                out.append(Failure.from_exception(exc))
            if tick is not None:
                tick()
        return out

    @property
    def has_finish(self) -> bool:
        return self._obj is not None and hasattr(self._obj, "finish")

    def finish(self) -> list[Any]:
        """Events a class handler emits once its input has ended (may raise)."""
        if self._obj is not None and hasattr(self._obj, "finish"):
            return outputs_of(self._obj.finish())
        return []

    def teardown(self) -> None:
        if self._obj is not None and hasattr(self._obj, "teardown"):
            self._obj.teardown()


class SourceRunner:
    """Runs a source in the source process: yields its events and knows its total."""

    def __init__(self, ref: str, params: dict[str, Any]) -> None:
        self.ref = ref
        self.params = dict(params)
        self._obj: Any = None
        self._iterable: Iterable[Any] | None = None
        self._stats: Callable[[], Any] | None = None

    def setup(self) -> None:
        target = load_ref(self.ref)
        if inspect.isclass(target):
            self._obj = _instantiate(target, self.params)
            self._iterable = self._obj
            self._stats = getattr(self._obj, "stats", None)
        else:
            self._iterable = target(**self.params)

    def total(self) -> int | None:
        """How many events the source will yield, if it says."""
        if self._obj is not None and hasattr(self._obj, "total"):
            n = self._obj.total()
            return int(n) if n is not None else None
        try:
            return len(self._iterable)  # type: ignore[arg-type]
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Any]:
        assert self._iterable is not None, "setup() was not called"
        return iter(self._iterable)

    def stats(self) -> dict[str, Any] | None:
        """What the source says of itself (its ``stats()``), or None: it has no such
        method, or it raised or gave something else than a dict of MessagePack values
        (logged, and not asked again)."""
        if self._stats is None:
            return None
        import msgpack  # (here: `import sedamp` loads this module, and most commands never pack)

        try:
            value = self._stats()
            if not isinstance(value, dict):
                raise TypeError(f"it returned a {type(value).__name__}, not a dict")
            msgpack.packb(value)  # it travels to the controller
        except Exception:
            log.exception("source %s: stats() failed; it is not asked again", self.ref)
            self._stats = None
            return None
        return value

    def teardown(self) -> None:
        if self._obj is not None and hasattr(self._obj, "teardown"):
            self._obj.teardown()
