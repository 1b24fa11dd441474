"""sedamp.observe.report over a metrics file written by hand in the documented format (docs/controller.md,
"Metrics stream"), and the `sedamp report` command's exit codes."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sedamp.errors import ReportError
from sedamp.observe import report
from sedamp.observe.report import PLOTS, read_records, summarize, write_report
from tests.integration.util import run_sedamp

N_RECORDS = 10
PERIOD_S = 0.5
# matplotlib's tab10, in stage order: each stage keeps its colour in every plot
BLUE, ORANGE, GREEN, RED = (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)
STAGE_COLOURS = {"src": BLUE, "work": ORANGE, "save": GREEN, "audit": RED}


def _lat(p50: float, p90: float, p99: float) -> dict[str, float]:
    return {"p50": p50, "p90": p90, "p99": p99}


def _stage(kind: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": kind,
        "group": None,
        "workers": 1,
        "target": 1,
        "bounds": [1, 1],
        "queue": {"length": 0, "capacity": 1024, "leased": 0, "credit": 512},
        "events_in": 0,
        "events_out": 0,
        "failed": 0,
        "dropped": 0,
        "rejected": 0,
        "retried": 0,
        "skipped": 0,
        "duplicates": 0,
        "poisoned": 0,
        "timeouts": 0,
        "recycled": 0,
        "restarts": 0,
        "arrivals_per_s": 0.0,
        "completions_per_s": 0.0,
        "batch_size": None,
        "events_per_batch": None,
        "latency_ms": {"queue_wait": None, "service": None, "path": None},
        "worker_detail": [],
    }
    base.update(fields)
    return base


def synthetic_record(i: int) -> dict[str, Any]:
    """Period i of a made-up run: src (source, 100 events) -> work (handler, grows to two
    workers at period 3, fails 2 events) -> save (sink); a second sink `audit` appears at
    period 3 and never measures a latency; the last record is the final one, with no
    latency measured in work."""
    final = i == N_RECORDS - 1
    read = min(100, 25 * (i + 1))
    done = min(100, 12 * (i + 1)) if not final else 100
    workers = 1 if i < 3 else 2
    detail = [
        {"index": k, "pid": 1000 + k, "cpu_percent": 95.0 if not (i == 5 and k == 1) else None, "rss_mb": 30.0 + k}
        for k in range(workers)
    ]
    for w in detail:
        w["busy"] = 0.9
    stages: dict[str, Any] = {
        "src": _stage(
            "source",
            workers=0,
            target=0,
            queue=None,
            events_in=read,
            events_out=read,
            total=100,
            arrivals_per_s=50.0 if read < 100 else 0.0,
            completions_per_s=50.0 if read < 100 else 0.0,
        ),
        "work": _stage(
            "handler",
            workers=workers,
            target=workers,
            bounds=[1, 2],
            queue={"length": max(0, read - done - 10), "capacity": 64, "leased": 8, "credit": 0},
            events_in=done,
            events_out=done - (2 if final else 0),
            failed=2 if final else 0,
            arrivals_per_s=50.0,
            completions_per_s=24.0 + i,
            batch_size=8.0,
            events_per_batch=6.5,
            latency_ms={
                "queue_wait": None if i == 0 or final else _lat(100.0 + 10 * i, 200.0 + 10 * i, 250.0 + 10 * i),
                "service": None if i == 0 or final else _lat(5.0 + i, 10.0 + i, 12.0 + i),
                "path": None,
            },
            worker_detail=detail,
        ),
        "save": _stage(
            "sink",
            queue={"length": i % 3, "capacity": 1024, "leased": 2, "credit": 100},
            events_in=done - (2 if final else 0),
            events_out=done - (2 if final else 0),
            completions_per_s=20.0 + i,
            latency_ms={
                "queue_wait": _lat(0.1, 0.2, 0.3),
                "service": _lat(0.02, 0.05, 0.08),
                "path": _lat(50.0 * (i + 1), 100.0 * (i + 1), 120.0 * (i + 1)),
            },
            worker_detail=[{"index": 0, "pid": 2000, "cpu_percent": 5.0, "rss_mb": 25.0, "busy": 0.1}],
        ),
    }
    if i >= 3:
        stages["audit"] = _stage(
            "sink", events_in=5 * (i - 2), events_out=5 * (i - 2), completions_per_s=10.0 + 3 * (i % 2)
        )
    # src is held back by work from period 2 on (work named bottleneck); save waits for input
    stages["src"].update(blocked_s_per_s=0.2 if i < 2 else 0.9, waiting_s_per_s=0.05)
    stages["work"].update(blocked_s_per_s=0.0, waiting_s_per_s=0.1 * workers if i < 2 else 0.0)
    stages["save"].update(blocked_s_per_s=0.0, waiting_s_per_s=0.8)
    held = {"stage": "work", "reason": "src was blocked 90% of the period: ..."} if i >= 2 else None
    decisions = [{"stage": "work", "from": 1, "to": 2, "reason": "queue 40/64 and workers 100% busy: grow to 2"}]
    return {
        "t": 1_700_000_000.0 + PERIOD_S * (i + 1),
        "elapsed_s": PERIOD_S * (i + 1),
        "final": final,
        "system": {"cores": 2, "cpu_percent": 60.0 + 3 * i if i != 4 else None, "load1": 1.5},
        "stages": stages,
        "bottleneck": held,
        "decisions": decisions if i == 2 else [],
    }


def write_metrics(path: Path, records: list[dict[str, Any]] | None = None, tail: str = "") -> Path:
    records = [synthetic_record(i) for i in range(N_RECORDS)] if records is None else records
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


EXPECTED_ROWS = [
    ["src", "source", "100", "100", "0", "1", "–", "–"],
    ["work", "handler", "100", "98", "2", "2", "18.0", "–"],
    ["save", "sink", "98", "98", "0", "1", "0.05", "1,000.0"],
    ["audit", "sink", "35", "35", "0", "1", "–", "–"],
]


def html_table_rows(page: str) -> list[list[str]]:
    """The body rows of the first table of the page, as cell texts."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def colours_of(path: Path) -> set[tuple[int, int, int]]:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        return {c for _, c in rgb.getcolors(rgb.width * rgb.height)}


