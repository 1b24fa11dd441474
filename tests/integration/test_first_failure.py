"""What `sedamp run` says when things go wrong: the first failure of each kind as it
happens (type, message, the user's file:line) and with its repeats counted at the end;
the error budget that stops a stage failing on every event; and a run that cannot start
(a setup() that raises, a missing input folder, a port in use) in one line, without a
traceback unless -v; and a param value setup() would refuse, refused by validate. Each
test runs the real `sedamp` and counts the lines it prints."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path

from tests.integration import teststages
from tests.integration.util import (
    REPO,
    TESTSTAGES,
    TOPOLOGIES,
    chain_yaml,
    run_sedamp,
    stage_of,
    summary_of,
)


def _raise_line(func: object) -> str:
    """``tests/integration/teststages.py:N``: where `func` raises (the user's file:line)."""
    lines, start = inspect.getsourcelines(func)  # type: ignore[arg-type]
    at = next(i for i, text in enumerate(lines) if "raise " in text)
    return f"tests/integration/teststages.py:{start + at}"


FAIL_ON = _raise_line(teststages.fail_on)


def _topology(tmp_path: Path, middle: str, count: int) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\n" + chain_yaml(tmp_path / "out.jsonl", middle, count=count))
    return path


def _lines(text: str) -> list[str]:
    return text.strip("\n").split("\n") if text.strip() else []


def test_a_handler_failing_on_every_event_stops_the_run_early(tmp_path: Path, workdir: Path) -> None:
    """It ran through all 100,000 events with exit 1 and said only "N events failed; see
    FILE". Now the first failure is shown with the user's file:line, the run stops on
    the error budget long before the end (exit 3), and the repeats are counted."""
    middle = f"    handler: {TESTSTAGES}:fail_on\n    params: {{modulo: 1}}\n    workers: 1"
    topo = _topology(tmp_path, middle, count=100_000)
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", "--no-progress")
    assert proc.returncode == 3, proc.stderr
    s = summary_of(proc)
    assert stage_of(s, "src")["events_in"] < 100_000  # stopped early
    failed = s["failed"]
    first = f"ValueError: n=0 is a multiple of 1 (at {FAIL_ON})"
    lines = _lines(proc.stderr)
    assert len(lines) == 4, proc.stderr
    assert lines[0] == f"sedamp: stage 'mid' failed on event 0: {first}"
    assert lines[1] == f"sedamp: {failed:,} events failed; see {s['dead_letters']}"
    assert lines[2] == f"  mid: {first}, and {failed - 1:,} more like it"
    assert lines[3].startswith("error: stage 'mid' failed ")
    assert lines[3].endswith(f"events it handled, over its error budget (on_error.budget: 0.9); the first: {first}")
    [kind] = s["failures"]
    assert (kind["stage"], kind["error_type"], kind["place"], kind["count"]) == ("mid", "ValueError", FAIL_ON, failed)
    assert "Traceback (most recent call last)" in kind["traceback"]


def test_a_short_run_failing_on_every_event_is_judged_at_its_end(tmp_path: Path, workdir: Path) -> None:
    """Over before the controller's first look: the budget still holds (exit 3, not 1),
    and -v prints the first failure's traceback under it."""
    middle = f"    handler: {TESTSTAGES}:fail_on\n    params: {{modulo: 1}}\n    workers: 1"
    proc = run_sedamp("run", str(_topology(tmp_path, middle, 300)), "--workdir", str(workdir), "--no-progress", "-v")
    assert proc.returncode == 3, proc.stderr
    lines = _lines(proc.stderr)
    at = lines.index(f"sedamp: stage 'mid' failed on event 0: ValueError: n=0 is a multiple of 1 (at {FAIL_ON})")
    assert lines[at + 1] == "Traceback (most recent call last):"
    assert "error: stage 'mid' failed 300 of the 300 events it handled, over its error budget" in proc.stderr


def test_occasional_failures_are_shown_once_and_counted(tmp_path: Path, workdir: Path) -> None:
    """One event in ten fails: the run goes on to the end (exit 1), the first failure is
    shown once, and the summary counts the other 199 like it."""
    middle = f"    handler: {TESTSTAGES}:fail_on\n    params: {{modulo: 10}}\n    workers: 1"
    proc = run_sedamp("run", str(_topology(tmp_path, middle, 2000)), "--workdir", str(workdir), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 3, proc.stderr
    first = f"ValueError: n=0 is a multiple of 10 (at {FAIL_ON})"
    assert lines[0] == f"sedamp: stage 'mid' failed on event 0: {first}"
    assert lines[1].startswith("sedamp: 200 events failed; see ") and lines[1].endswith("dead-letters.jsonl")
    assert lines[2] == f"  mid: {first}, and 199 more like it"
    assert "│ mid " in proc.stdout  # the table, as before


def test_a_budget_of_one_never_stops_the_run(tmp_path: Path, workdir: Path) -> None:
    middle = (
        f"    handler: {TESTSTAGES}:fail_on\n    params: {{modulo: 1}}\n    workers: 1\n"
        "    on_error: {budget: 1}"
    )
    topo = _topology(tmp_path, middle, 300)
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert summary_of(proc)["failed"] == 300
    assert len(_lines(proc.stderr)) == 3, proc.stderr


def test_a_setup_that_raises_is_one_line(tmp_path: Path, workdir: Path) -> None:
    """It was the message three times, the traceback, a progress line and a table of
    zeros; now one line naming the stage, the exception and where it was raised."""
    topo = _topology(tmp_path, f"    handler: {TESTSTAGES}:BadSetup", 200)
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir))
    assert proc.returncode == 3
    assert proc.stdout == ""  # no table of zeros
    assert _lines(proc.stderr) == [
        f"error: setup of stage 'mid' ({TESTSTAGES}:BadSetup) raised RuntimeError: no model file at "
        f"/nonexistent/model.bin (at {_raise_line(teststages.BadSetup.setup)})"
    ]
    verbose = run_sedamp("run", str(topo), "--workdir", str(workdir), "-v")
    assert verbose.returncode == 3
    assert "Traceback (most recent call last)" in verbose.stderr


