"""`sedamp run --resume` after the controller was SIGKILLed mid-job: nothing is lost and
only what no sink had written is done again."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import pytest

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
    os.close(journal.start(d, resume=False, made_for="f"))
    (d / "a.1.ids").write_bytes(array("q", [1, 2, 3, 5]).tobytes() + b"\x07\x00")  # cut mid-record
    (d / "a.2.ids").write_bytes(array("q", [8]).tobytes())
    (d / "b.9.ids").write_bytes(array("q", [2, 3, 8, 9]).tobytes())
    assert journal.done_ids(d, top) == [2, 3, 8]
    journal.write_skip(tmp_path / "skip", [2, 3, 8])
    skip = journal.read_skip(tmp_path / "skip")
    assert [i for i in range(10) if i in skip] == [2, 3, 8]
    os.close(journal.start(d, resume=True, made_for="f"))
    assert (d / "b.9.ids").exists()
    os.close(journal.start(d, resume=False, made_for="f"))
    assert [f.name for f in d.iterdir()] == [journal.FINGERPRINT_FILE]
    assert journal.resume_problem(top) is None  # two resumable sinks, one source


def test_the_journal_is_held_by_one_run_and_resumes_only_its_own_topology(tmp_path: Path) -> None:
    """A second run of a topology in the same workdir used to empty the first one's
    journal; OUT=a then OUT=b --resume skipped everything and wrote nothing to b."""
    from sedamp.errors import JournalError

    d = tmp_path / "journal" / "t"
    held = journal.start(d, resume=False, made_for="out=a")
    (d / "s.1.ids").write_bytes(array("q", [1, 2]).tobytes())
    with pytest.raises(JournalError, match="another run of topology 't' is using this workdir"):
        journal.start(d, resume=False, made_for="out=a")
    assert (d / "s.1.ids").exists()  # the running one's journal is untouched
    os.close(held)
    with pytest.raises(JournalError, match="was made for a different topology"):
        journal.start(d, resume=True, made_for="out=b")
    os.close(journal.start(d, resume=True, made_for="out=a"))  # the same work resumes
    assert (d / "s.1.ids").exists()


def test_resume_with_other_params_is_refused_end_to_end(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(
        'name: t\nstages:\n  src: {source: "stages.burn:Seeds", params: {count: 5}, to: out}\n'
        '  out: {sink: "stages.files:WriteFiles", params: {out: "${OUT}"}}\n'
    )
    work = tmp_path / "w"
    first = run_sedamp("run", str(topo), "--workdir", str(work), "-q", env={"OUT": str(tmp_path / "a")})
    assert first.returncode in (0, 1), first.stderr
    again = run_sedamp("run", str(topo), "--workdir", str(work), "--resume", "-q", env={"OUT": str(tmp_path / "b")})
    assert again.returncode == 3, again.stderr
    assert "was made for a different topology" in again.stderr and "Traceback" not in again.stderr
