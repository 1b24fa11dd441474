"""A full disk and an unwritable workdir, for real: every run ends with one message that
names the file and the errno, the right exit code, no process, no socket directory and
no traceback.

How the disk is made full or read-only, honestly and without mocks:

- ``tmpfs``: a tmpfs of a few pages mounted for the test (``mount -t tmpfs -o size=...``),
  and read-only bind mounts (``mount --bind`` then ``remount,ro,bind``); the kernel
  answers ENOSPC and EROFS. It needs root with CAP_SYS_ADMIN, which a developer's
  container here has. Where mounting is refused, these variants skip, and the other
  variant of the same test covers the same code path with another real kernel error:
- ``fsize``: RLIMIT_FSIZE set in the `sedamp run` process (inherited by every process
  of the run): a write past the limit fails with EFBIG (CPython ignores SIGXFSZ), the
  same failed write the code meets on a full disk, from the same kernel call.
- ``blocked``: something of the wrong type where the run must write (a directory where
  a file goes, a file where a directory goes): EISDIR or EEXIST, so the journal path is
  tested everywhere.
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sedamp
from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.util import REPO, TESTSTAGES, sedamp_cmd, summary_of

FAILING = f"""name: failing
stages:
  src:
    source: {TESTSTAGES}:Numbers
    params: {{count: 20000}}
    to: mid
  mid:
    handler: {TESTSTAGES}:fail_on
    params: {{modulo: 1}}
    workers: 2
    on_error: {{budget: 1}}  # the full disk must stop it, not the error budget
    to: sink
  sink:
    sink: {TESTSTAGES}:Record
    params: {{out: "{{out}}"}}
"""

FILES = f"""name: job
stages:
  src:
    source: {TESTSTAGES}:Numbers
    params: {{count: {{count}}}}
    to: mid
  mid:
    handler: {TESTSTAGES}:to_file
    to: out
  out:
    sink: stages.files:WriteFiles
    params: {{out: "{{out}}"}}
"""


def _mount(*args: str | Path) -> None:
    """Run mount(8); skip the test where this machine refuses it (not root, no
    CAP_SYS_ADMIN): the test's other variant covers the same code with a real error."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the fsize/blocked variant covers this code path")
    try:
        r = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"mount(8) cannot run here ({exc}); the fsize/blocked variant covers this code path")
    if r.returncode != 0:
        pytest.skip(f"mount refused here ({r.stderr.strip()}); the fsize/blocked variant covers this code path")


@pytest.fixture
def mounts() -> Iterator[Callable[..., Path]]:
    """`mounts(kind, path)` mounts over `path` (made if missing): ``("tmpfs", path,
    size)`` a tmpfs of `size`, ``("ro", path)`` `path` itself read-only. Every mount is
    undone at the end of the test."""
    done: list[Path] = []

    def mount(kind: str, path: Path, size: str = "") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if kind == "tmpfs":
            _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
            done.append(path)
        else:
            _mount("--bind", path, path)
            done.append(path)
            _mount("-o", "remount,ro,bind", path)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(disk: Path) -> None:
    """Take every free byte of the file system at `disk`."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def sedamp_run(
    topo: Path, workdir: Path, tmp: Path, *extra: str, fsize: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`sedamp run TOPO --json` to completion, its socket directory under `tmp/tmp` when
    the run directory's path is too long for ipc, with RLIMIT_FSIZE = `fsize` bytes."""
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "PYTHONDONTWRITEBYTECODE": "1"}

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    cmd = sedamp_cmd("run", str(topo), "--workdir", str(workdir), "--json", "--no-progress", *extra)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90, preexec_fn=limit)