def test_verbose_reaches_the_runtimes_processes(tmp_path: Path, workdir: Path) -> None:
    """-v shows what user code in a worker logs at INFO, -vv at DEBUG, neither without
    them. The launcher starts before the command line is parsed, so the level it hands
    its children must come after it started (it did not: -v showed the command line's
    own INFO lines and nothing of the workers')."""
    topo = _topology(tmp_path, f"    handler: {TESTSTAGES}:LogsInSetup", 5)
    quiet = run_sedamp("run", str(topo), "--workdir", str(workdir), "--no-progress")
    info = run_sedamp("run", str(topo), "--workdir", str(workdir), "--no-progress", "-v")
    debug = run_sedamp("run", str(topo), "--workdir", str(workdir), "--no-progress", "-vv")
    for proc in (quiet, info, debug):
        assert proc.returncode == 0, proc.stderr
    assert "LogsInSetup" not in quiet.stderr
    assert "LogsInSetup: set up in pid" in info.stderr and "debug detail" not in info.stderr
    assert "LogsInSetup: set up in pid" in debug.stderr and "LogsInSetup: debug detail" in debug.stderr


def test_the_command_lines_level_wins_over_one_inherited(tmp_path: Path, workdir: Path) -> None:
    """A run started from a process that set SEDAMP_LOG_LEVEL (a run under `-v` that
    starts another, a harness) logs at its own command line's level: without -v its
    workers' INFO lines stayed on, since the level was sent to the launcher only for -v."""
    topo = _topology(tmp_path, f"    handler: {TESTSTAGES}:LogsInSetup", 5)
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--no-progress", env={"SEDAMP_LOG_LEVEL": "INFO"})
    assert proc.returncode == 0, proc.stderr
    assert "LogsInSetup" not in proc.stderr


def test_a_setup_that_raises_in_a_pool_of_eight_is_one_line(tmp_path: Path, workdir: Path) -> None:
    """Eight workers whose setup() raises exit within milliseconds of their start. The
    launcher reaped each at once, and the controller, opening the pidfds of the whole
    batch after the launcher's replies, found a pid gone: `ProcessLookupError` and a
    traceback in 2 runs of 3 by hand, where the setup's one line was due. (Twice: each run
    alone lost the race most of the time, not always.)"""
    topo = _topology(tmp_path, f"    handler: {TESTSTAGES}:BadSetup\n    workers: 8", 200)
    for _ in range(2):
        proc = run_sedamp("run", str(topo), "--workdir", str(workdir))
        assert proc.returncode == 3, proc.stderr
        assert _lines(proc.stderr) == [
            f"error: setup of stage 'mid' ({TESTSTAGES}:BadSetup) raised RuntimeError: no model file at "
            f"/nonexistent/model.bin (at {_raise_line(teststages.BadSetup.setup)})"
        ], proc.stderr


