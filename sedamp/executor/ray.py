"""Workers on a Ray cluster: ``sedamp run TOPOLOGY --executor ray --address ADDRESS``.

The controller, the queues and the sources stay where ``sedamp run`` runs (on the
local executor); every stage worker becomes a Ray actor asking for one CPU, placed by
Ray on any node of the cluster. The actor is a small supervisor: it starts the worker
as a child process on its node (``python -m sedamp.runtime.child``, the very worker loop of a
local run), waits for it and returns its exit code. The worker connects to its queues
and the controller over TCP with the run's CURVE keys, which travel in its
configuration; it dies with its actor (PR_SET_PDEATHSIG), and Ray ends the actors when
the driver (``sedamp run``) ends, so no process outlives the run on any node.

The worker runs in its own process, not in the actor's, so that user code meets the
same process as locally: its own signal handlers, its own main thread, no Ray threads.

A worker's end reaches the controller as the sentinel of its `RayProc` (a pipe made
readable by a thread waiting on the actor). An actor that dies, or whose node is lost,
ends its worker too: the controller treats it like any dead worker, so its leases go
back to the queue and a replacement is started, on whatever node Ray picks.

Hang detection is the same as for a local worker. The actor makes the worker's slot
(`sedamp.runtime.slot`) on its own node, and the `RayProc` asks the actor for it every
period: a `RemoteSlot` holds the answer, its deadline moved to the controller's clock.
The controller reads that view as it reads a local slot: it kills (the actor, and the
worker with it) a worker whose handler call is past ``timeout_s`` or that is silent
outside user code, renews the leases of one inside user code, and blames the event in
its handler when it dies. A view the actor has not refreshed for a while no longer
says the worker is inside user code.

What stays on the controller's machine: the dead-letter file and the journal are
written by the workers at paths under the run's workdir, so on a cluster of several
machines the workdir must be on a filesystem every node mounts at the same path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sedamp.errors import ExecutorError
from sedamp.executor.base import Proc
from sedamp.executor.local import LocalExecutor
from sedamp.runtime.slot import Slot

log = logging.getLogger("sedamp.ray")

# How long Ray may take to place a worker (start its actor) before it counts as dead.
PLACE_TIMEOUT_S = 60.0
# How long to wait for the cluster's address to answer before `ray.init`, which would
# otherwise retry for minutes.
CONNECT_TIMEOUT_S = 5.0
NAMESPACE = "sedamp"
# The actor is asked for its worker's slot every period; a view older than this many
# periods (and at least STALE_MIN_S) no longer counts as evidence that the worker is
# inside user code (its actor does not answer either).
STALE_PERIODS = 10
STALE_MIN_S = 3.0


def machine_id() -> str:
    """Names this machine: hosts (or containers) with the same id share files and pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


class WorkerHost:
    """The Ray actor: supervises one worker process on the node Ray placed it on, and
    answers for the worker's slot, which it makes on that node (`run` and `slot` run
    on two threads of the actor)."""

    def __init__(self) -> None:
        self._slot: Slot | None = None
        self._lock = threading.Lock()

    def where(self) -> str:
        return machine_id()

    def run(self, name: str, config: dict[str, Any]) -> int:
        config["parent_pid"] = os.getpid()  # the worker dies with this actor
        tmp = tempfile.mkdtemp(prefix="sedamp-slot-")  # mode 0700
        with self._lock:
            self._slot = Slot(os.path.join(tmp, "slot"), create=True)
        config["slot_path"] = self._slot.path
        try:
            cmd = [sys.executable, "-P", "-m", "sedamp.runtime.child", "worker", name]  # -P: no cwd on sys.path
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"role": "worker", "config": config}).encode())
            proc.stdin.close()
            return proc.wait()
        finally:
            with self._lock:
                self._slot.close()
                self._slot = None
            shutil.rmtree(tmp, ignore_errors=True)

    def slot(self) -> tuple[float | None, int, int, float] | None:
        """The worker's slot now, its deadline as seconds from now (None: no deadline),
        and the seconds it has been on the batch in hand; None before the worker starts."""
        with self._lock:
            if self._slot is None:
                return None
            deadline, lease, position = self._slot.read()
            in_batch = self._slot.in_batch_s()
        return (deadline - time.monotonic() if deadline > 0.0 else None), lease, position, in_batch


