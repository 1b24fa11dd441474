"""A live worker process between two queues played by this test (real sockets)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from sedamp.executor.local import LocalExecutor
from sedamp.runtime import sockets, wire
from sedamp.runtime.configs import OutputConfig, WorkerConfig
from sedamp.runtime.deadletter import read_dead_letters
from sedamp.runtime.slot import Slot
from tests.conftest import socket_context, wait_until


def recv(sock: zmq.Socket[Any], kind: int, timeout_s: float = 10) -> tuple[bytes, wire.Message]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            rid, *frames = sock.recv_multipart()
            m = wire.parse(frames)
            if m.kind == kind:
                return rid, m
    raise AssertionError(f"no {wire.KIND_NAMES[kind]} arrived")


def recv_ack(sock: zmq.Socket[Any], timeout_s: float = 10) -> tuple[int, int]:
    """The next lease acknowledged to `sock`, and the kind of message that said so: an
    ACK, or a GET that carries it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            m = wire.parse(sock.recv_multipart()[1:])
            if m.kind == wire.ACK:
                return m.fields[0], m.kind
            if m.kind == wire.GET and m.fields[1]:
                assert len(m.fields[1]) == 1, m.fields
                return m.fields[1][0], m.kind
    raise AssertionError("no acknowledgement arrived")


class LiveWorker:
    """A worker process with this test playing its queues and its controller: `up` is
    its stage queue, `down` the next queue (handlers only), `ctl` the controller."""

    def __init__(self, tmp: Path, kind: str, ref: str, params: dict[str, Any], batch: int, **extra: Any) -> None:
        self.ctx: zmq.Context[Any] = socket_context()
        self.up = sockets.Sockets(ctx=self.ctx).router(f"ipc://{tmp}/up")
        self.down = sockets.Sockets(ctx=self.ctx).router(f"ipc://{tmp}/down") if kind == "handler" else None
        self.ctl = sockets.Sockets(ctx=self.ctx).router(f"ipc://{tmp}/ctl")
        self.dead = tmp / "dead.jsonl"
        cfg = WorkerConfig(
            stage="mid" if kind == "handler" else "sink",
            kind=kind,
            index=0,
            ref=ref,
            params=params,
            input_endpoint=f"ipc://{tmp}/up",
            outputs=(OutputConfig("next", f"ipc://{tmp}/down", None, 1),) if kind == "handler" else (),
            control_endpoint=f"ipc://{tmp}/ctl",
            batch=batch,
            dead_letters=str(self.dead),
            import_paths=(os.getcwd(),),
            period_s=0.1,
            parent_pid=os.getpid(),
            **extra,
        )
        self.executor = LocalExecutor()
        self.proc = self.executor.start(f"test-{kind}", "worker", cfg)

    def __enter__(self) -> LiveWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.executor.close()
        for sock in (self.up, self.down, self.ctl):
            if sock is not None:
                sock.close(0)
        self.ctx.term()


def test_worker_protocol_garbage_and_failures(tmp_path: Path) -> None:
    with LiveWorker(tmp_path, "handler", "tests.integration.teststages:fail_on", {"modulo": 3}, batch=4) as w:
        up, down, ctl, proc, dead = w.up, w.down, w.ctl, w.proc, w.dead
        assert down is not None
        recv(ctl, wire.REGISTER)
        wid, hello = recv(up, wire.HELLO)
        assert hello.fields[0] == wire.WORKER
        _, get = recv(up, wire.GET)
        assert get.fields[0] == 4  # the fixed batch size
        # garbage from "its queue": refused, the worker lives on
        up.send_multipart([wid, b"\xc1garbage"])
        up.send_multipart(
            [wid, wire.header(wire.BATCH, 0, [1, 2], [2], [0.0], 0, []), b"\xc1\xc1"]
        )  # undecodable events
        assert recv_ack(up)[0] == 0
        # a good batch: 0 fails (multiple of 3), 1 and 2 go on
        body, _ = wire.pack_events([{"n": 0}, {"n": 1}, {"n": 2}])
        up.send_multipart([wid, *wire.batch(1, [10, 11, 12], [3], [body])])
        pid_, phello = recv(down, wire.HELLO)
        down.send_multipart([pid_, *wire.credit(10, -1, 1 << 30)])
        _, put = recv(down, wire.PUT)
        assert put.fields[2] == [11, 12]
        assert wire.unpack_events(put.bodies, 2) == [{"n": 1}, {"n": 2}]
        # no ACK before the downstream queue has taken the outputs
        assert not acked_in(within(up, 0.3))
        down.send_multipart([pid_, *wire.credit(0, put.fields[0], 1 << 30)])
        assert recv_ack(up)[0] == 1
        assert proc.is_alive()
        # END: the worker says BYE and DONE, and exits once the controller acknowledges
        up.send_multipart([wid, *wire.simple(wire.END)])
        cid, done = recv(ctl, wire.DONE)
        assert done.fields[0]["in"] == 3 and done.fields[0]["failed"] == 3
        ctl.send_multipart([cid, *wire.simple(wire.STOP, 0)])
        proc.join(10)
        assert proc.exitcode == 0
        letters = read_dead_letters(dead)
        assert sorted(str(d["event_id"]) for d in letters) == ["1", "10", "2"]
        assert any("undecodable" in d["message"] for d in letters)