def test_a_missing_input_folder_is_one_line(tmp_path: Path, workdir: Path) -> None:
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "thumbnails.yaml"), "--workdir", str(workdir),
        env={"IN": "/nonexistent", "OUT": str(tmp_path / "thumbs")},
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    [line] = lines
    assert line.startswith(
        "error: source 'files' (stages.files:ListFiles) could not start: ValueError: ListFiles: root "
        "'/nonexistent' does not exist (at stages/files.py:"
    ), line


def test_a_port_in_use_is_one_line(tmp_path: Path, workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_sedamp("run", str(TOPOLOGIES / "http-service.yaml"), "--workdir", str(workdir),
                          env={"PORT": str(port)})  # fmt: skip
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    [line] = lines
    assert line.startswith(f"error: source 'http' (stages.http:HttpFrontend) could not start: RuntimeError: "
                           f"HttpFrontend cannot listen on 127.0.0.1:{port}: ")  # fmt: skip
    assert "address already in use (at stages/http/frontend.py:" in line


def test_a_param_value_run_would_refuse_is_refused_by_validate(tmp_path: Path, workdir: Path) -> None:
    """`--set thumb.params.fit=fill` passed validate and failed the run at start (exit 3,
    28 lines); both now refuse it in two lines, starting nothing (exit 2)."""
    thumbnails = str(TOPOLOGIES / "thumbnails.yaml")
    expected = [
        "error: --set: stages.thumb.params.fit: Thumbnail: fit must be one of contain, cover, exact, got 'fill' "
        "(docs/stages.md says what it accepts)",
        f"{thumbnails}: 1 problem; nothing was started",
    ]
    for command in (["validate"], ["run", "--workdir", str(workdir)]):
        proc = run_sedamp(*command[:1], thumbnails, *command[1:], "--set", "thumb.params.fit=fill")
        assert proc.returncode == 2, proc.stderr
        assert _lines(proc.stderr) == expected
    assert not (workdir / "runs").exists()


def test_a_param_value_in_the_file_is_placed_at_its_line(tmp_path: Path) -> None:
    text = (REPO / "topologies" / "thumbnails.yaml").read_text().replace("quality: 85", "quality: 101")
    topo = tmp_path / "thumbnails.yaml"
    topo.write_text(text)
    line = text.splitlines().index("      quality: 101") + 1
    proc = run_sedamp("validate", str(topo), env={"IN": str(TOPOLOGIES / "data" / "images")})
    assert proc.returncode == 2
    assert _lines(proc.stderr) == [
        f"error: {topo}:{line}: stages.thumb.params.quality: Thumbnail: quality must be an int from 1 to 100, got 101 "
        "(docs/stages.md says what it accepts)",
        f"{topo}: 1 problem; nothing was started",
    ]


def test_a_stop_that_lands_in_a_finalizer_still_unwinds_the_handler(tmp_path: Path, workdir: Path) -> None:
    """The run stops at once (here a source raises) while a worker runs a finalizer
    (CI caught one in an import's module-lock callback): the interrupt raised there
    cannot propagate, and Python printed it as "Exception ignored in ..." with a
    traceback, while the handler slept on until killed. Now the worker takes the
    interrupt again when the finalizer is over: one line, and the handler's cleanup ran."""
    marker, cleaned = tmp_path / "in-finalizer", tmp_path / "cleaned"
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"""name: t
stages:
  src: {{source: {TESTSTAGES}:FailWhen, params: {{marker: "{marker}"}}, to: mid}}
  mid:
    handler: {TESTSTAGES}:finalize_then_wait
    params: {{marker: "{marker}", cleaned: "{cleaned}"}}
    workers: 1
    to: out
  out: {{sink: stages.records:WriteJsonl, params: {{path: "{tmp_path / "out.jsonl"}"}}}}
"""
    )
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir))
    assert proc.returncode == 3, proc.stderr
    assert _lines(proc.stderr) == [
        "error: source 'src' raised after 1 event: RuntimeError: the source broke "
        f"(at {_raise_line(teststages.FailWhen.__iter__)})"
    ], proc.stderr
    assert cleaned.exists(), "the handler's finally did not run"
