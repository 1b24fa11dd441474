"""A live queue process on real sockets: protocol, garbage frames, stop, parent death."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from sedamp.executor.base import Proc
from sedamp.executor.local import LocalExecutor
from sedamp.runtime import sockets, wire
from sedamp.runtime.configs import QueueConfig
from tests.conftest import socket_context, wait_until


class Harness:
    """A queue process with this test as its controller."""

    def __init__(self, tmp: Path, capacity: int = 16, period_s: float = 0.05) -> None:
        self.ctx: zmq.Context[Any] = socket_context()
        self.ctl_ep = f"ipc://{tmp}/ctl"
        self.data_ep = f"ipc://{tmp}/q"
        self.ctl = sockets.Sockets(ctx=self.ctx).router(self.ctl_ep)
        cfg = QueueConfig("s", self.data_ep, self.ctl_ep, capacity, 1, period_s, os.getpid())
        self.executor = LocalExecutor()
        self.proc: Proc = self.executor.start("test-queue", "queue", cfg)
        self.stats: dict[str, Any] = {}
        self.rid = self.recv_ctl(wire.REGISTER)[0]

    def recv_ctl(self, kind: int, timeout_s: float = 10) -> tuple[bytes, wire.Message]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ctl.poll(100):
                rid, *frames = self.ctl.recv_multipart()
                m = wire.parse(frames)
                if m.kind in (wire.STATS, wire.DONE):
                    self.stats = m.fields[0]
                if m.kind == kind:
                    return rid, m
        raise AssertionError(f"no {wire.KIND_NAMES[kind]} from the queue")

    def dealer(self, name: str) -> zmq.Socket[Any]:
        s = sockets.Sockets(ctx=self.ctx).dealer(name, self.data_ep)
        return s

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.executor.close()
        self.ctl.close(0)
        self.ctx.term()


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def recv(sock: zmq.Socket[Any], timeout_ms: int = 5000) -> wire.Message:
    assert sock.poll(timeout_ms), "no reply from the queue"
    return wire.parse(sock.recv_multipart())


def test_garbage_is_refused_and_good_traffic_flows(q: Harness) -> None:
    prod = q.dealer("p")
    prod.send_multipart(wire.hello(wire.PRODUCER, -1, 8))
    assert recv(prod).kind == wire.CREDIT
    bad_frames = [
        [b"\xc1"],
        [b"not msgpack at all"],
        [wire.header(99)],
        [wire.header(wire.PUT, 0, 0, [1], [5], 0.0, 0, []), b"xx"],
        [
            wire.header(wire.PUT, 0, 0, [1, 2, 3, 4, 5, 6, 7, 8, 9], list(range(1, 10)), 0.0, 0, []),
            b"\x01" * 9,
        ],  # beyond credit
        [b"\xdd\xff\xff\xff\xff"],
        [],
    ]
    for frames in bad_frames:
        if frames:
            prod.send_multipart(frames)
    refused = 0
    for _ in range(len([f for f in bad_frames if f])):
        m = recv(prod)
        assert m.kind == wire.ERR
        refused += 1
    body, ends = wire.pack_events(["a", "b"])
    prod.send_multipart(wire.put(0, 0, [0, 1], ends, body))
    assert recv(prod).kind == wire.CREDIT
    w = q.dealer("w")
    w.send_multipart(wire.hello(wire.WORKER, 0, 0))
    w.send_multipart(wire.get(10))
    b = recv(w)
    assert b.kind == wire.BATCH and wire.unpack_events(b.bodies, 2) == ["a", "b"]
    wait_until(lambda: q.recv_ctl(wire.STATS) and q.stats.get("refused_frames") == refused, 10, "refusals counted")
    assert q.proc.is_alive()
    prod.close(0)
    w.close(0)


def test_stop_ends_the_process(q: Harness) -> None:
    q.ctl.send_multipart([q.rid, *wire.simple(wire.STOP, 0)])
    q.recv_ctl(wire.DONE)
    q.proc.join(10)
    assert q.proc.exitcode == 0


def test_report_is_answered_with_stats_at_once(tmp_path: Path) -> None:
    """REPORT (the controller's record is due) gets STATS at once, not at the queue's
    next period: STATS a period apart gave records counts up to a period old."""
    h = Harness(tmp_path, period_s=60.0)
    try:
        h.ctl.send_multipart([h.rid, *wire.simple(wire.REPORT)])
        asked = time.monotonic()
        h.recv_ctl(wire.STATS, timeout_s=20)
        assert time.monotonic() - asked < 10  # its own next STATS was a minute away
        assert h.proc.is_alive()
    finally:
        h.close()


def test_close_then_end(q: Harness) -> None:
    w = q.dealer("w")
    w.send_multipart(wire.hello(wire.WORKER, 0, 0))
    w.send_multipart(wire.get(1))
    q.ctl.send_multipart([q.rid, *wire.simple(wire.CLOSE)])
    assert recv(w).kind == wire.END
    w.close(0)


def test_queue_exits_when_its_parent_dies(tmp_path: Path) -> None:
    """The queue's parent here is a throwaway process that starts it and is killed."""
    import subprocess
    import sys

    script = (
        "import os, sys, time\n"
        "from sedamp.executor.local import LocalExecutor\n"
        "from sedamp.runtime.configs import QueueConfig\n"
        f"cfg = QueueConfig('s', 'ipc://{tmp_path}/q', 'ipc://{tmp_path}/ctl', 4, 1, 0.05, os.getpid())\n"
        "p = LocalExecutor().start('q', 'queue', cfg)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait(10)

    def gone() -> bool:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 5, "the orphaned queue to exit")
