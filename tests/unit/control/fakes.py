"""Fakes of the executor and of the controller's links, for driving the roster and the
recorder without processes or sockets."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sedamp.control.roster import Roster, RunState
from sedamp.control.wiring import Wiring
from sedamp.executor.ray import RemoteSlot
from sedamp.runtime import wire
from sedamp.spec import Topology, parse_topology

_pids = itertools.count(10_000)

# a source, a resizable handler pool, a fixed sink pool
PIPELINE = """
stages:
  src: {source: "m:src", to: work}
  work: {handler: "m:work", workers: {min: 1, max: 4}, to: out}
  out: {sink: "m:out"}
"""


class FakeProc:
    """A process that is 'running' until the test ends it with `exit`."""

    local = False  # psutil is not asked about it
    pending = False
    unplaceable = False
    slot: Any = None  # None: the roster maps the slot file it made (if any)

    def __init__(self, name: str, role: str, config: Any) -> None:
        self.name = name
        self.role = role
        self.config = config
        self.reason: str | None = None
        self._pid = next(_pids)
        self._code: int | None = None
        self._joined = False
        self.killed = False

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def sentinel(self) -> int:
        """Unique, and only ever handed to FakeLinks; -1 once joined, as a local
        process's pidfd is closed when it has been joined."""
        return -1 if self._joined else self._pid

    @property
    def exitcode(self) -> int | None:
        return self._code

    def exit(self, code: int) -> None:
        self._code = code

    def is_alive(self) -> bool:
        return self._code is None

    def terminate(self) -> None:
        self.exit(-15)

    def interrupt(self) -> None:
        pass

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)

    def join(self, timeout: float | None = None) -> None:
        if self._code is not None:
            self._joined = True


class FakeExecutor:
    """`elsewhere`: workers run on another host, their slots read by the executor (a
    `RemoteSlot` the test answers for, as the Ray executor's actors do)."""

    remote = False

    def __init__(self, elsewhere: bool = False) -> None:
        self.started: list[FakeProc] = []
        self.requests: list[list[str]] = []  # the names asked for in each start_many
        self.elsewhere = elsewhere
        self.helpers: list[int] = []  # pids of the executor's own processes (a launcher)

    def start(self, name: str, role: str, config: Any) -> FakeProc:
        proc = FakeProc(name, role, config)
        if self.elsewhere and role == "worker":
            proc.slot = RemoteSlot(stale_s=5.0)
        self.started.append(proc)
        return proc

    def start_many(self, requests: Sequence[tuple[str, str, Any]]) -> list[FakeProc]:
        self.requests.append([name for name, _, _ in requests])
        return [self.start(name, role, config) for name, role, config in requests]

    def cores(self) -> int:
        return 2

    def worker_slots(self) -> int | None:
        return None

    def helper_pids(self) -> list[int]:
        return self.helpers

    def close(self) -> None:
        pass


class FakeLinks:
    """Records what the roster sends, as (identity, kind name, fields)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[Any]]] = []
        self.watched: set[int] = set()

    def send(self, identity: str, frames: list[bytes]) -> None:
        msg = wire.parse(frames)
        self.sent.append((identity, wire.KIND_NAMES[msg.kind], list(msg.fields)))

    def forget(self, identity: str) -> None:
        pass

    def watch(self, fd: int) -> None:
        self.watched.add(fd)

    def unwatch(self, fd: int) -> None:
        self.watched.remove(fd)  # KeyError for one not watched, as zmq's Poller.unregister

    def kinds(self, identity: str | None = None) -> list[str]:
        return [kind for who, kind, _ in self.sent if identity is None or who == identity]


def topology(text: str = PIPELINE) -> Topology:
    return parse_topology(text, file="t.yaml", base_dir=Path("."), check_handlers=False)


def roster(
    top: Topology | None = None, slot_dir: Path | None = None, elsewhere: bool = False
) -> tuple[Roster, FakeExecutor, FakeLinks]:
    """A roster of `top` (the PIPELINE by default) wired to fakes, its queues started."""
    top = top or topology()
    executor, links = FakeExecutor(elsewhere), FakeLinks()
    r = Roster(top, RunState(), links, executor)
    r.wiring = Wiring(
        endpoints={n: f"ipc:///nowhere/q{i}" for i, n in enumerate(top.stages)},
        control_endpoint="ipc:///nowhere/ctl",
        dead_letters="/nowhere/dead.jsonl",
        import_paths=(),
        period_s=0.5,
        parent_pid=1,
        slot_dir=slot_dir,
    )
    r.start_queues({n: 1 for n in top.stages if top.stages[n].kind != "source"})
    return r, executor, links
