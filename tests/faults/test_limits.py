"""Limits enforced while outputs are produced, not after: a worker whose memory runs
away inside a batch is stopped (max_rss_mb), outputs over the size limit are refused
without the whole batch being packed first, and packing a large event leaves no
buffer of its size behind. Real runs through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.teststages import read_records
from tests.integration.util import REPO, chain_yaml, run_sedamp, stage_of, summary_of

L = "tests.faults.limitstages"


def run(tmp: Path, middle: str, count: int) -> tuple[subprocess.CompletedProcess[str], dict]:
    topo = tmp / "t.yaml"
    # a worker that dies may have sent outputs it had not had acknowledged: the sink dedupes
    yaml = chain_yaml(tmp / "out.jsonl", middle, sink="Append", count=count, extra="    dedupe: true")
    topo.write_text("name: t" + yaml)
    proc = run_sedamp("run", str(topo), "--workdir", str(tmp / "w"), "--json", timeout=120)
    return proc, summary_of(proc)


def test_a_generator_whose_memory_runs_away_is_stopped_and_its_event_dead_lettered(tmp_path: Path) -> None:
    proc, s = run(
        tmp_path,
        f"    handler: {L}:runaway\n    params: {{at: 17, cap_mb: 600}}\n    max_rss_mb: 100\n    workers: 1",
        count=40,
    )
    assert proc.returncode == 1, proc.stderr  # the run finished; one event failed
    assert sorted(e["n"] for e in read_records(tmp_path / "out.jsonl")) == [n for n in range(40) if n != 17]
    [letter] = read_dead_letters(s["dead_letters"])
    assert letter["event_id"] == 17 and letter["stage"] == "mid"
    # stopped at 164 MiB (max_rss_mb plus the room a batch may take), well before the cap
    assert "stopped itself: its memory passed 164 MiB inside a handler (max_rss_mb: 100)" in letter["message"]
    mid = stage_of(s, "mid")
    assert mid["poisoned"] == 1 and mid["restarts"] == 2  # tried alone once more, then struck


def test_oversized_outputs_are_refused_without_packing_the_whole_batch(tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    proc, s = run(
        tmp_path,
        f'    handler: {L}:Blobs\n    params: {{mb: 32, report: "{report}"}}\n'
        "    max_event_bytes: 1048576\n    batch: 4\n    workers: 1",
        count=8,
    )
    assert proc.returncode == 1, proc.stderr
    letters = read_dead_letters(s["dead_letters"])
    assert sorted(d["event_id"] for d in letters) == list(range(8))
    assert all("exceeds the limit of 1,048,576 bytes" in d["message"] for d in letters)
    [m] = [json.loads(p.read_text()) for p in report.iterdir()]
    # a batch holds its 4 outputs (4 x 32 MiB); packing the first takes 2 x 32 MiB (its
    # copy and the packer's buffer) and finds it too large. Packing all four before
    # looking took 5 x 32 MiB on top of the outputs.
    assert m["peak"] - m["base"] < 4 * 32 + 3.5 * 32, m


def test_packing_a_large_event_leaves_no_buffer_of_its_size_behind() -> None:
    code = (
        "import os\n"
        "from sedamp.runtime import wire\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
        "big = b'x' * (64 * 2**20)\n"
        "before = rss()\n"
        "wire.pack_event(big, limit=2**27)\n"
        "wire.pack_all([{'small': 1}])\n"
        "print(rss() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 16, out.stdout  # MiB the process kept after packing 64 MiB