# --- reading and summing --------------------------------------------------------------


def test_summarize_totals(tmp_path: Path) -> None:
    totals = summarize(read_records(write_metrics(tmp_path / "m.jsonl")))
    assert totals.records == N_RECORDS
    assert totals.duration_s == PERIOD_S * N_RECORDS
    assert totals.finished is True
    assert totals.events_read == 100
    assert totals.events_per_s == 100 / (PERIOD_S * N_RECORDS)
    assert totals.started_at == 1_700_000_000.5
    assert [s.name for s in totals.stages] == ["src", "work", "save", "audit"]  # audit appeared late
    work = totals.stages[1]
    assert (work.events_in, work.events_out, work.failed, work.peak_workers) == (100, 98, 2, 2)
    assert work.service_p90_ms == 18.0  # the final period measured nothing: the last one that did
    assert work.path_p90_ms is None
    assert totals.stages[2].path_p90_ms == 1000.0
    assert totals.decisions == (
        {
            "elapsed_s": 1.5,
            "stage": "work",
            "from": 1,
            "to": 2,
            "reason": synthetic_record(2)["decisions"][0]["reason"],
        },
    )


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cut = json.dumps(synthetic_record(N_RECORDS))[:150]  # a run killed while writing
    records = [synthetic_record(i) for i in range(N_RECORDS - 1)]  # no final record
    path = write_metrics(tmp_path / "m.jsonl", records, tail=cut)
    with caplog.at_level(logging.WARNING, logger="sedamp.observe.report"):
        got = read_records(path)
    assert got == records
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:{N_RECORDS}: skipped an incomplete last line (the run stopped while writing it)"
    ]
    totals = summarize(got)
    assert totals.finished is False
    assert totals.duration_s == PERIOD_S * (N_RECORDS - 1)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(content)
    with pytest.raises(ReportError) as err:
        read_records(path)
    assert str(err.value) == (
        f"{path}: the file is empty: no metrics records (did the run stop before its first period?)"
    )


def test_bad_line_before_the_last_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    lines = [json.dumps(synthetic_record(0)), '{"elapsed_s": 1.0, "sta', json.dumps(synthetic_record(2))]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=rf"^{re.escape(str(path))}:2: not JSON \("):
        read_records(path)


