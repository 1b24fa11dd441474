"""The ray executor on a real multi-node Ray cluster started on this machine (a head
with no CPUs, so every worker is placed on one of two worker nodes, each its own raylet).

The example topologies give byte-identical outputs on the local and the ray executors;
a worker's actor killed in the middle of a job loses no event; an unreachable cluster
is a one-line error. After every run, no worker process and no actor of the run is
left on the cluster.

The cluster's own processes are started without SEDAMP_TEST_TAG (they belong to the
cluster, which outlives each test), so the workers the actors start do not carry it
either: `no_run_left` checks for them by their command line and by the actors' names."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import wait_until
from tests.integration.util import TESTSTAGES, TOPOLOGIES, chain_yaml, run_sedamp, sedamp_cmd, stage_of, summary_of

ray = pytest.importorskip("ray", reason="the ray extra is not installed (make test-ray installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.timeout(240)

WORKER_CMD = "sedamp.runtime.child"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    tag = os.environ.pop("SEDAMP_TEST_TAG")
    try:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            c.add_node(num_cpus=3)  # Ray's CPUs are slots: six on this machine's cores
        c.wait_for_nodes()
        ray.init(address=c.address, namespace="sedamp", logging_level="WARNING")
    finally:
        os.environ["SEDAMP_TEST_TAG"] = tag
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def our_actors() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("sdw:")]


def worker_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if WORKER_CMD in " ".join(p.info["cmdline"] or ()):
            found.append(p)
    return found


@pytest.fixture
def no_run_left(cluster: Any) -> Iterator[None]:
    assert not worker_processes(), "worker processes left by an earlier run"
    yield
    wait_until(lambda: not worker_processes(), 15, "the ray workers' processes to end")
    wait_until(lambda: not our_actors(), 15, "the run's actors to be gone")


def ray_run(*args: str, cluster: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_sedamp(*args, "--executor", "ray", "--address", cluster.address, env=env, timeout=180)


EXAMPLES = {
    # topology: (the file or directory it writes, the environment naming it)
    "wordcount.yaml": "counts.tsv",
    "csv-clean.yaml": "clean.jsonl",
    "thumbnails.yaml": "thumbs",
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_examples_give_the_same_output_on_ray(example: str, cluster: Any, no_run_left: None, tmp_path: Path) -> None:
    outputs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor / EXAMPLES[example]
        out.parent.mkdir()
        args = ("run", str(TOPOLOGIES / example), "--workdir", str(tmp_path / executor / "work"), "--json")
        env = {"OUT": str(out)}
        proc = ray_run(*args, cluster=cluster, env=env) if executor == "ray" else run_sedamp(*args, env=env)
        assert proc.returncode in (0, 1), proc.stderr  # 1: the examples' deliberate bad inputs
        summary = summary_of(proc)
        files = sorted(out.rglob("*")) if out.is_dir() else [out]
        outputs[executor] = {str(f.relative_to(out.parent)): f.read_bytes() for f in files if f.is_file()}
        outputs[executor + " summary"] = {s["name"]: (s["events_in"], s["failed"]) for s in summary["stages"]}
    assert outputs["local"], "the example wrote nothing"
    assert outputs["ray"] == outputs["local"]
    assert outputs["ray summary"] == outputs["local summary"]


def start_slow_job(tmp_path: Path, cluster: Any, count: int) -> tuple[subprocess.Popen[str], Path]:
    """src -> mid (2 workers, 10 ms per event) -> sink (appends each event at once), on
    the cluster, in the background: (the `sedamp run --json` process, the sink's file)."""
    out = tmp_path / "out.jsonl"
    topo = tmp_path / "t.yaml"
    topo.write_text(chain_yaml(out, f"    handler: {TESTSTAGES}:pause\n    params: {{delay_s: 0.01}}\n    workers: 2",
                               sink="Append", count=count))  # fmt: skip
    args = ("run", str(topo), "--workdir", str(tmp_path / "w"), "--json", "--executor", "ray", "--address")
    proc = subprocess.Popen(
        sedamp_cmd(*args, cluster.address), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, out


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def finished(proc: subprocess.Popen[str], out: Path, count: int) -> tuple[dict[str, Any], str]:
    """Wait for the job; check that it succeeded and every event reached the sink (some
    twice at most: redelivery is at least once). Returns (its summary, its stderr)."""
    stdout, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 0, stderr
    got = [int(m) for m in re.findall(r'"n": (\d+)', out.read_text())]
    assert set(got) == set(range(count)), f"lost: {sorted(set(range(count)) - set(got))[:20]}"
    return summary_of(subprocess.CompletedProcess([], 0, stdout, stderr)), stderr


def raylet_of(worker: psutil.Process, raylets: dict[int, Any]) -> list[Any]:
    """The nodes (by raylet pid in `raylets`) whose raylet is an ancestor of `worker`."""
    ancestors = {a.pid for a in worker.parents()}
    return [node for pid, node in raylets.items() if pid in ancestors]


def test_workers_run_on_the_worker_nodes(cluster: Any, no_run_left: None, tmp_path: Path) -> None:
    """Every worker is a process under a raylet of a worker node (the head has no CPUs)."""
    proc, out = start_slow_job(tmp_path, cluster, 600)
    try:
        workers = wait_until(lambda: len(worker_processes()) >= 3 and worker_processes(), 60, "three workers")
        raylets = {n.all_processes["raylet"][0].process.pid: i for i, n in enumerate(cluster.list_all_nodes())}
        nodes = set()
        for w in workers:
            hits = raylet_of(w, raylets)
            assert len(hits) == 1, f"worker {w.pid} is not under exactly one raylet"
            nodes.add(hits[0])
        assert 0 not in nodes, "a worker ran on the head node, which has no CPUs"
    finally:
        finished(proc, out, 600)


def test_a_killed_actor_loses_nothing(cluster: Any, no_run_left: None, tmp_path: Path) -> None:
    count = 800
    proc, out = start_slow_job(tmp_path, cluster, count)
    try:
        wait_until(lambda: lines(out) >= 100, 90, "100 events written")
        victims = [n for n in our_actors() if n.startswith("sdw:mid:")]
        assert victims, f"no actor of stage mid among {our_actors()}"
        ray.kill(ray.get_actor(victims[0], namespace="sedamp"), no_restart=True)
        written_at_kill = lines(out)
    finally:
        summary, stderr = finished(proc, out, count)
    assert written_at_kill < count, "the job ended before the kill: nothing was tested"
    assert "lost with its Ray actor" in stderr, stderr
    assert stage_of(summary, "mid")["restarts"] >= 1
    assert stage_of(summary, "sink")["events_in"] >= count


def test_more_workers_than_the_cluster_has_cpus_is_a_clear_error(
    cluster: Any, no_run_left: None, tmp_path: Path
) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(chain_yaml(tmp_path / "out.jsonl", f"    handler: {TESTSTAGES}:pause\n    params: {{delay_s: 0}}\n"
                               "    workers: 6", sink="Append", count=10))  # fmt: skip
    proc = ray_run("run", str(topo), "--workdir", str(tmp_path / "w"), cluster=cluster)
    assert proc.returncode == 3, proc.stderr
    assert "needs at least 7 workers at once (one CPU each) but the cluster has 6 CPUs" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        proc = run_sedamp(
            "run", str(TOPOLOGIES / "wordcount.yaml"), "--workdir", str(tmp_path), "--executor", "ray",
            "--address", f"127.0.0.1:{port}", env={"OUT": str(tmp_path / "c.tsv")},
        )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "c.tsv").exists()


def test_address_needs_the_ray_executor(tmp_path: Path) -> None:
    proc = run_sedamp("run", str(TOPOLOGIES / "wordcount.yaml"), "--workdir", str(tmp_path), "--address", "x:1")
    assert proc.returncode == 2
    assert "--address applies to --executor ray" in proc.stderr


def test_a_lost_node_loses_nothing(cluster: Any, no_run_left: None, tmp_path: Path) -> None:
    """A worker node removed mid-job (its raylet and every process on it killed), and a
    fresh node added, as an autoscaler would: the workers it held are replaced on the
    nodes that are left, and every event arrives. Last in the module: it changes the
    cluster."""
    count = 800
    proc, out = start_slow_job(tmp_path, cluster, count)
    try:
        wait_until(lambda: lines(out) >= 100, 90, "100 events written")
        raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
        hosting = [node for w in worker_processes() for node in raylet_of(w, raylets)]
        assert hosting, "no worker found under a worker node's raylet"
        tag = os.environ.pop("SEDAMP_TEST_TAG")  # the new node belongs to the cluster, not to the test
        try:
            cluster.remove_node(hosting[0], allow_graceful=False)
            written_at_loss = lines(out)
            cluster.add_node(num_cpus=3)
        finally:
            os.environ["SEDAMP_TEST_TAG"] = tag
    finally:
        summary, _ = finished(proc, out, count)
    assert written_at_loss < count, "the job ended before the node was lost: nothing was tested"
    assert sum(stage_of(summary, s)["restarts"] for s in ("mid", "sink")) >= 1


def test_arrays_cross_stages_on_ray_as_they_do_locally(cluster: Any, no_run_left: None, tmp_path: Path) -> None:
    """Over TCP there are no shared blocks; arrays still travel as frames beside their
    events, and arrive equal (and read-only) on the cluster's workers."""
    pytest.importorskip("numpy")
    from tests.integration.test_payloads import digest, topology

    rows = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"digest-{executor}.jsonl"
        topo = topology(tmp_path, out, count=12, nbytes=1_000_000, fuse=False)
        args = ("run", str(topo), "--workdir", str(tmp_path / executor), "--json")
        proc = ray_run(*args, cluster=cluster) if executor == "ray" else run_sedamp(*args)
        assert proc.returncode == 0, proc.stderr
        rows[executor] = digest(out)
    assert [r["n"] for r in rows["ray"]] == list(range(12))
    assert rows["ray"] == rows["local"]