class RemoteSlot:
    """A worker's slot on another node, as its actor last told it: `read` gives what
    `Slot.read` would, the deadline moved to this machine's monotonic clock. A view not
    refreshed for `stale_s` says the worker is in no batch (lease -1): nobody answered
    for it, so it is not known to be inside user code."""

    def __init__(self, stale_s: float) -> None:
        self.stale_s = stale_s
        self._view: tuple[float, int, int] = (0.0, -1, -1)
        self._since = 0.0  # when the batch in hand was taken, on this machine's clock (0.0: none)
        self._at = time.monotonic()

    def update(self, answer: tuple[float | None, int, int, float]) -> None:
        left, lease, position, in_batch = answer
        now = time.monotonic()
        self._view = (now + left if left is not None else 0.0, lease, position)
        self._since = now - in_batch if in_batch > 0.0 else 0.0
        self._at = now

    def read(self) -> tuple[float, int, int]:
        deadline, lease, position = self._view
        if time.monotonic() - self._at > self.stale_s:
            return deadline, -1, -1
        return deadline, lease, position

    def in_batch_s(self, now: float | None = None) -> float:
        """As `Slot.in_batch_s`, from the last view (0.0 once it is stale)."""
        t = time.monotonic() if now is None else now
        if not self._since or t - self._at > self.stale_s:
            return 0.0
        return max(0.0, t - self._since)

    def busy_s(self) -> float | None:
        """Not carried by the view: the controller reads the worker's STATS instead."""
        return None

    def waits(self, now: float | None = None) -> tuple[float, float] | None:
        """Not carried by the view: the controller reads the worker's STATS instead."""
        return None

    def overdue(self, now: float | None = None) -> float:
        deadline = self._view[0]
        if deadline <= 0.0:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - deadline)

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass


class RayProc:
    """A worker started as a Ray actor. Its pid is the worker's (reported when it
    registers with the controller); `local` is known once Ray has placed it; `slot` is
    refreshed every period from the actor."""

    def __init__(self, name: str, actor: Any, executor: RayExecutor, config: dict[str, Any]) -> None:
        import ray

        self.name = name
        self.local = False
        self.reason: str | None = None
        self.unplaceable = False
        self.period_s = float(config["period_s"])
        self.slot = RemoteSlot(max(STALE_MIN_S, STALE_PERIODS * self.period_s))
        self._actor = actor
        self._code: int | None = None
        self._placed = False
        self._ended = threading.Event()
        self._r, self._w = os.pipe()
        self._where = actor.where.remote()
        self._run = actor.run.remote(name, config)
        self._thread = threading.Thread(target=self._watch, args=(ray, executor.machine), daemon=True, name=name)
        self._thread.start()

    def _watch(self, ray: Any, machine: str) -> None:
        code = 1
        try:
            try:
                where = ray.get(self._where, timeout=PLACE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                self.reason = f"could not be placed: Ray found no free CPU for it within {PLACE_TIMEOUT_S:.0f} s"
                self.unplaceable = True
                return
            self.local = where == machine
            self._placed = True
            code = self._supervise(ray)
        except ray.exceptions.RayActorError as exc:
            code = -9
            self.reason = f"was lost with its Ray actor ({_first_line(exc)})"
        except Exception as exc:  # e.g. the driver lost the cluster
            self.reason = f"was lost: Ray said {type(exc).__name__}: {_first_line(exc)}"
        finally:
            self._code = code
            self._placed = True
            try:
                ray.kill(self._actor, no_restart=True)  # frees its CPU at once
            except Exception:  # noqa: S110 - already gone
                pass
            os.write(self._w, b"x")  # before _ended: join() closes the pipe once _ended is set
            self._ended.set()

    def _supervise(self, ray: Any) -> int:
        """Wait for the worker's exit code, asking its actor for its slot every period."""
        while True:
            done, _ = ray.wait([self._run], timeout=self.period_s)
            if done:
                return int(ray.get(self._run))
            try:
                answer = ray.get(self._actor.slot.remote(), timeout=self.period_s)
            except ray.exceptions.GetTimeoutError:
                continue  # the view ages; the next period asks again
            if answer is not None:
                self.slot.update(answer)

    @property
    def pid(self) -> int:
        return 0  # the controller learns it from the worker's registration

    @property
    def pending(self) -> bool:
        return not self._placed

    @property
    def sentinel(self) -> int:
        return self._r

    @property
    def exitcode(self) -> int | None:
        return self._code if self._ended.is_set() else None

    def is_alive(self) -> bool:
        return not self._ended.is_set()

    def terminate(self) -> None:
        self.kill()

    def interrupt(self) -> None:
        """Nothing: an actor is not signalled from here; `kill` ends it."""

    def kill(self) -> None:
        """Kill the actor; its worker dies with it (PR_SET_PDEATHSIG)."""
        if self._ended.is_set():
            return
        import ray

        try:
            ray.kill(self._actor, no_restart=True)
        except Exception:  # noqa: S110 - already gone
            pass

    def join(self, timeout: float | None = None) -> None:
        if self._ended.wait(timeout) and self._r >= 0:
            self._thread.join()
            os.close(self._r)
            os.close(self._w)
            self._r = self._w = -1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayExecutor:
    """Workers as Ray actors (one CPU each); queues and sources on `local`."""

    remote = True

    def __init__(self, address: str | None = None, local: LocalExecutor | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install 'sedamp[ray]'") from None
        target = address or os.environ.get("RAY_ADDRESS") or "auto"
        if target not in ("auto", "local") and not target.startswith("ray://"):
            _check_reachable(target)
        try:
            ray.init(
                address=target,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=True,
                ignore_reinit_error=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorError(f"cannot connect to a Ray cluster at {target}: {_first_line(exc)}") from None
        self._ray = ray
        self._local = local or LocalExecutor()
        self._host = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(WorkerHost)
        self.machine = machine_id()
        self._procs: list[RayProc] = []
        log.info("ray: connected to %s, %d CPUs", target, self.cores())

    def cores(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 0)))

    def worker_slots(self) -> int | None:
        return int(self._ray.cluster_resources().get("CPU", 0))  # one CPU per worker actor

    def helper_pids(self) -> list[int]:
        return self._local.helper_pids()  # the queues' and sources' launcher

    def start(self, name: str, role: str, config: Any) -> Proc:
        if role != "worker":
            return self._local.start(name, role, config)
        data = asdict(config)
        if data.get("curve"):
            data["curve"] = {**data["curve"], "server_secret": ""}  # workers only connect
        # named, so that `ray list actors` (and a test) can tell which worker each actor is
        actor_name = f"{name}:{data.get('token', 0)}@{self.machine.split('/')[0]}:{os.getpid()}"
        # two threads: `run` waits for the worker while `slot` answers for it
        actor = self._host.options(name=actor_name, max_concurrency=2).remote()
        proc = RayProc(name, actor, self, data)
        self._procs = [p for p in self._procs if p.is_alive()]
        self._procs.append(proc)
        return proc

    def start_many(self, requests: Sequence[tuple[str, str, Any]]) -> list[Proc]:
        return [self.start(name, role, config) for name, role, config in requests]

    def close(self) -> None:
        for p in self._procs:
            p.kill()
            p.join(10)
        self._procs.clear()
        self._local.close()
        self._ray.shutdown()


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"the Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ExecutorError(
            f"no Ray cluster answers at {address}: {exc.strerror or exc} (start one with `ray start --head`)"
        ) from None