@pytest.mark.parametrize(
    "line", ["[1, 2, 3]", '{"elapsed_s": 1.0}', '{"stages": {}}', '{"elapsed_s": "1", "stages": {}}']
)
def test_json_that_is_not_a_record_is_an_error(tmp_path: Path, line: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(synthetic_record(0)) + "\n" + line + "\n")
    with pytest.raises(ReportError, match=rf"^{re.escape(str(path))}:2: not a metrics record"):
        read_records(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no such file \(write one with: sedamp run TOPOLOGY --metrics "):
        read_records(tmp_path / "nope.jsonl")


def test_null_values_and_late_stages_are_gaps(tmp_path: Path) -> None:
    """A record whose numbers are all null still makes a report (gaps in the lines)."""
    rec = synthetic_record(1)
    for st in rec["stages"].values():
        for key in ("workers", "events_in", "completions_per_s", "queue"):
            st[key] = None
        st["latency_ms"] = None
        st["worker_detail"] = [{"index": 0, "pid": None, "cpu_percent": None, "rss_mb": None, "busy": None}]
    rec["system"] = None
    records = [synthetic_record(0), synthetic_record(5), rec]
    index = write_report(write_metrics(tmp_path / "m.jsonl", records), tmp_path / "out")
    assert index.is_file()
    work = summarize(records).stages[1]
    assert (work.events_in, work.peak_workers) == (synthetic_record(5)["stages"]["work"]["events_in"], 2)
    for file, _ in PLOTS:
        assert (tmp_path / "out" / file).stat().st_size > 0


# --- the report -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    index = write_report(write_metrics(out / "metrics.jsonl"), out)
    assert index == out / "index.html"
    return out


def test_every_plot_is_a_png_with_content(made: Path) -> None:
    for file, _ in PLOTS:
        path = made / file
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", file
        with Image.open(path) as img:
            assert img.format == "PNG"
            # the throughput plot has a panel per stage (4 here) and one for the sinks' total
            sizes = {"cpu.png": (990, 704), "blocked.png": (990, 704), "throughput.png": (990, 1012)}
            assert img.size == sizes.get(file, (990, 506)), file
        colours = colours_of(path)
        assert len(colours) > 50, f"{file}: {len(colours)} colours: nearly flat"
    assert not list(made.glob(".*.tmp")), "temporary files left behind"


def test_each_stage_has_its_colour_and_stages_without_samples_are_left_out(made: Path) -> None:
    queue = colours_of(made / "queue_length.png")
    assert {ORANGE, GREEN, RED} <= queue and BLUE not in queue  # a source has no queue
    throughput = colours_of(made / "throughput.png")
    assert set(STAGE_COLOURS.values()) <= throughput
    assert (0, 0, 0) in throughput  # two sinks: their total in black
    path = colours_of(made / "latency_path.png")
    assert GREEN in path and not {BLUE, ORANGE, RED} & path  # only save measured a path
    service = colours_of(made / "latency_service.png")
    assert {ORANGE, GREEN} <= service and not {BLUE, RED} & service
    for file in ("workers.png", "cpu.png", "memory.png"):
        pools = colours_of(made / file)
        assert {ORANGE, GREEN} <= pools and BLUE not in pools, file  # pools: no source
    blocked = colours_of(made / "blocked.png")
    assert {BLUE, ORANGE, GREEN} <= blocked and RED not in blocked  # audit measured no wait


def test_index_references_every_plot_and_has_the_totals(made: Path) -> None:
    page = (made / "index.html").read_text()
    for file, caption in PLOTS:
        assert f'<a href="{file}"><img src="{file}" alt="{caption}"></a>' in page
    assert html_table_rows(page) == EXPECTED_ROWS
    assert "<th>peak workers</th>" in page and "<th>dropped</th>" not in page
    assert "5.00 s; the run finished" in page
    assert "sources read 100 events: 20.0 events/s" in page
    assert "bottleneck: work, in 8 of 10 records" in page
    assert '<a href="metrics.jsonl">' in page
    assert '<td>1.50</td><td class="text">work</td><td>1 → 2</td>' in page  # the pool decision


def test_summary_md_has_the_same_table(made: Path) -> None:
    md = (made / "summary.md").read_text()
    for row in EXPECTED_ROWS:
        assert "| " + " | ".join(row) + " |" in md
    for file, caption in PLOTS:
        assert f"![{caption}]({file})" in md
    assert "- sources read 100 events: 20.0 events/s" in md


def test_dropped_and_rejected_columns_appear_when_any(tmp_path: Path) -> None:
    records = [synthetic_record(i) for i in range(N_RECORDS)]
    records[-1]["stages"]["save"]["dropped"] = 7
    index = write_report(write_metrics(tmp_path / "m.jsonl", records), tmp_path / "out")
    rows = html_table_rows(index.read_text())
    assert rows[2] == ["save", "sink", "98", "98", "0", "7", "0", "1", "0.05", "1,000.0"]


def test_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert report.plotting_problem() == "plotting needs matplotlib: pip install 'sedamp[plot]'"
    with pytest.raises(ReportError, match=r"^plotting needs matplotlib"):
        write_report(write_metrics(tmp_path / "m.jsonl"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plotting_problem_none_with_matplotlib() -> None:
    assert report.plotting_problem() is None


# --- the command ------------------------------------------------------------------------


def test_cli_writes_the_report(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "run.jsonl")
    r = run_sedamp("report", str(metrics), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tmp_path / 'out' / 'index.html'}\n"
    assert "error" not in r.stderr.lower() and "WARNING: /" not in r.stderr, r.stderr
    assert all((tmp_path / "out" / f).is_file() for f, _ in PLOTS)


def test_cli_default_directory_is_beside_the_metrics(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "run.jsonl")
    r = run_sedamp("report", str(metrics))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tmp_path / 'run-report' / 'index.html'}\n"


def test_cli_truncated_last_line_warns_and_succeeds(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "m.jsonl", tail='{"t": 17000')
    r = run_sedamp("report", str(metrics), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    warning = f"sedamp: WARNING: {metrics}:{N_RECORDS + 1}: skipped an incomplete last line (the run stopped while writing it)"
    assert warning in r.stderr.splitlines(), r.stderr
    assert "error" not in r.stderr.lower()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file (write one with: sedamp run TOPOLOGY --metrics {path})"),
        (b"", "the file is empty: no metrics records (did the run stop before its first period?)"),
        (
            b"\x00\x01garbage\n\xff\xfe more garbage\n",
            "1: not JSON (Expecting value); a metrics file holds one JSON object per line, as written by sedamp run --metrics FILE",
        ),
        (
            b"this is not json\n",
            "no metrics record: its only line is not JSON (not a metrics file, or the run stopped while writing its first record)",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "m.jsonl"
    if content is not None:
        path.write_bytes(content)
    r = run_sedamp("report", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    sep = ":" if message[0].isdigit() else ": "
    assert lines == [f"error: {path}{sep}{message.format(path=path)}"], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_unwritable_output_exits_1(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "m.jsonl")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    r = run_sedamp("report", str(metrics), "-o", str(blocker / "out"))
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: cannot write the report into {blocker / 'out'}: ")
    assert len(r.stderr.splitlines()) == 1


def test_cli_without_matplotlib_exits_2(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    metrics = write_metrics(tmp_path / "m.jsonl")
    env = {"PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    r = run_sedamp("report", str(metrics), "-o", str(tmp_path / "out"), env=env)
    assert r.returncode == 2
    assert r.stderr == "error: plotting needs matplotlib: pip install 'sedamp[plot]'\n"
    assert not (tmp_path / "out").exists()


def test_cli_help_has_an_example() -> None:
    r = run_sedamp("report", "--help")
    assert r.returncode == 0
    assert "Example: sedamp report burn.jsonl -o burn-report" in r.stdout


@pytest.mark.parametrize(
    "bad",
    [
        {"decisions": 5},
        {"t": 1e20},
        {"decisions": [{"stage": "a", "from": 1, "to": 2, "reason": "x", "elapsed_s": "x"}]},
    ],
)
def test_records_with_values_of_the_wrong_type_are_a_report_error(tmp_path: Path, bad: dict[str, Any]) -> None:
    """A record of the right shape but with wrong values: ReportError naming the file."""
    records = [synthetic_record(i) for i in range(6)]
    for r in records:
        r.update(bad)
    path = write_metrics(tmp_path / "m.jsonl", records)
    with pytest.raises(ReportError, match=r"m\.jsonl"):
        write_report(path, tmp_path / "out")
