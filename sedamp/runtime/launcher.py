"""Runs in the launcher process of a local run: ``python -m sedamp.runtime.launcher REQ_FD REP_FD``.

Reads:  start requests from the controller, one JSON line each on REQ_FD:
        ``{"name": ..., "role": "queue" | "worker" | "source", "config": {...}}``,
        or ``{"op": "stdout_to_stderr"}`` (children started after it print to stderr),
        or ``{"op": "log_level", "level": "INFO"}`` (children started after it log at it).
        ``{"op": "held", "pids": [PID, ...]}``: the controller holds a pidfd of each.
Writes: on REP_FD, ``{"started": PID}`` for each request (or ``{"error": MESSAGE}``),
        and ``{"exit": PID, "code": CODE}`` when a child ends (CODE < 0: killed by
        signal -CODE).

A child is reaped only once the controller holds its pidfd ("held"): until then it
stays a zombie, whose pid no other process can take. A worker whose setup() raises
exits within milliseconds; reaped at once, its pid was gone before the controller could
open a pidfd for it (ESRCH, a traceback instead of the setup's one-line error), or
worse, could have been given to an unrelated process that the controller then watched.

Starting a fresh interpreter for every process costs ~150 ms of CPU (interpreter start
plus importing zmq, msgpack and sedamp); with a dozen processes on a small machine that
is most of a short job. The launcher imports the runtime once and forks a child per
request in a few milliseconds. It is single-threaded and never creates a ZeroMQ
context, so forking it is safe; children build their own sockets. Children are tied
to the launcher (PR_SET_PDEATHSIG), and the launcher to the controller, so killing the
controller still leaves no process behind. User code is imported only in the children.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import traceback
from typing import Any

from sedamp.runtime import child, lifeline


def main() -> None:
    req_fd, rep_fd, controller_pid = (int(x) for x in sys.argv[1:4])
    lifeline.become_child(controller_pid)
    _log_at(os.environ.get("SEDAMP_LOG_LEVEL"))  # a level in the environment; -v comes as an op
    # preload what every child needs, so a fork starts with it imported
    import sedamp.runtime.queue  # noqa: F401
    import sedamp.runtime.source  # noqa: F401
    import sedamp.runtime.worker  # noqa: F401

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lifeline.ignore_signal)  # like its children: the controller stops it
    buf = b""
    me = os.getpid()
    held: set[int] = set()  # children the controller holds a pidfd of: the ones reaped

    def reply(obj: dict[str, Any]) -> None:
        os.write(rep_fd, (json.dumps(obj) + "\n").encode())

    while True:
        try:
            ready, _, _ = select.select([req_fd, wake_r], [], [], lifeline.PARENT_CHECK_PERIOD_S)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            os.read(wake_r, 4096)
        _reap(reply, held)
        if not lifeline.parent_alive(controller_pid):
            os._exit(1)
        if req_fd not in ready:
            continue
        chunk = os.read(req_fd, 1 << 20)
        if not chunk:  # the controller closed the pipe: the run is over
            _reap(reply, held)
            os._exit(0)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            spec = json.loads(line)
            if spec.get("op") == "stdout_to_stderr":  # `sedamp run --json`: stdout is the summary's
                os.dup2(2, 1)
                continue
            if spec.get("op") == "log_level":  # the command line's -v, parsed after it started
                _log_at(spec.get("level"))
                continue
            if spec.get("op") == "held":
                held.update(spec["pids"])
                _reap(reply, held)
                continue
            spec["config"]["parent_pid"] = me  # children watch the launcher
            try:
                pid = os.fork()
            except OSError as exc:
                reply({"error": f"cannot fork {spec['name']}: {exc}"})
                continue
            if pid == 0:
                _run_child(spec, (req_fd, rep_fd, wake_r, wake_w))
            reply({"started": pid})


def _log_at(level: str | None) -> None:
    """Log at `level` (a name; anything else is ignored), here and in every child forked
    from now on, which inherit the handler and SEDAMP_LOG_LEVEL (for what user code starts)."""
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return
    os.environ["SEDAMP_LOG_LEVEL"] = level
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="sedamp[%(process)d]: %(levelname)s: %(message)s", stream=sys.stderr)
    root.setLevel(level)


def _run_child(spec: dict[str, Any], fds: tuple[int, ...]) -> None:
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in fds:
            os.close(fd)
        lifeline.set_name(spec["name"])
        entry, cfg = child.config_of(spec["role"], spec["config"])
        entry(cfg)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except lifeline.Interrupted:  # stopped at once as it was leaving on its own: nothing to say
        code = lifeline.EXIT_INTERRUPTED
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(reply: Any, held: set[int]) -> None:
    """Reap and report the children in `held` that have ended (see the module's doc)."""
    for pid in list(held):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours (cannot happen): nothing to report
            held.discard(pid)
            continue
        if done:
            held.discard(pid)
            reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    main()