def assert_one_error(r: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 3, no traceback, one `error:` line holding every one of `words`: that line."""
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word in errors[0], r.stderr
    assert "died 10 times" not in r.stderr and "killed 2 workers" not in r.stderr, r.stderr
    return errors[0]


def assert_nothing_left(tmp: Path, run_dir: str | Path) -> None:
    """No socket directory, in the run directory or the temporary one (the autouse
    fixture checks the processes)."""
    assert not (Path(run_dir) / "sock").exists()
    assert list((tmp / "tmp").iterdir()) == []


@pytest.mark.parametrize("how", ["tmpfs", "fsize"])
def test_a_full_disk_under_the_dead_letters_stops_the_run_in_one_message(
    tmp_path: Path, how: str, mounts: Callable[..., Path]
) -> None:
    """Every event fails and is dead-lettered until the disk is full. That used to kill
    the workers with an OSError traceback each, go round as poison events and dead
    workers, and end with SIGBUS (a slot mapped on the full tmpfs) or 'died 10 times',
    the summary saying `failed: 0` with thousands of dead letters on disk."""
    topo = tmp_path / "failing.yaml"
    topo.write_text(FAILING.replace("{out}", str(tmp_path / "out.jsonl")))
    if how == "tmpfs":
        work = mounts("tmpfs", tmp_path / "disk", "256k") / "w"
        r = sedamp_run(topo, work, tmp_path)
        words = [
            "dead-letters.jsonl",
            "No space left on device (ENOSPC)",
            f"file system at {tmp_path / 'disk'} is full",
        ]
    else:
        r = sedamp_run(topo, tmp_path / "w", tmp_path, fsize=64 * 1024)
        words = ["dead-letters.jsonl", "File too large (EFBIG)", "ulimit -f"]
    line = assert_one_error(r, "cannot write the dead-letter file", *words)
    s = summary_of(r)
    assert line == f"error: {s['error']}" and s["exit_code"] == 3
    letters = read_dead_letters(s["dead_letters"])  # a last line cut by the full disk is skipped
    assert len(letters) > 50
    assert s["failed"] >= len(letters)  # every dead letter on disk is counted
    assert f"{s['failed']} events failed; see {s['dead_letters']}" in r.stderr
    assert_nothing_left(tmp_path, s["run_dir"])


@pytest.mark.parametrize("how", ["tmpfs", "fsize"])
def test_a_full_journal_stops_the_run_in_one_message(tmp_path: Path, how: str, mounts: Callable[..., Path]) -> None:
    """A resumable sink's journal fills up. Its worker died with a traceback at every
    batch, each event was blamed as poison and dead-lettered, and the run went on,
    restarting workers, for over a minute."""
    topo = tmp_path / "job.yaml"
    topo.write_text(FILES.replace("{out}", str(tmp_path / "out")).replace("{count}", "3000"))
    work = tmp_path / "w"
    if how == "tmpfs":
        journal = mounts("tmpfs", work / "journal", "8k")  # the stamp, then 512 ids
        r = sedamp_run(topo, work, tmp_path)
        words = ["No space left on device (ENOSPC)", f"file system at {journal} is full"]
    else:
        r = sedamp_run(topo, work, tmp_path, fsize=16 * 1024)  # 2048 ids
        words = ["File too large (EFBIG)"]
    line = assert_one_error(r, "worker out[0]: cannot write the journal", str(work / "journal" / "job"), *words)
    s = summary_of(r)
    assert line == f"error: {s['error']}"
    assert s["failed"] == 0 and read_dead_letters(s["dead_letters"]) == []
    assert_nothing_left(tmp_path, s["run_dir"])


@pytest.mark.parametrize("how", ["full", "read-only", "blocked"])
def test_a_journal_that_cannot_be_taken_fails_the_run_in_one_message(
    tmp_path: Path, how: str, mounts: Callable[..., Path]
) -> None:
    """The controller cannot write the topology's journal before it starts anything:
    this was an OSError traceback with exit 1."""
    topo = tmp_path / "job.yaml"
    topo.write_text(FILES.replace("{out}", str(tmp_path / "out")).replace("{count}", "10"))
    work = tmp_path / "w"
    mine = work / "journal" / "job"
    if how == "full":
        fill(mounts("tmpfs", work / "journal", "8k"))
        words = [str(mine / "topology.sha256"), "(ENOSPC)", "is full"]
    elif how == "read-only":
        mounts("ro", mine)
        words = [str(mine / "topology.sha256"), "Read-only file system (EROFS)", f"file system at {mine} is read-only"]
    else:
        (work / "journal" / "job.lock").mkdir(parents=True)  # where the journal's lock file goes
        words = [str(work / "journal"), "Is a directory (EISDIR)"]
    line = assert_one_error(r := sedamp_run(topo, work, tmp_path), "cannot write the journal", *words)
    s = summary_of(r)
    assert line == f"error: {s['error']}" and s["events"] == 0
    assert_nothing_left(tmp_path, s["run_dir"])


@pytest.mark.parametrize("part", ["", "runs", "journal"])
def test_a_read_only_workdir_is_refused_in_one_line_as_root_too(
    tmp_path: Path, part: str, mounts: Callable[..., Path]
) -> None:
    """Root writes through `chmod 555`, so only a read-only mount is read-only for
    root: the workdir, its runs/ or its journal/ (the last was a traceback, exit 1)."""
    topo = tmp_path / "job.yaml"
    topo.write_text(FILES.replace("{out}", str(tmp_path / "out")).replace("{count}", "10"))
    work = tmp_path / "w"
    ro = mounts("ro", work / part if part else work)
    r = sedamp_run(topo, work, tmp_path)
    what = "journals" if part == "journal" else "run directories"
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"error: --workdir {work}: cannot make {what} there: {ro} cannot be written"
    assert sorted(p.name for p in work.iterdir()) == sorted([part] if part else [])


def test_a_file_in_place_of_the_journal_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    """The same check, on a machine where nothing can be mounted: journal/ is a file."""
    topo = tmp_path / "job.yaml"
    topo.write_text(FILES.replace("{out}", str(tmp_path / "out")).replace("{count}", "10"))
    work = tmp_path / "w"
    work.mkdir()
    (work / "journal").write_text("")
    r = sedamp_run(topo, work, tmp_path)
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.strip()
        == f"error: --workdir {work}: cannot make journals there: {work / 'journal'} is not a directory"
    )
    assert sorted(p.name for p in work.iterdir()) == ["journal"]


@pytest.mark.parametrize("how", ["read-only", "blocked"])
def test_the_python_api_raises_a_storage_error_and_leaves_no_process(
    tmp_path: Path, how: str, mounts: Callable[..., Path]
) -> None:
    """`sedamp.run` with a runs/ directory it cannot write raised a bare OSError and
    left the process launcher it had started running."""
    from sedamp.errors import StorageError  # here: the other tests of this file run on older code

    work = tmp_path / "w"
    if how == "read-only":
        mounts("ro", work / "runs")
        words = "Read-only file system (EROFS)"
    else:
        work.mkdir()
        (work / "runs").write_text("")
        words = "File exists (EEXIST)"
    topo = tmp_path / "job.yaml"
    topo.write_text(FILES.replace("{out}", str(tmp_path / "out")).replace("{count}", "10"))
    with pytest.raises(StorageError, match=r"cannot make a run directory in .*/w/runs: ") as err:
        sedamp.run(topo, workdir=work)
    assert words in str(err.value)
