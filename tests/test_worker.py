"""A live worker process between two queues played by this test (real sockets)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import zmq

from sedamp import _proc, wire
from sedamp.deadletter import read_dead_letters
from sedamp.executor import LocalExecutor
from sedamp.outlet import OutputConfig
from sedamp.worker import WorkerConfig


def recv(sock: zmq.Socket[Any], kind: int, timeout_s: float = 10) -> tuple[bytes, wire.Message]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            rid, *frames = sock.recv_multipart()
            m = wire.parse(frames)
            if m.kind == kind:
                return rid, m
    raise AssertionError(f"no {wire.KIND_NAMES[kind]} arrived")


def test_worker_protocol_garbage_and_failures(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    up = _proc.router(ctx, f"ipc://{tmp_path}/up")
    down = _proc.router(ctx, f"ipc://{tmp_path}/down")
    ctl = _proc.router(ctx, f"ipc://{tmp_path}/ctl")
    dead = tmp_path / "dead.jsonl"
    cfg = WorkerConfig(
        stage="mid",
        kind="handler",
        index=0,
        ref="tests.integration.teststages:fail_on",
        params={"modulo": 3},
        input_endpoint=f"ipc://{tmp_path}/up",
        outputs=(OutputConfig("next", f"ipc://{tmp_path}/down", None, 1),),
        control_endpoint=f"ipc://{tmp_path}/ctl",
        batch=4,
        dead_letters=str(dead),
        import_paths=(os.getcwd(),),
        period_s=0.1,
        parent_pid=os.getpid(),
    )
    executor = LocalExecutor()
    proc = executor.start("test-worker", "worker", cfg)
    try:
        recv(ctl, wire.REGISTER)
        wid, hello = recv(up, wire.HELLO)
        assert hello.fields[0] == wire.WORKER
        _, get = recv(up, wire.GET)
        assert get.fields[0] == 4  # the fixed batch size
        # garbage from "its queue": refused, the worker lives on
        up.send_multipart([wid, b"\xc1garbage"])
        up.send_multipart([wid, wire.header(wire.BATCH, 0, [1, 2], [2], [0.0]), b"\xc1\xc1"])  # undecodable events
        _, ack0 = recv(up, wire.ACK)
        assert ack0.fields[0] == 0
        # a good batch: 0 fails (multiple of 3), 1 and 2 go on
        body, _ = wire.pack_events([{"n": 0}, {"n": 1}, {"n": 2}])
        up.send_multipart([wid, *wire.batch(1, [10, 11, 12], [3], [body])])
        pid_, phello = recv(down, wire.HELLO)
        down.send_multipart([pid_, *wire.credit(10, -1)])
        _, put = recv(down, wire.PUT)
        assert put.fields[2] == [11, 12]
        assert wire.unpack_events(put.bodies, 2) == [{"n": 1}, {"n": 2}]
        # no ACK before the downstream queue has taken the outputs
        assert not up.poll(300) or wire.parse(up.recv_multipart()[1:]).kind != wire.ACK
        down.send_multipart([pid_, *wire.credit(0, put.fields[0])])
        _, ack1 = recv(up, wire.ACK)
        assert ack1.fields[0] == 1
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
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        executor.close()
        for s in (up, down, ctl):
            s.close(0)
        ctx.term()


def test_a_dedupe_sink_handles_a_redelivered_event_once(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    up = _proc.router(ctx, f"ipc://{tmp_path}/up")
    ctl = _proc.router(ctx, f"ipc://{tmp_path}/ctl")
    out = tmp_path / "out.jsonl"
    cfg = WorkerConfig(
        stage="sink",
        kind="sink",
        index=0,
        ref="tests.integration.teststages:Append",
        params={"out": str(out)},
        input_endpoint=f"ipc://{tmp_path}/up",
        outputs=(),
        control_endpoint=f"ipc://{tmp_path}/ctl",
        batch=8,
        dead_letters=str(tmp_path / "dead.jsonl"),
        import_paths=(os.getcwd(),),
        period_s=0.1,
        parent_pid=os.getpid(),
        dedupe=True,
    )
    executor = LocalExecutor()
    proc = executor.start("test-sink", "worker", cfg)
    try:
        recv(ctl, wire.REGISTER)
        wid, _ = recv(up, wire.HELLO)
        for lease, ids in enumerate(([1, 2, 3], [2, 3, 4], ["4.0", "4.1", 4])):
            body, _ = wire.pack_events([{"n": i} for i in ids])
            up.send_multipart([wid, *wire.batch(lease, ids, [len(ids)], [body])])
            _, ack = recv(up, wire.ACK)
            assert ack.fields[0] == lease
        up.send_multipart([wid, *wire.simple(wire.END)])
        cid, done = recv(ctl, wire.DONE)
        ctl.send_multipart([cid, *wire.simple(wire.STOP, 0)])
        proc.join(10)
        assert proc.exitcode == 0
        stats = done.fields[0]
        assert stats["duplicates"] == 3 and stats["out"] == 6
        assert [json.loads(line)["n"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, "4.0", "4.1"]
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        executor.close()
        for s in (up, ctl):
            s.close(0)
        ctx.term()