def test_a_dedupe_sink_handles_a_redelivered_event_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    ref = "tests.integration.teststages:Append"
    with LiveWorker(tmp_path, "sink", ref, {"out": str(out)}, batch=8, dedupe=True) as w:
        up, ctl, proc = w.up, w.ctl, w.proc
        recv(ctl, wire.REGISTER)
        wid, _ = recv(up, wire.HELLO)
        for lease, ids in enumerate(([1, 2, 3], [2, 3, 4], ["4.0", "4.1", 4])):
            body, _ = wire.pack_events([{"n": i} for i in ids])
            up.send_multipart([wid, *wire.batch(lease, ids, [len(ids)], [body])])
            assert recv_ack(up)[0] == lease
        up.send_multipart([wid, *wire.simple(wire.END)])
        cid, done = recv(ctl, wire.DONE)
        ctl.send_multipart([cid, *wire.simple(wire.STOP, 0)])
        proc.join(10)
        assert proc.exitcode == 0
        stats = done.fields[0]
        assert stats["duplicates"] == 3 and stats["out"] == 6
        assert [json.loads(line)["n"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, "4.0", "4.1"]


def test_a_worker_counts_the_time_it_is_blocked_and_waiting(tmp_path: Path) -> None:
    """With nothing to handle it is waiting; with outputs the next queue has no room for,
    blocked, shown in its slot while the wait lasts and in its STATS; once the outputs
    are taken it waits for input again and its blocked time stops growing."""
    slot = Slot(tmp_path / "slot", create=True)  # the controller's side
    ref = "tests.integration.teststages:pause"
    with LiveWorker(tmp_path, "handler", ref, {"delay_s": 0.0}, batch=2, slot_path=slot.path) as w:
        up, down, ctl = w.up, w.down, w.ctl
        assert down is not None
        recv(ctl, wire.REGISTER)
        wid, _ = recv(up, wire.HELLO)
        recv(up, wire.GET)
        wait_until(lambda: slot.waits()[1] > 0.3, 10, "the worker's time waiting for input to show")
        assert slot.waits()[0] == 0.0
        body, _ = wire.pack_events([{"n": 0}, {"n": 1}])
        up.send_multipart([wid, *wire.batch(0, [0, 1], [2], [body])])
        pid_, _ = recv(down, wire.HELLO)  # and no credit: its outputs wait
        waiting = wait_until(lambda: (s := slot.waits())[0] > 0.3 and s[1], 10, "blocked time to accrue")
        wait_until(lambda: slot.waits()[0] > 0.6, 10, "blocked time to keep accruing within one wait")
        assert slot.waits()[1] == waiting  # blocked, not waiting
        stats = wait_until(lambda: (m := recv(ctl, wire.STATS)[1].fields[0])["blocked_s"] > 0.3 and m, 10, "STATS")
        assert stats["waiting_s"] == pytest.approx(waiting, abs=0.01)
        down.send_multipart([pid_, *wire.credit(10, -1, 1 << 30)])
        _, put = recv(down, wire.PUT)
        down.send_multipart([pid_, *wire.credit(0, put.fields[0], 1 << 30)])
        recv_ack(up)
        blocked = wait_until(lambda: (s := slot.waits())[1] > waiting + 0.3 and s[0], 10, "waiting again")
        assert slot.waits()[0] == blocked  # no longer blocked: the total stays put
    slot.close()


def within(sock: zmq.Socket[Any], seconds: float) -> list[wire.Message]:
    """Every message `sock` receives in the next `seconds`."""
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            out.append(wire.parse(sock.recv_multipart()[1:]))
    return out


def kinds_within(sock: zmq.Socket[Any], seconds: float) -> list[int]:
    """The kinds of every message `sock` receives in the next `seconds`."""
    return [m.kind for m in within(sock, seconds)]


def acked_in(msgs: list[wire.Message]) -> list[int]:
    """The leases `msgs` acknowledge, alone (ACK) or with a request (GET)."""
    return [
        lease
        for m in msgs
        for lease in ([m.fields[0]] if m.kind == wire.ACK else m.fields[1] if m.kind == wire.GET else [])
    ]


def test_a_worker_asks_one_batch_ahead_only_while_its_queue_has_a_backlog(tmp_path: Path) -> None:
    """A batch short of what the worker asked for says its queue ran dry: a second GET
    left out would take the next event from a worker that may be free sooner (an HTTP
    route at 4 connections kept one of two workers 70% busy, the other 35%). A full
    batch says there is a backlog: then it asks a batch ahead again."""
    ref = "tests.integration.teststages:Append"
    with LiveWorker(tmp_path, "sink", ref, {"out": str(tmp_path / "out.jsonl")}, batch=4) as w:
        up, ctl = w.up, w.ctl
        recv(ctl, wire.REGISTER)
        wid, _ = recv(up, wire.HELLO)
        recv(up, wire.GET)
        recv(up, wire.GET)  # two out: the one it will handle and the next
        body, _ = wire.pack_events([{"n": 0}])
        up.send_multipart([wid, *wire.batch(0, [0], [1], [body])])  # 1 of the 4 it asked for
        assert recv_ack(up) == (0, wire.ACK)  # alone: no GET goes with it
        assert wire.GET not in kinds_within(up, 0.5)  # its other GET is still out: enough
        body, _ = wire.pack_events([{"n": i} for i in range(1, 5)])
        up.send_multipart([wid, *wire.batch(1, [1, 2, 3, 4], [4], [body])])  # a full one
        msgs: list[wire.Message] = []
        deadline = time.monotonic() + 10
        while (not acked_in(msgs) or sum(m.kind == wire.GET for m in msgs) < 2) and time.monotonic() < deadline:
            msgs += within(up, 0.1)
        msgs += within(up, 0.3)
        # one ahead again, and no more; the first GET says the batch is done
        asked = [m.kind for m in msgs if m.kind in (wire.GET, wire.ACK)]
        assert asked == [wire.GET, wire.GET] and acked_in(msgs) == [1]


def test_an_acknowledgement_is_not_held_while_user_code_runs(tmp_path: Path) -> None:
    """Lease 0's outputs are taken while the worker sends lease 1's first outputs (a
    generator that spills, then pauses in the handler): lease 0 is acknowledged then,
    not after the handler returns. Held back until the next GET, its acknowledgement
    would be lost with a worker that dies in the handler, and lease 0 done twice."""
    ref = "tests.integration.teststages:fan_then_pause"
    with LiveWorker(tmp_path, "handler", ref, {}, batch=1) as w:
        up, down, ctl = w.up, w.down, w.ctl
        assert down is not None
        recv(ctl, wire.REGISTER)
        wid, _ = recv(up, wire.HELLO)
        body, _ = wire.pack_events([{"n": 0, "k": 1}])
        up.send_multipart([wid, *wire.batch(0, [0], [1], [body])])
        pid_, _ = recv(down, wire.HELLO)
        down.send_multipart([pid_, *wire.credit(10, -1, 1 << 30)])  # room for 10
        _, first = recv(down, wire.PUT)  # lease 0's one output, not confirmed yet
        body, _ = wire.pack_events([{"n": 1, "k": 300, "pause_s": 5}])
        up.send_multipart([wid, *wire.batch(1, [1], [1], [body])])
        _, second = recv(down, wire.PUT)  # lease 1's first 9: the worker waits for room
        down.send_multipart([pid_, *wire.credit(1000, second.fields[0], 1 << 30)])  # both taken
        acked = acked_in(within(up, 2.0))  # the handler is in its pause meanwhile
        assert acked == [0], acked
