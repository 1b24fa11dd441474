"""Fusion by the runtime changes no result: each example topology, with its worker counts
taken out so that the runtime may fuse its chains (wordcount keeps its keyed stage's),
writes byte for byte the same output fused (policy: adaptive, the default) as unfused
(policy: static), and says what it fused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.teststages import read_records
from tests.integration.util import TESTSTAGES, TOPOLOGIES, chain_yaml, run_sedamp, summary_of

# example -> (environment, boundaries the runtime fuses once worker counts are gone)
EXAMPLES = {
    "wordcount.yaml": ({}, {("read", "tokenize")}),
    "jsonl-etl.yaml": ({}, {("parse", "clean")}),
    "csv-clean.yaml": ({}, set()),
    "tiny.yaml": ({"COUNT": "3000"}, {("a", "b")}),
    "burn.yaml": ({"COUNT": "40"}, {("a", "b"), ("b", "c")}),
}


def without_worker_counts(name: str, directory: Path) -> Path:
    """A copy of example `name` with no `workers:` lines, its data paths kept."""
    text = (TOPOLOGIES / name).read_text()
    if name != "wordcount.yaml":  # its keyed stage needs a fixed count
        text = re.sub(r"(?m)^\s+workers: .*\n", "", text)
    text = text.replace("${TOPOLOGY_DIR}", str(TOPOLOGIES)).replace('"data/', f'"{TOPOLOGIES}/data/')
    path = directory / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_fused_and_unfused_runs_write_the_same_output(tmp_path: Path, name: str) -> None:
    env, fused = EXAMPLES[name]
    topology = without_worker_counts(name, tmp_path)
    outputs = {}
    for policy in ("adaptive", "static"):
        out = tmp_path / policy / "out.file"
        out.parent.mkdir()
        proc = run_sedamp(
            "run",
            str(topology),
            "--set",
            f"controller.policy={policy}",
            "--workdir",
            str(tmp_path / policy / "w"),
            "--json",
            env={**env, "OUT": str(out)},
        )
        assert proc.returncode in (0, 1), proc.stderr  # jsonl-etl dead-letters its bad records
        summary = summary_of(proc)
        outputs[policy] = (out.read_bytes(), summary["failed"], summary["events"])
        done = {(f["from"], f["to"]) for f in summary["fusion"] if f["action"] == "fuse"}
        assert done == (fused if policy == "adaptive" else set()), summary["fusion"]
        if policy == "adaptive" and fused:
            head = next(iter(sorted(fused)))[0]
            workers = json.loads(proc.stdout)["stages"]
            assert {s["name"] for s in workers} >= {b for _, b in fused}  # members still counted
            assert head in {s["name"] for s in workers}
    assert outputs["adaptive"] == outputs["static"]
    assert outputs["adaptive"][0], "the example wrote nothing"


def test_an_event_crosses_a_fused_boundary_as_it_would_cross_a_queue(tmp_path: Path) -> None:
    """A tuple arrives as a list, and an output MessagePack cannot carry is dead-lettered at
    the stage that made it, fused or not."""
    seen = {}
    for policy in ("adaptive", "static"):
        out = tmp_path / f"{policy}.jsonl"
        topology = tmp_path / f"{policy}.yaml"
        topology.write_text(
            f"name: crossing\ncontroller: {{policy: {policy}}}\n"
            + chain_yaml(out, f"    handler: {TESTSTAGES}:pair_or_handle\n    params: {{modulo: 7}}", to="kind")
            + f"  kind:\n    handler: {TESTSTAGES}:type_of_pair\n    to: sink\n"
        )
        proc = run_sedamp("run", str(topology), "--workdir", str(tmp_path / policy), "--json")
        assert proc.returncode == 1, proc.stderr
        summary = summary_of(proc)
        assert [f["action"] for f in summary["fusion"]] == (["fuse", "apart"] if policy == "adaptive" else [])
        dead = read_dead_letters(Path(summary["dead_letters"]))
        records = sorted(read_records(out), key=lambda e: e["n"])
        seen[policy] = (records, sorted((d["stage"], d["event_id"], d["error_type"]) for d in dead))
    records, dead = seen["adaptive"]
    assert {e["type"] for e in records} == {"list"} and len(records) == 200 - 29
    assert dead == sorted(("mid", n, "WireError") for n in range(0, 200, 7))
    assert seen["adaptive"] == seen["static"]
