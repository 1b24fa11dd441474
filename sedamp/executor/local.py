"""Runs in the controller process: starts runtime processes on this machine.

`LocalExecutor` forks each process from a launcher (`sedamp.runtime.launcher`) that has the
runtime imported already: a process starts in milliseconds instead of the ~150 ms of
CPU a fresh interpreter needs, and no process ever re-imports the user's ``__main__``
module (so a script calling ``sedamp.run()`` needs no ``if __name__ == "__main__"``
guard). The launcher is started on first use and ended by `close`.

The launcher is the parent of every process of the run and reports their exits. One
that dies takes them with it, and the controller names it (`LaunchError`, and each
process's `reason`). One that is stopped (SIGSTOP) would start nothing and report no
exit while the controller waits on it: whenever the controller waits for it, it checks
that it is not stopped, and kills a stopped one, which is then a launcher that died.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sedamp.runtime.pauses import Pauses

if TYPE_CHECKING:
    from sedamp.executor.base import Proc

# The environment variable that marks every process of a local run (the launcher sets
# nothing: it and its children inherit it from the controller's Popen).
RUN_TOKEN_VAR = "SEDAMP_RUN"
# How long to wait for the launcher's word that a child has started.
LAUNCH_TIMEOUT_S = 30.0
# How often a controller waiting for the launcher checks that it is not stopped.
STOPPED_CHECK_S = 0.1


class LocalProc:
    """A process forked by the launcher. Its pidfd is the sentinel and the handle for
    signals (no risk of signalling a recycled pid); its exit code comes from the
    launcher, which is its parent."""

    local = True
    pending = False
    unplaceable = False
    slot = None  # the controller maps the slot file of a local worker itself

    def __init__(self, name: str, pid: int, executor: LocalExecutor) -> None:
        self.name = name
        self._pid = pid
        self._executor = executor
        self._code: int | None = None
        self._pidfd = os.pidfd_open(pid)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def reason(self) -> str | None:
        """Why it ended when its exit code does not say: the launcher died under it."""
        return self._executor.orphan_reason(self._pid)

    @property
    def sentinel(self) -> int:
        return self._pidfd

    @property
    def exitcode(self) -> int | None:
        if self._code is None:
            self._executor._read_reports(0)
            # taken out of the map at once: a later process may be given the same pid
            self._code = self._executor._exits.pop(self._pid, None)
        return self._code

    def is_alive(self) -> bool:
        if self.exitcode is not None or self._pidfd < 0:
            return False
        ready, _, _ = select.select([self._pidfd], [], [], 0)
        return not ready

    def _signal(self, sig: int) -> None:
        if self._pidfd >= 0 and self.is_alive():
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def interrupt(self) -> None:
        from sedamp.runtime.lifeline import INTERRUPT_SIGNAL

        self._signal(INTERRUPT_SIGNAL)

    def kill(self) -> None:
        """SIGKILL it and what it started. Its children would otherwise outlive it,
        re-parented, until the run ends (a tool a handler ran, the reason the handler
        overran its timeout_s): stopped first, it starts nothing more while they are
        read. One that left it already (a daemon) is the run's end's to kill."""
        if not self.is_alive():
            return
        import psutil  # only here: a kill is rare, and psutil is not on the start path

        self._signal(signal.SIGSTOP)
        try:
            kids = psutil.Process(self._pid).children(recursive=True)
        except psutil.Error:
            kids = []
        self._signal(signal.SIGKILL)
        for kid in kids:
            with contextlib.suppress(psutil.Error):
                kid.kill()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process has ended and its exit code is known."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exitcode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            self._executor._read_reports(STOPPED_CHECK_S if left is None else min(STOPPED_CHECK_S, left))
            if self.exitcode is None:
                self._executor.check_stopped()  # its exit would never be reported
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class LocalExecutor:
    """Starts the launcher at once (it boots in ~100 ms, in parallel with whatever the
    caller does next, e.g. loading the topology)."""

    remote = False

    def __init__(self) -> None:
        self._zygote: subprocess.Popen[bytes] | None = None
        self._req_w = -1
        self._rep_r = -1
        self._buf = b""
        self._exits: dict[int, int] = {}
        self._started: list[int] = []
        self._live: set[int] = set()  # started, no exit reported yet
        self._lost: str | None = None  # how the launcher died, once it has
        self._stopped = False  # it was found stopped, and killed
        self._lost_pid = 0
        self._errors: list[str] = []  # the launcher's word on forks that failed, for `start_many`
        self._orphans: set[int] = set()  # children that died with it (PR_SET_PDEATHSIG)
        self._launch()

    def _launch(self) -> None:
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        # every process of the run, and whatever user code starts, inherits the token:
        # `close` finds them by it, and by the launcher's own process group
        self._token = f"{os.getpid()}-{os.urandom(16).hex()}"
        self._zygote = subprocess.Popen(
            [sys.executable, "-P", "-m", "sedamp.runtime.launcher", str(req_r), str(rep_w), str(os.getpid())],
            pass_fds=(req_r, rep_w),
            stdin=subprocess.DEVNULL,
            env={**os.environ, RUN_TOKEN_VAR: self._token},
            process_group=0,
        )
        os.close(req_r)
        os.close(rep_w)

    def stdout_to_stderr(self) -> None:
        """Make what the processes started from now on print to stdout go to stderr
        (`sedamp run --json` keeps stdout for the summary; the launcher may have been
        started before that was known)."""
        self._op({"op": "stdout_to_stderr"})

    def log_level(self, level: str) -> None:
        """Make the processes started from now on log at `level` (the command line's -v:
        the launcher may have been started before it was parsed)."""
        self._op({"op": "log_level", "level": level})

    def _op(self, op: dict[str, Any]) -> None:
        """Tell the launcher `op` (started now if it was not)."""
        if self._zygote is None:
            self._launch()
        self._write(json.dumps(op).encode() + b"\n")

    def start(self, name: str, role: str, config: Any) -> Proc:
        return self.start_many([(name, role, config)])[0]

    def start_many(self, requests: Sequence[tuple[str, str, Any]]) -> list[Proc]:
        """Ask the launcher for every process at once, then collect their pids: it forks
        them back to back instead of waiting for a round trip each."""
        if self._zygote is None:
            self._launch()
        from dataclasses import asdict

        from sedamp.errors import LaunchError

        lines = [json.dumps({"name": n, "role": role, "config": asdict(cfg)}) + "\n" for n, role, cfg in requests]
        self._write("".join(lines).encode())  # more than a pipe holds for a large pool: the launcher reads on
        # the time this process was not running (the whole job paused: Ctrl-Z) is not
        # the launcher's: its answer may be in the pipe already
        pauses = Pauses(time.monotonic())
        deadline = pauses.last + LAUNCH_TIMEOUT_S
        while len(self._started) < len(requests):
            now = time.monotonic()
            deadline += pauses.observe(now, STOPPED_CHECK_S)
            left = deadline - now
            if self._lost is not None:
                raise LaunchError(
                    f"the process launcher (pid {self._lost_pid}) {self._lost}, and every process of the run with it"
                )
            if left <= 0 or (self._zygote is not None and self._zygote.poll() is not None):
                raise LaunchError(f"the process launcher did not start {requests[len(self._started)][0]}")
            self._read_reports(min(left, STOPPED_CHECK_S))
            if self._errors:  # the first says it; the batch's others are the same cause
                first = self._errors[0]
                self._errors.clear()
                raise LaunchError(first)
            if len(self._started) < len(requests):
                self.check_stopped()
        procs: list[Proc] = []
        for name, _, _ in requests:
            pid = self._started.pop(0)
            self._live.add(pid)
            try:
                procs.append(LocalProc(name, pid, self))
            except ProcessLookupError:  # reaped: only if the launcher died, and its children with it
                self._read_reports(0)
                raise LaunchError(f"{name} (pid {pid}) was gone before it could be watched: the process "
                                  f"launcher (pid {self._zygote.pid if self._zygote else '?'}) "
                                  f"{self._lost or 'is gone'}") from None  # fmt: skip
        # the launcher reaps a child only from now on: until the pidfd was open, a
        # child that ended at once stayed a zombie, its pid its own
        self._write(json.dumps({"op": "held", "pids": [p.pid for p in procs]}).encode() + b"\n")
        return procs

    def _write(self, data: bytes) -> None:
        """Send requests to the launcher; if it is gone, note how it died."""
        try:
            while data:  # a write a signal interrupts part way returns what it wrote
                data = data[os.write(self._req_w, data) :]
        except BrokenPipeError:
            self._read_reports(0)

    def cores(self) -> int:
        from sedamp.control.policy import usable_cores

        return usable_cores()

    def worker_slots(self) -> int | None:
        return None  # processes share the cores; the controller sizes pools to them

    def helper_pids(self) -> list[int]:
        z = self._zygote
        return [z.pid] if z is not None and z.poll() is None else []

    def signal_all(self, sig: int) -> None:
        """Send `sig` to every process of the run: the launcher's process group, which
        is not the terminal's (so Ctrl-C and Ctrl-Z reach the command line alone)."""
        z = self._zygote
        if z is not None and z.poll() is None:  # alive: its pid, and group, not reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(z.pid, sig)

    def _read_reports(self, timeout: float) -> None:
        if self._rep_r < 0:
            return
        ready, _, _ = select.select([self._rep_r], [], [], timeout)
        while ready:
            chunk = os.read(self._rep_r, 65536)
            if not chunk:
                self._launcher_gone()
                break
            self._buf += chunk
            ready, _, _ = select.select([self._rep_r], [], [], 0)
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if "started" in msg:
                self._started.append(msg["started"])
            elif "exit" in msg:
                self._exits[msg["exit"]] = msg["code"]
                self._live.discard(msg["exit"])
            elif "error" in msg:  # raised by `start_many`, not by whoever reads next (a join in `close`)
                self._errors.append(msg["error"])

    def check_stopped(self) -> None:
        """Kill the launcher if it is stopped (SIGSTOP): it would start nothing and
        report no exit while the controller waits. Its end is then read as any death of
        the launcher: every process of the run dies with it, and it is named."""
        z = self._zygote
        if z is None or self._lost is not None or z.poll() is not None:
            return
        import psutil  # only here: the launcher and the command line do not need it

        try:
            stopped = psutil.Process(z.pid).status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return
        if stopped:
            self._stopped = True
            z.kill()
            self._read_reports(STOPPED_CHECK_S)  # its report pipe closes: _launcher_gone

    def orphan_reason(self, pid: int) -> str | None:
        """Why process `pid` ended, if it died with the launcher (else None)."""
        if self._lost is None or pid not in self._orphans:
            return None
        return f"died with the process launcher (pid {self._lost_pid}), which {self._lost}"

    def _launcher_gone(self) -> None:
        """The launcher's end of the report pipe closed: it died (it exits only when
        the controller closes its request pipe). Its children died with it (SIGKILL,
        PR_SET_PDEATHSIG): their exits are known now, not after a wait per child."""
        assert self._zygote is not None
        try:
            code = self._zygote.wait(5)
        except subprocess.TimeoutExpired:  # its pipe closed, yet it lives: stop it
            self._zygote.kill()
            code = self._zygote.wait(5)
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if self._stopped:
            how = "was stopped (SIGSTOP): it could start no process nor report an exit, so the controller killed it"
        self._lost, self._lost_pid = how, self._zygote.pid
        for pid in self._live:
            self._exits.setdefault(pid, -signal.SIGKILL)
            self._orphans.add(pid)
        self._live.clear()
        os.close(self._rep_r)
        self._rep_r = -1

    def close(self) -> None:
        """End the launcher (once every child it started has ended), then every process
        user code started that is still alive: in the launcher's process group, or
        carrying the run's token in its environment (one that left the group)."""
        if self._zygote is None:
            return
        os.close(self._req_w)
        self.check_stopped()  # it would not read that its pipe closed
        try:
            self._zygote.wait(5)
        except subprocess.TimeoutExpired:
            self._zygote.kill()
            self._zygote.wait(5)
        _kill_leftovers(self._zygote.pid, self._token)
        if self._rep_r >= 0:
            os.close(self._rep_r)
        self._rep_r = -1
        self._zygote = None


def _kill_leftovers(pgid: int, token: str) -> None:
    """SIGKILL what a run's user code left behind: the launcher's process group (the
    launcher and the run's processes are gone by now; a subprocess a handler started,
    or a child it forked, is not), and any process carrying the run's token that left
    the group (setsid). Only this user's processes can be read, and only they could
    have inherited the token."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    entry = f"{RUN_TOKEN_VAR}={token}".encode()
    for pid in _carriers(entry):
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already
            continue
        try:  # the pid may have been reused since it was read: check the process the fd holds
            if _environ_has(pid, entry):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)


def _carriers(entry: bytes) -> list[int]:
    """The processes (but this one) whose environment holds `entry` (NAME=VALUE): read
    from /proc directly: ~0.5 ms of every run's end, where psutil took 2-4.5 ms (78
    processes on the machine)."""
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:  # pragma: no cover - Linux only, as the launcher
        return []
    return [int(n) for n in names if n.isdigit() and int(n) != me and _environ_has(int(n), entry)]


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:  # gone, or another user's
        return False
