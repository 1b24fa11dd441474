"""`sedamp run --resume` after the controller was SIGKILLed mid-job: nothing is lost and
only what no sink had written is done again."""

from __future__ import annotations

from array import array
from pathlib import Path

from sedamp.runtime import journal
from sedamp.spec import parse_topology
from tests.conftest import wait_until
from tests.faults.test_faults import find
from tests.integration.util import REPO, run_sedamp, stage_of, start_run, summary_of

T = "tests.integration.teststages"
COUNT = 3000


def files_topology(tmp: Path, sink: str = "stages.files:WriteFiles") -> Path:
    path = tmp / "job.yaml"
    path.write_text(
        f"""name: job
stages:
  src:
    source: {T}:Numbers
    params: {{count: {COUNT}, delay_s: 0.001}}
    to: mid
  mid:
    handler: {T}:to_file
    workers: 2
    to: out
  out:
    sink: {sink}
    params: {{out: "{tmp / "out"}"}}
"""
    )
    return path


def test_resume_after_the_controller_was_killed(tmp_path: Path) -> None:
    topo = files_topology(tmp_path)
    work = tmp_path / "w"
    proc = start_run(topo, work)
    out = tmp_path / "out"
    wait_until(lambda: out.exists() and len(list(out.iterdir())) >= 500, 60, "500 files written")
    assert find(proc, "sdw:mid") is not None
    proc.kill()  # kill -9 of `sedamp run`: every process goes with it
    proc.communicate(timeout=10)
    written = len(list(out.glob("*.txt")))
    assert 500 <= written < COUNT, "the job was not interrupted mid-way: the test proves nothing"

    again = run_sedamp("run", str(topo), "--workdir", str(work), "--json", "--resume", timeout=120)
    assert again.returncode == 0, again.stderr
    s = summary_of(again)
    skipped = stage_of(s, "src")["skipped"]
    # what was journaled was written; a file written just before the kill may be redone
    assert 0 < skipped <= written
    assert stage_of(s, "mid")["events_in"] == COUNT - skipped  # only the rest was done again
    files = sorted(out.glob("*.txt"))
    assert [f.name for f in files] == [f"{n:05d}.txt" for n in range(COUNT)]
    assert all(f.read_text() == f"n={int(f.stem)}\n" for f in files)

    # a third run without --resume starts over
    fresh = run_sedamp("run", str(topo), "--workdir", str(work), "--json", timeout=120)
    assert fresh.returncode == 0 and stage_of(summary_of(fresh), "src")["skipped"] == 0


def test_resume_needs_sinks_that_know_what_they_wrote(tmp_path: Path) -> None:
    topo = files_topology(tmp_path, sink=f"{T}:Append")
    r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"), "--resume")
    assert r.returncode == 2
    assert "--resume: sink 'out' cannot tell what it wrote" in r.stderr and "Traceback" not in r.stderr


def test_journal_reads_cut_records_and_intersects_sinks(tmp_path: Path) -> None:
    top = parse_topology(
        f"""
stages:
  src: {{source: "{T}:Numbers", params: {{count: 1}}, to: [a, b]}}
  a: {{sink: "stages.files:WriteFiles", params: {{out: x}}}}
  b: {{sink: "stages.files:WriteFiles", params: {{out: y}}}}
""",
        file="t.yaml",
        base_dir=REPO,
        check_handlers=False,
    )
    d = tmp_path / "j"
    journal.start(d, resume=False)
    (d / "a.1.ids").write_bytes(array("q", [1, 2, 3, 5]).tobytes() + b"\x07\x00")  # cut mid-record
    (d / "a.2.ids").write_bytes(array("q", [8]).tobytes())
    (d / "b.9.ids").write_bytes(array("q", [2, 3, 8, 9]).tobytes())
    assert journal.done_ids(d, top) == [2, 3, 8]
    journal.write_skip(tmp_path / "skip", [2, 3, 8])
    skip = journal.read_skip(tmp_path / "skip")
    assert [i for i in range(10) if i in skip] == [2, 3, 8]
    journal.start(d, resume=True)
    assert (d / "b.9.ids").exists()
    journal.start(d, resume=False)
    assert not list(d.iterdir())
    assert journal.resume_problem(top) is None  # two resumable sinks, one source
