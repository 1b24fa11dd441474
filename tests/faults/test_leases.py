"""Leases and links between live processes: batches lost on the way (a reset connection,
a stopped worker), replies to a peer whose connection is down, a worker that keeps
state and had handled a lease taken back, and timeout_s on a worker of another host.
Real processes, real sockets; each test checks that the run ends and where every event
went."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sedamp.control.client import find_run
from sedamp.runtime import lifeline, wire
from sedamp.runtime.deadletter import read_dead_letters
from sedamp.runtime.slot import Slot
from tests.conftest import wait_until
from tests.faults.test_faults import find
from tests.integration.teststages import read_records
from tests.integration.util import REPO, chain_yaml, sedamp_cmd, stage_count, stage_of, start_run, summary_of
from tests.roles.test_queue import Harness, recv
from tests.roles.test_worker import LiveWorker, recv_ack
from tests.roles.test_worker import recv as recv_kind

T = "tests.integration.teststages"


# ------------------------------------------------------------------ one queue, the test its peers


def test_a_batch_lost_on_the_way_is_leased_again_and_the_queue_ends(tmp_path: Path) -> None:
    """The BATCH a reset connection drops never reaches its worker: before, its lease
    was held for ever and the queue never ended. The worker renews what it holds
    (nothing) and says it awaits one answer; after a lease term the queue takes the
    lease back, tells the worker, and leases the events again."""
    q = Harness(tmp_path)
    prod, w = q.dealer("p"), q.dealer("w")
    try:
        prod.send_multipart(wire.hello(wire.PRODUCER, -1, 8))
        assert recv(prod).kind == wire.CREDIT
        body, ends = wire.pack_events(["a", "b", "c"])
        prod.send_multipart(wire.put(0, 0, [0, 1, 2], ends, body))
        assert recv(prod).kind == wire.CREDIT
        w.send_multipart(wire.hello(wire.WORKER, 0, 0))
        w.send_multipart(wire.get(10))
        lost = recv(w)  # as far as the worker knows, this never arrived
        assert lost.kind == wire.BATCH

        def renew() -> wire.Message | None:
            w.send_multipart(wire.renew(0, [], 1))
            return wire.parse(w.recv_multipart()) if w.poll(200) else None

        told = wait_until(renew, 10, "the queue to take the lease back")
        assert told.kind == wire.EXPIRED and told.fields[0] == [lost.fields[0]]
        again = wait_until(renew, 10, "the events leased again")
        assert again.kind == wire.BATCH and again.fields[1] == [0, 1, 2] and again.fields[0] != lost.fields[0]
        w.send_multipart(wire.ack(again.fields[0]))
        w.send_multipart(wire.ack(lost.fields[0]))  # late, had it arrived after all: counted apart
        q.ctl.send_multipart([q.rid, *wire.simple(wire.CLOSE)])
        w.send_multipart(wire.get(10))
        assert recv(w).kind == wire.END
        wait_until(lambda: q.recv_ctl(wire.STATS) and q.stats.get("ended"), 10, "the queue's last counters")
        s = q.stats
        assert (s["expired"], s["acked"], s["late_acks"], s["refused_frames"]) == (3, 3, 1, 0)
    finally:
        for sock in (prod, w):
            sock.close(0)
        q.close()


def test_a_reply_to_a_producer_whose_connection_is_down_waits_for_it(tmp_path: Path) -> None:
    """Credit granted while a producer's connection is down (over tcp, a reset peer
    reconnects under the same routing id) cannot be sent at once (EHOSTUNREACH). Before,
    the queue dropped the producer, refused its next PUT, and its worker stopped the run."""
    q = Harness(tmp_path, capacity=2)  # one producer: a window of one event
    prod, w, back = q.dealer("p"), q.dealer("w"), None
    try:
        prod.send_multipart(wire.hello(wire.PRODUCER, -1, 4))
        assert recv(prod).fields[0] == 1
        for seq, event in enumerate(["x", "y"]):
            body, ends = wire.pack_events([event])
            prod.send_multipart(wire.put(seq, 0, [seq], ends, body))
            recv(prod)
        prod.close(0)  # the connection goes down...
        time.sleep(0.3)  # ...for this long (the outage, not a wait for a condition)
        w.send_multipart(wire.hello(wire.WORKER, 0, 0))
        w.send_multipart(wire.get(1))
        batch = recv(w)
        w.send_multipart(wire.ack(batch.fields[0]))  # room: credit for "p", which is away
        back = q.dealer("p")  # the producer reconnects under the same routing id
        credit = recv(back)
        assert credit.kind == wire.CREDIT and credit.fields[:2] == (1, 1)
        body, ends = wire.pack_events(["z"])
        back.send_multipart(wire.put(2, 0, [2], ends, body))
        reply = recv(back)
        assert reply.kind == wire.CREDIT and reply.fields[1] == 2, reply
    finally:
        for sock in (prod, w, back):
            if sock is not None:
                sock.close(0)
        q.close()


def test_a_stateful_worker_that_handled_a_lease_taken_back_stops_the_run(tmp_path: Path) -> None:
    """Its events are leased again: a stage with state (finish()) would count them
    twice, so it stops the run, saying why. It renews what it holds every period."""
    out = tmp_path / "total.txt"
    with LiveWorker(tmp_path, "sink", f"{T}:Total", {"out": str(out)}, batch=8) as w:
        recv_kind(w.ctl, wire.REGISTER)
        wid, _ = recv_kind(w.up, wire.HELLO)
        _, renewal = recv_kind(w.up, wire.RENEW)
        assert renewal.fields == (0, [], 2)  # nothing held, its two GETs awaited
        body, _ = wire.pack_events([{"n": 1}, {"n": 2}])
        w.up.send_multipart([wid, *wire.batch(5, [1, 2], [2], [body])])
        assert recv_ack(w.up)[0] == 5  # alone, or with its next GET
        w.up.send_multipart([wid, *wire.expired([5])])
        _, fatal = recv_kind(w.ctl, wire.FATAL)
        assert "keeps state (finish()) and had handled lease 5" in fatal.fields[0]["message"]
        assert "counted twice" in fatal.fields[0]["message"]
        w.proc.join(10)
        assert w.proc.exitcode == lifeline.EXIT_CHILD_FAILED and not out.exists()


# ------------------------------------------------------------------ whole runs


def trickle(tmp: Path, count: int, controller: str) -> Path:
    """src (an event every 10 ms, sent 4 at a time) -> mid (one worker, microseconds an
    event) -> sink (appends each event, deduplicating)."""
    path = tmp / "t.yaml"
    path.write_text(f"""name: t
