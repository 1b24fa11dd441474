"""The life and death of every runtime child process: at start, tie its life to its
parent, leave Ctrl-C to the controller, and name itself for `ps`; later, exit when the
parent is gone, and report why it cannot go on (FATAL to the controller) before it
exits with EXIT_CHILD_FAILED (`storage_failed` when the cause is a file the run keeps
that cannot be written). Not a process role: each role module calls these."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import zmq

from sedamp.errors import StorageError, WireError
from sedamp.runtime import sockets, wire
from sedamp.runtime.pauses import Pauses
from sedamp.runtime.stage import Failure

_PR_SET_PDEATHSIG = 1

# How often a child checks that its parent (the controller) is still alive when the
# kernel cannot tell it (non-Linux). Short enough that an orphan is gone within a second.
PARENT_CHECK_PERIOD_S = 0.5

# Exit code of a child that cannot go on because of user code: a stage's setup raised,
# or a source failed to start or raised while reading. The controller has its FATAL.
EXIT_CHILD_FAILED = 3

# Exit code of a worker that stopped itself because its memory ran far past max_rss_mb
# inside a batch (`sedamp.runtime.guard`): the controller names that as how it died.
EXIT_MEMORY = 4

# How long a finished worker or source waits for the controller to acknowledge its
# DONE before it closes its sockets anyway.
DONE_ACK_TIMEOUT_S = 5.0


# The signal by which the controller stops a worker at once (a second Ctrl-C, the drain
# deadline passed) before it kills what is left: Python code in the worker sees
# `Interrupted` raised wherever it is, so the cleanup of user code runs (a `finally`, a
# temporary file removed) instead of dying mid-write with SIGKILL. Not SIGINT or
# SIGTERM: those reach the whole process group from a terminal or a service manager,
# and a worker must live through them to drain as the controller directs.
INTERRUPT_SIGNAL = signal.SIGUSR1
# The exit code of a worker stopped that way (128 + SIGINT, as `sedamp run` exits).
EXIT_INTERRUPTED = 130


class Interrupted(BaseException):
    """Raised in a worker by INTERRUPT_SIGNAL. A BaseException, so that a handler's
    ``except Exception`` does not take it for a failure of the event."""


# How soon `Interrupted` is raised again when it first landed where it cannot propagate.
REINTERRUPT_S = 0.01


def raise_interrupted(signum: int, frame: object) -> None:
    """The handler of INTERRUPT_SIGNAL in a worker: raise `Interrupted`, once."""
    signal.signal(INTERRUPT_SIGNAL, signal.SIG_IGN)
    raise Interrupted


def take_interrupts() -> None:
    """Call in a worker: raise `Interrupted` where INTERRUPT_SIGNAL finds its code. A
    signal handler runs wherever the interpreter is, and that may be a finalizer (a
    `__del__`, a weakref callback such as the one of an import's module lock), whose
    exceptions Python cannot propagate: it prints them as "Exception ignored in ..."
    and goes on. Such an `Interrupted` is not printed; the signal comes again a moment
    later, until it lands in code that unwinds."""
    signal.signal(INTERRUPT_SIGNAL, raise_interrupted)
    sys.unraisablehook = _unraisable


def _unraisable(unraisable: Any) -> None:
    if not isinstance(unraisable.exc_value, Interrupted):
        sys.__unraisablehook__(unraisable)
        return
    signal.signal(INTERRUPT_SIGNAL, raise_interrupted)
    again = threading.Timer(REINTERRUPT_S, os.kill, (os.getpid(), INTERRUPT_SIGNAL))
    again.daemon = True
    again.start()


def ignore_signal(signum: int, frame: object) -> None:
    """A signal handler that does nothing (see `become_child`)."""


def become_child(parent_pid: int) -> None:
    """Call first in a child: ignore SIGINT and SIGTERM and die with the parent. The
    controller coordinates Ctrl-C, which the terminal sends to the whole process group,
    and SIGTERM, which `timeout`, service managers and container runtimes often send to
    the whole group too (`kill -TERM -PGID`): a child that died of it could not drain as
    the controller directs. The controller stops children by message, or by SIGKILL.
    SIGTERM gets a handler that does nothing rather than SIG_IGN, which programs the
    user's code starts would inherit (exec resets handlers, not ignored signals)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, ignore_signal)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_NAME = 15


def set_name(name: str) -> None:
    """Name this process as `ps -o comm`, `top` and psutil show it (15 bytes on Linux);
    forked children would otherwise all look like their launcher."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover
            pass


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid


def exit_if_orphaned(parent_pid: int) -> None:
    """Exit at once (code 1) if the parent is gone: nobody would read our results."""
    if not parent_alive(parent_pid):
        os._exit(1)


def wait_for_stop(ctl: zmq.Socket[Any], timeout_s: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait up to `timeout_s` for the controller's STOP on `ctl` (its answer to DONE);
    whether it came. Anything else that arrives meanwhile is dropped."""
    for _ in _polls(timeout_s, clock):
        if ctl.poll(100):
            for frames in sockets.drain(ctl):
                try:
                    if wire.parse(frames).kind == wire.STOP:
                        return True
                except WireError:
                    pass
    return False


def await_answer(ctl: zmq.Socket[Any], timeout_s: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait up to `timeout_s` for anything to arrive on `ctl` (the controller's answer to
    a source's DONE), leaving it there; whether it came."""
    return any(ctl.poll(100) for _ in _polls(timeout_s, clock))


def _polls(timeout_s: float, clock: Callable[[], float]) -> Iterator[None]:
    """A round per poll of at most 0.1 s, until `timeout_s` has passed, not counting the
    time this process was not running (a pause of the whole job, `pauses`): else a
    pause in the wait would end it before the answer, already on its way, is read."""
    pauses = Pauses(clock())
    deadline = pauses.last + timeout_s
    while True:
        now = clock()
        deadline += pauses.observe(now, 0.1)
        if now >= deadline:
            return
        yield


def report_fatal(ctl: zmq.Socket[Any], message: str, fail: Failure, pid: int) -> None:
    """Tell the controller this process cannot go on (it stops the run), with the
    failure as data; the control socket lingers up to 2 s to let the FATAL out."""
    ctl.send_multipart(
        wire.simple(wire.FATAL, {"message": message, "type": fail.type, "traceback": fail.traceback, "pid": pid})
    )
    ctl.close(linger=2000)


def fail_now(
    ctl: zmq.Socket[Any],
    others: Iterable[zmq.Socket[Any]],
    ctx: zmq.Context[Any],
    message: str,
    fail: Failure,
    pid: int,
    code: int,
) -> NoReturn:
    """Report FATAL and exit with `code` at once, in the middle of the work: every
    other socket is dropped, and the context waits only for the FATAL to go out."""
    report_fatal(ctl, message, fail, pid)
    for sock in others:
        sock.close(linger=0)
    ctx.term()  # waits for the control socket's linger (2 s at most)
    os._exit(code)


def storage_failed(
    ctl: zmq.Socket[Any], others: Iterable[zmq.Socket[Any]], ctx: zmq.Context[Any], who: str, exc: StorageError
) -> NoReturn:
    """A file the run must keep (the dead letters, the journal) cannot be written: going
    on would lose what it records, so report FATAL (the message names the file and the
    errno; no traceback, it adds nothing) and exit with EXIT_CHILD_FAILED."""
    fail = Failure("StorageError", str(exc), "")
    fail_now(ctl, others, ctx, f"{who}: {exc}", fail, os.getpid(), EXIT_CHILD_FAILED)