stages:
  src: {{source: "{T}:Numbers", params: {{count: {count}, delay_s: 0.01}}, batch: 4, to: mid}}
  mid: {{handler: "{T}:with_pid", to: sink}}
  sink: {{sink: "{T}:Append", params: {{out: "{tmp / "out.jsonl"}"}}, dedupe: true}}
controller: {controller}
""")
    return path


def chain(tmp: Path, middle: str, count: int, delay_s: float, extra: str) -> Path:
    path = tmp / "t.yaml"
    path.write_text("name: t" + chain_yaml(tmp / "out.jsonl", middle, sink="Append", count=count, delay_s=delay_s,
                                           extra=extra))  # fmt: skip
    return path


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill a run that is still going (a failed test): every process dies with it."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)


def test_the_leases_of_a_stopped_worker_expire_and_every_event_is_done_once(tmp_path: Path) -> None:
    """A worker stopped between batches (SIGSTOP) past the lease term holds the batches
    the queue leased it meanwhile: they are taken back. When it goes on, it drops what
    was taken back (or acknowledges it late, which changes nothing) and asks again: the
    run ends, every event once at the deduplicating sink, the worker never killed."""
    count = 600
    topo = trickle(tmp_path, count, "{period_s: 0.3}")
    proc = start_run(topo, tmp_path / "w")
    try:
        victim = wait_until(lambda: find(proc, "sdw:mid"), 30, "a worker")
        wait_until(lambda: stage_count(tmp_path / "w", "mid") > 20, 30, "events to flow")
        suspend_between_batches(victim)
        # the term is 10 periods (3 s); the silence bound, 20 (6 s), is not reached
        wait_until(lambda: stage_count(tmp_path / "w", "mid", "queue", "expired") > 0, 15, "its leases to expire")
        victim.resume()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr
    assert sorted(e["n"] for e in read_records(tmp_path / "out.jsonl")) == list(range(count))
    assert stage_of(json.loads(stdout), "mid")["restarts"] == 0
    assert "the queue took back leases" in stderr


def suspend_between_batches(worker: psutil.Process, tries: int = 500) -> None:
    """Stop `worker` (SIGSTOP) while its slot says it is between batches. Stopped inside
    its handler, it would be held: the controller renews the leases of a worker inside
    user code, however long it stays there (on a loaded machine a handler of
    microseconds can be descheduled midway, and the leases then never expired)."""
    path = next(m.path for m in worker.memory_maps(grouped=False) if os.path.basename(m.path).startswith("slot"))
    slot = Slot(path)
    for _ in range(tries):
        worker.suspend()
        if slot.read()[1] == -1:
            return
        worker.resume()
        time.sleep(0.01)
    raise AssertionError(f"worker {worker.pid} was never found between batches in {tries} tries")


def test_a_job_paused_whole_goes_on_as_if_it_had_not_been(tmp_path: Path) -> None:
    """Every process of a run stopped at once, past the lease term and the silence
    bound, then resumed: Ctrl-Z then `fg`, a suspended laptop, a stalled virtual
    machine. Before, the first to wake judged the others by a clock that went on: the
    queue took back the leases nobody could renew (their events were handled twice) and
    the controller found every process silent and failed the run."""
    count = 400
    topo = trickle(tmp_path, count, "{period_s: 0.1}")
    (tmp_path / "t.yaml").write_text(topo.read_text().replace(", dedupe: true", ""))  # a twice-handled event shows
    proc = start_run(topo, tmp_path / "w")
    tree: list[psutil.Process] = []
    try:
        wait_until(lambda: stage_count(tmp_path / "w", "mid") > 40, 30, "events to flow")
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree:
            p.suspend()
        time.sleep(4.0)  # the term is 2 s (at least), the silence bound 3 s (at least)
        for p in tree:
            p.resume()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.resume()
        stop(proc)
    assert proc.returncode == 0, stderr
    assert sorted(e["n"] for e in read_records(tmp_path / "out.jsonl")) == list(range(count))
    mid = stage_of(json.loads(stdout), "mid")
    assert mid["restarts"] == 0, mid
    assert "the queue took back leases" not in stderr and "silent" not in stderr, stderr
    assert "controller: not running for" in stderr, stderr


def test_ctrl_z_stops_every_process_of_the_run_and_fg_goes_on_with_them(tmp_path: Path) -> None:
    """SIGTSTP (Ctrl-Z) reaches the command line alone, as the run's processes are in
    a process group of their own: before, the workers ran on while the controller was
    stopped. Now every process stops with it, and SIGCONT (`fg`) goes on with them all:
    the run ends with every event once."""
    count = 400
    topo = trickle(tmp_path, count, "{period_s: 0.1}")
    (tmp_path / "t.yaml").write_text(topo.read_text().replace(", dedupe: true", ""))
    proc = start_run(topo, tmp_path / "w")
    try:
        wait_until(lambda: stage_count(tmp_path / "w", "mid") > 40, 30, "events to flow")
        run = psutil.Process(proc.pid)
        tree = [run, *run.children(recursive=True)]
        os.kill(proc.pid, signal.SIGTSTP)

        def all_stopped() -> bool:
            return all(p.status() == psutil.STATUS_STOPPED for p in tree if p.is_running())

        wait_until(all_stopped, 10, "every process of the run to stop")
        time.sleep(4.0)  # past the lease term and the silence bound
        assert all_stopped()
        os.kill(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
    assert proc.returncode == 0, stderr
    assert sorted(e["n"] for e in read_records(tmp_path / "out.jsonl")) == list(range(count))
    assert "the queue took back leases" not in stderr and "silent" not in stderr, stderr


def _can_reset_connections() -> bool:
    """Whether `ss -K` can reset a connection here (root, and a kernel that allows it)."""
    if shutil.which("ss") is None:
        return False
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c, srv.accept()[0] as s:
            subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(port)], capture_output=True, timeout=10)
            try:
                s.send(b"y")
                c.send(b"x")
                c.recv(1)
            except ConnectionError:
                return True
            except OSError:
                pass
    return False


@pytest.mark.skipif(not _can_reset_connections(), reason="resetting a connection needs root and `ss -K`")
def test_a_reset_connection_loses_no_batch_and_the_run_ends(tmp_path: Path) -> None:
    """The worker's tcp connection to its queue is reset (`ss -K`) while the worker is
    stopped, so it cannot reconnect for a while: the batches the queue leases it
    meanwhile cannot be sent. Before, they were dropped with their leases held, the
    worker waited for them for ever, and the run never ended."""
    count = 400
    topo = trickle(tmp_path, count, "{period_s: 0.3, transport: tcp}")
    work = tmp_path / "w"
    proc = start_run(topo, work)
    try:
        victim = wait_until(lambda: find(proc, "sdw:mid"), 30, "the worker")
        wait_until(lambda: stage_count(work, "mid") > 20, 30, "events to flow")
        port = int(find_run(None, work)["endpoints"]["mid"].rsplit(":", 1)[1])
        victim.suspend()
        [conn] = [c for c in victim.net_connections("tcp") if c.raddr and c.raddr.port == port]
        subprocess.run(
            ["ss", "-K", "src", conn.laddr.ip, "sport", "=", str(conn.laddr.port), "dst", conn.raddr.ip, "dport",
             "=", str(port)], check=True, capture_output=True, timeout=10,
        )  # fmt: skip
        time.sleep(1.0)  # the outage (not a wait for a condition): the queue leases it batches meanwhile
        victim.resume()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr
    assert sorted(e["n"] for e in read_records(tmp_path / "out.jsonl")) == list(range(count))
    assert stage_of(json.loads(stdout), "mid")["restarts"] == 0


# ------------------------------------------------------------------ a worker on another host

OTHER_HOST = "sedamp-other-host"
# A Ray cluster whose processes see another host name (a UTS namespace): to sedamp, its
# workers run on another machine. It prints its address, and ends when stdin closes.
CLUSTER = """
import sys
from ray.cluster_utils import Cluster
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
c.add_node(num_cpus=4)  # slots: two workers of mid, one of sink
c.wait_for_nodes()
print(c.address, flush=True)
sys.stdin.read()
c.shutdown()
"""


def _can_fake_another_host() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--uts", "hostname", OTHER_HOST], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_timeout_s_kills_a_hung_worker_on_another_host(tmp_path: Path) -> None:
    """Before, a worker on another host had no deadline (its slot was the controller's
    file) and was never killed: the run hung. Its actor now keeps its slot where it runs
    and the controller reads it through the executor."""
    pytest.importorskip("ray", reason="the ray extra is not installed (make test-ray installs it)")
    if not _can_fake_another_host():
        pytest.skip("another host name (unshare --uts) needs root")
    env = {k: v for k, v in os.environ.items() if k != "SEDAMP_TEST_TAG"}  # the cluster is not the run's
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cluster = subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", f'hostname {OTHER_HOST} && exec "$0" -c "$1"', sys.executable, CLUSTER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert cluster.stdout is not None
        address = cluster.stdout.readline().strip()
        assert address, "the cluster did not start"
        topo = chain(tmp_path, f"    handler: {T}:hang_on\n    params: {{at: 37}}\n    timeout_s: 1\n    workers: 2",
                     100, 0.0, "    dedupe: true")  # fmt: skip
        args = ("run", str(topo), "--workdir", str(tmp_path / "w"), "--json", "--executor", "ray", "--address")
        run = subprocess.run(sedamp_cmd(*args, address), cwd=REPO, capture_output=True, text=True, timeout=150)
    finally:
        assert cluster.stdin is not None
        cluster.stdin.close()
        try:
            cluster.wait(60)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait(10)
    assert run.returncode == 1, run.stderr
    s = summary_of(run)
    assert sorted(e["n"] for e in read_records(tmp_path / "out.jsonl")) == [n for n in range(100) if n != 37]
    mid = stage_of(s, "mid")
    assert mid["timeouts"] == 2 and mid["poisoned"] == 1
    [letter] = read_dead_letters(s["dead_letters"])
    assert letter["event_id"] == 37 and "timeout_s (1 s" in letter["message"]
