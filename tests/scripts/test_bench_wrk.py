"""scripts/bench_wrk.py: wrk's output and the wrk script's lines parsed from captured
text, the figures and the target checks on synthetic rows, the front end found by its
process name, and one short live run of both drivers against the asyncio peer."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO, wait_until


def _load() -> Any:
    if str(REPO / "scripts") not in sys.path:  # as when it runs: its directory first on the path
        sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_wrk", REPO / "scripts" / "bench_wrk.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bw = _load()
bh = sys.modules["bench_http"]  # imported by bench_wrk, as when it runs

# wrk 4.1's output for a sedamp /work run past saturation (--latency), as printed, and
# the lines of scripts/bench_wrk.lua (3 threads; window of 10 s after 5 s of settling)
CAPTURED = """\
Running 15s test @ http://127.0.0.1:40123/work
  3 threads and 3 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   312.45ms  201.10ms   1.20s    71.02%
    Req/Sec   152.31     40.12   310.00     68.00%
  Latency Distribution
     50%  280.12ms
     75%  401.00ms
     90%  612.50ms
     99%    1.02s
  32104 requests in 15.10s, 4.61MB read
  Socket errors: connect 0, read 12, write 1, timeout 3
  Non-2xx or 3xx responses: 28000
Requests/sec:   2126.09
Transfer/sec:    312.60KB
bench_wrk window 1000000000 1010000000
bench_wrk thread 2 -1 200/4:100000=2,300000=2 503/10:900=10
bench_wrk thread 0 250000 200/3:200000=1,300000=1,400000=1
bench_wrk thread 1 12000000 200/3:500000=3 503/5:1100=5
"""


# ---------------------------------------------------------------------------------------
# Parsing


def test_wrk_durations_in_every_unit() -> None:
    assert bw.duration_s("812.00us") == pytest.approx(812e-6)
    assert bw.duration_s("1.23ms") == pytest.approx(0.00123)
    assert bw.duration_s("10.01s") == pytest.approx(10.01)
    assert bw.duration_s("2.00m") == 120.0
    assert bw.duration_s("1.00h") == 3600.0
    with pytest.raises(ValueError, match="not a wrk duration"):
        bw.duration_s("12 parsecs")


def test_captured_wrk_output_is_parsed() -> None:
    w = bw.parse_wrk(CAPTURED)
    assert w["requests"] == 32104 and w["runtime_s"] == pytest.approx(15.10)
    assert w["requests_per_s"] == 2126.09
    assert w["latency_ms"] == {
        "avg": 312.45,
        "stdev": 201.1,
        "max": 1200.0,
        "p50": 280.12,
        "p75": 401.0,
        "p90": 612.5,
        "p99": 1020.0,
    }
    assert w["socket_errors"] == {"connect": 0, "read": 12, "write": 1, "timeout": 3}
    assert w["non_2xx"] == 28000
    assert w["window_s"] == 10.0 and w["script_threads"] == 3
    assert w["lost"] == 3
    assert sorted(w["pending_us"]) == [250000, 12000000]
    assert w["counts"] == {200: 10, 503: 15}
    assert w["hist"][200] == {100000: 2, 200000: 1, 300000: 3, 400000: 1, 500000: 3}
    assert w["hist"][503] == {900: 10, 1100: 5}


def test_a_clean_run_has_no_error_lines() -> None:
    clean = "\n".join(
        line for line in CAPTURED.splitlines() if not line.strip().startswith(("Socket errors", "Non-2xx"))
    )
    w = bw.parse_wrk(clean)
    assert w["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert w["non_2xx"] == 0


def test_output_without_a_result_is_refused() -> None:
    with pytest.raises(bw.WrkOutputError, match="no 'requests in' line: unable to connect"):
        bw.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(bw.WrkOutputError, match="no FFI"):
        bw.parse_wrk(CAPTURED + "bench_wrk noclock\n")


def test_histogram_percentiles_match_the_load_generators() -> None:
    from loadgen import percentile

    rng = random.Random(7)
    for n in (1, 2, 9, 10, 11, 100, 1001):
        samples = [rng.randint(50, 5000) for _ in range(n)]
        hist: dict[int, int] = {}
        for s in samples:
            hist[s] = hist.get(s, 0) + 1
        for q in (0.5, 0.9, 0.99):
            assert bw.hist_percentile(hist, q) == percentile([float(s) for s in samples], q)
    assert bw.hist_percentile({}, 0.9) is None


# ---------------------------------------------------------------------------------------
# Figures


def test_wrk_figures_count_the_window_and_every_unanswered_request() -> None:
    f = bw.wrk_figures(bw.parse_wrk(CAPTURED), timeout_s=10)
    assert f["answers"] == 25 and f["refused"] == 15
    assert (f["ok_rps"], f["refused_rps"], f["all_rps"]) == (1.0, 1.5, 2.5)  # over the 10 s window
    # 200s: 100,100,200,300,300,300,400,500,500,500 ms
    assert (f["ok_p50_ms"], f["ok_p90_ms"], f["ok_p99_ms"]) == (300.0, 500.0, 500.0)
    assert f["wrk_p90_ms"] == 612.5  # wrk's own, every answer
    assert f["statuses"] == {"200": 10, "503": 15}
    assert f["socket_errors"] == 13 and f["lost"] == 3
    # wrk's 3 answers over the timeout, and the request waiting 12 s at the end
    assert f["timeouts"] == 4
    assert bw.unanswered(f) == 20


def test_loadgen_figures_take_the_same_shape() -> None:
    out = {
        "answered": 300,
        "wall_s": 10.0,
        "throughput": 30.0,
        "ok_throughput": 20.0,
        "ok_latency_ms": {"p50": 10.0, "p90": 20.0, "p99": 30.0, "max": 40.0},
        "statuses": {"200": 200, "503": 100},
        "errors": 1,
        "timeouts": 2,
    }
    f = bw.loadgen_figures(out)
    assert f.keys() == bw.wrk_figures(bw.parse_wrk(CAPTURED), 10).keys()
    assert (f["ok_rps"], f["refused_rps"], f["all_rps"]) == (20.0, 10.0, 30.0)
    assert (f["ok_p90_ms"], f["wrk_p90_ms"]) == (20.0, None)
    assert bw.unanswered(f) == 3


def test_server_figures_per_answer_and_per_refusal() -> None:
    f = {"answers": 1000, "refused": 800, "ok_rps": 20.0, "wall_s": 10.0}
    s = bw.server_figures(f, cpu_s=2.0, front_s=0.4, wall_s=10.0, work_s=1.1)
    assert s == {
        "cpu_ms_per_answer": 2.0,
        "work_ms_per_ok": 5.5,  # the handler's processes: 1.1 s over 200 answers of 200
        "server_cores": 0.2,
        "front_cores": 0.04,
        "front_ms_per_refusal": 0.5,
    }
    f = {"answers": 0, "refused": 0, "ok_rps": 0.0, "wall_s": 10.0}
    s = bw.server_figures(f, cpu_s=0.1, front_s=None, wall_s=10.0, work_s=0.0)
    assert s["cpu_ms_per_answer"] is None and s["front_cores"] is None and s["front_ms_per_refusal"] is None
    assert s["work_ms_per_ok"] is None


def test_workers_fix_the_pool_of_both_systems() -> None:
    """--workers N: gunicorn runs N workers and sedamp's /work pool is set to N."""
    args = bw.parse_args(["--workers", "1", "--connections", "4", "--hello-connections", ""])
    assert args.workers == 1
    sedamp = bh.command("sedamp", 8080, 1, None, args.workers)
    assert sedamp[sedamp.index("--set") + 1] == "work.workers=1"
    gunicorn = bh.command("gunicorn", 8080, args.workers)
    assert gunicorn[gunicorn.index("-w") + 1] == "1"
    assert "--set" not in bh.command("sedamp", 8080, 2)  # by default, the pool as the topology writes it


def test_points_reverse_in_odd_rounds() -> None:
    points = [("/work", 4), ("/work", 512), ("/hello", 4)]
    assert bw.point_order(points, 0) == points
    assert bw.point_order(points, 1) == points[::-1]
    assert bw.point_order(points, 2) == points


# ---------------------------------------------------------------------------------------
# Targets


def row(system: str, path: str, n: int, rnd: int = 0, driver: str = "wrk", **kw: Any) -> dict[str, Any]:
    r = {
        "round": rnd,
        "system": system,
        "driver": driver,
        "path": path,
        "connections": n,
        "ok_rps": 100.0,
        "refused_rps": 0.0,
        "all_rps": 100.0,
        "ok_p50_ms": 10.0,
        "ok_p90_ms": 20.0,
        "ok_p99_ms": 30.0,
        "wrk_p90_ms": 25.0,
        "socket_errors": 0,
        "lost": 0,
        "timeouts": 0,
        "cpu_ms_per_answer": 5.0,
        "server_cores": 1.0,
        "gen_cores": 0.1,
        "front_cores": 0.1 if system == "sedamp" else None,
        "front_ms_per_refusal": 0.05 if system == "sedamp" else None,
    }
    return r | kw


def healthy(rounds: int = 3) -> list[dict[str, Any]]:
    """Every target met: sedamp even with gunicorn, 200s' p90 well under the limits."""
    rows = []
    for rnd in range(rounds):
        for system in ("sedamp", "gunicorn", "asyncio"):
            rows.append(row(system, "/work", 4, rnd))
            rows.append(row(system, "/work", 32, rnd))
            for n in (256, 512):
                refused = 2000.0 if system == "sedamp" else 0.0
                rows.append(row(system, "/work", n, rnd, ok_p90_ms=200.0, refused_rps=refused))
            rows.append(row(system, "/hello", 4, rnd, ok_rps=1000.0, ok_p90_ms=1.5))
    return rows


def verdicts(rows: list[dict[str, Any]], driver: str = "wrk") -> dict[str, bool | None]:
    return {c["target"]: c["met"] for c in bw.evaluate_targets(rows, driver, 250.0)}


def test_every_target_met_on_healthy_rows() -> None:
    v = verdicts(healthy())
    assert len(v) == 11 and all(v.values()), v
    lines = bw.target_lines(bw.evaluate_targets(healthy(), "wrk", 250.0), "wrk")
    assert lines[0] == "wrk: the targets"
    assert lines[7] == (
        "  /work at 512: p90 of 200s <= 300 ms (1.2x target_p90_ms 250): met (highest 200 ms; rounds 200, 200, 200)"
    )


def _set(rows: list[dict[str, Any]], system: str, point: tuple[str, int], rnd: int | None = None, **kw: Any) -> None:
    for r in rows:
        if (r["system"], r["path"], r["connections"]) == (system, *point) and rnd in (None, r["round"]):
            r.update(kw)


def test_each_target_fails_on_its_own() -> None:
    cases = [
        (("/work", 4), {"ok_rps": 90.0}, "/work at 4: 200s per second >= 0.95x gunicorn's"),
        (("/work", 4), {"ok_p90_ms": 25.0}, "/work at 4: p90 of 200s <= 1.2x gunicorn's"),
        (("/work", 256), {"ok_rps": 94.0}, "/work at 256: 200s per second >= 0.95x gunicorn's"),
        (("/work", 512), {"ok_p90_ms": 301.0}, "/work at 512: p90 of 200s <= 300 ms (1.2x target_p90_ms 250)"),
        (("/work", 512), {"lost": 1}, "/work at 512: no connection error or timeout"),
        (("/work", 256), {"timeouts": 1}, "/work at 256: no connection error or timeout"),
        (("/hello", 4), {"ok_rps": 400.0}, "/hello at 4: 200s per second >= 0.5x gunicorn's"),
        (("/hello", 4), {"ok_p90_ms": 2.1}, "/hello at 4: p90 of 200s <= 2 ms"),
        (("/work", 512), {"front_cores": 0.3}, "front end under overload (/work at 256 and 512) <= 0.25 cores"),
    ]
    for point, change, target in cases:
        rows = healthy()
        _set(rows, "sedamp", point, **change)
        v = verdicts(rows)
        assert v[target] is False, (target, change)
        assert sum(1 for met in v.values() if met is False) == 1, (target, v)


def test_ratios_are_taken_within_rounds_and_their_median_checked() -> None:
    rows = healthy()
    # round 1 runs 30% slower for both systems (the machine drifted): each round's ratio is 1.0
    _set(rows, "sedamp", ("/work", 4), 1, ok_rps=70.0)
    _set(rows, "gunicorn", ("/work", 4), 1, ok_rps=70.0)
    assert verdicts(rows)["/work at 4: 200s per second >= 0.95x gunicorn's"] is True
    # one round's dip of sedamp alone is outvoted by the other two
    _set(rows, "sedamp", ("/work", 4), 2, ok_rps=80.0)
    checks = {c["target"]: c for c in bw.evaluate_targets(rows, "wrk", 250.0)}
    c = checks["/work at 4: 200s per second >= 0.95x gunicorn's"]
    assert c["met"] and c["value"] == 1.0 and c["detail"] == "median 1.00x; rounds 1.00, 1.00, 0.80"


def test_absolute_limits_hold_in_every_round() -> None:
    rows = healthy()
    _set(rows, "sedamp", ("/work", 256), 2, ok_p90_ms=400.0)  # one round of three over
    c = next(c for c in bw.evaluate_targets(rows, "wrk", 250.0) if c["target"].startswith("/work at 256: p90"))
    assert c["met"] is False and c["detail"] == "highest 400 ms; rounds 200, 200, 400"


def test_front_end_check_names_the_worst_point_and_the_cpu_per_refusal() -> None:
    rows = healthy()
    _set(rows, "sedamp", ("/work", 256), 1, front_cores=0.2, front_ms_per_refusal=0.09)
    c = bw.front_end_check(rows, "wrk")
    assert c["met"] and c["value"] == 0.2
    assert c["detail"] == "highest 0.200 cores at 256 connections, round 1; CPU per refusal (median) 0.050 ms"


def test_targets_without_their_points_are_not_measured() -> None:
    rows = [r for r in healthy() if r["system"] != "gunicorn" and r["connections"] != 512]
    v = verdicts(rows)
    assert v["/work at 4: 200s per second >= 0.95x gunicorn's"] is None
    assert v["/work at 512: no connection error or timeout"] is None
    assert v["/work at 256: p90 of 200s <= 300 ms (1.2x target_p90_ms 250)"] is True  # needs no baseline
    assert verdicts(healthy(), driver="loadgen") == dict.fromkeys(verdicts(healthy()), None)  # no loadgen rows
    line = bw.target_lines(bw.evaluate_targets(rows, "loadgen", 250.0), "loadgen")[1]
    assert line.endswith("not measured (no round with both systems)")


def test_summary_lines_and_row_lines() -> None:
    rows = healthy(2)
    rows[0]["ok_rps"] = 80.0
    s = bw.summarize(rows)
    assert [(e["system"], e["path"], e["connections"]) for e in s[:6]] == [
        ("sedamp", "/work", 4),
        ("sedamp", "/work", 32),
        ("sedamp", "/work", 256),
        ("sedamp", "/work", 512),
        ("sedamp", "/hello", 4),
        ("gunicorn", "/work", 4),
    ]
    assert (s[0]["ok_rps"], s[0]["ok_rps_lowest"], s[0]["ok_rps_highest"]) == (90.0, 80.0, 100.0)
    assert s[3]["refused_rps"] == 2000.0 and s[3]["front_cores_highest"] == 0.1
    lines = bw.summary_lines(s)
    assert "summary over 2 rounds" in lines[0] and len(lines) == 2 + len(s)
    assert len(bw.row_line(rows[0])) == len(bw.ROW_HEADER)


def test_the_route_target_is_read_from_the_topology() -> None:
    assert bw.route_target_p90_ms() == 250.0


# ---------------------------------------------------------------------------------------
# The process side


def test_the_front_end_is_found_by_its_process_name() -> None:
    """A child named as sedamp names the front end, that spends CPU: counted; a process
    tree without one: None."""
    code = (
        "from sedamp.runtime.lifeline import set_name\nimport sys, time\nset_name('sds:http')\n"
        "t = time.process_time()\nwhile time.process_time() - t < 0.2: pass\nsys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE)
    try:
        wait_until(lambda: (bw.front_end_cpu_s(child.pid) or 0.0) >= 0.2, 30, "the front end's CPU counted")
    finally:
        child.communicate(timeout=10)
    assert bw.front_end_cpu_s(child.pid) is None  # gone
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert bw.front_end_cpu_s(sleeper.pid) is None
    finally:
        sleeper.communicate(timeout=10)


def test_waiting_for_an_idle_server_returns_once_it_is() -> None:
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    # 1 core busy for three periods, then nearly idle (sedamp's controller)
    cpu = iter([0.0, 0.25, 0.5, 0.75, 0.76, 0.77])
    assert bw.wait_idle(lambda: next(cpu), 0.25, sleep, lambda: clock[0]) == 1.0
    # never idle: gives up after IDLE_WAIT_S
    busy = iter(float(i) for i in range(1000))
    assert bw.wait_idle(lambda: next(busy), 0.25, sleep, lambda: clock[0] - 1.0) == bw.IDLE_WAIT_S


def test_missing_wrk_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bw, "wrk_version", lambda: None)
    assert bw.main(["--smoke", "--systems", "asyncio"]) == 2
    err = capsys.readouterr().err
    assert err == "bench_wrk: wrk is not installed: sudo apt-get install wrk (Debian, Ubuntu), or --drivers loadgen\n"


def test_bad_arguments_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--systems", "nginx"], "--systems nginx: each must be one of sedamp, gunicorn, asyncio"),
        (["--connections", "4,x"], "--connections and --hello-connections take comma-separated whole numbers"),
        (["--settle", "-1"], "--settle >= 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            bw.parse_args(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (sudo apt-get install wrk)")
def test_a_smoke_run_of_both_drivers(tmp_path: Any) -> None:
    """A live run (--smoke: 1 s settling + 1 s measured) of both drivers against the
    asyncio peer, at two /work counts and one /hello count: every run answered, nothing
    lost (the script pairs each request with its answer), the window about 1 s, and the
    peer server stopped at the end (the leftover check of conftest)."""
    out = tmp_path / "run.json"
    cmd = [sys.executable, "scripts/bench_wrk.py", "--smoke", "--systems", "asyncio", "--connections", "8"]
    cmd += ["--hello-connections", "2", "--iterations", "2000", "--json", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "work    : 2000 iterations" in r.stdout and "wrk: the targets" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["target_p90_ms"] == 250.0 and saved["wrk"].startswith("wrk ")
    got = {(p["driver"], p["path"], p["connections"]): p for p in saved["rows"]}
    assert sorted(got) == sorted((d, p, n) for d in ("wrk", "loadgen") for p, n in (("/work", 8), ("/hello", 2)))
    for p in got.values():
        assert p["ok_rps"] > 0 and p["statuses"].keys() == {"200"}, p
        assert p["socket_errors"] == p["lost"] == p["timeouts"] == 0, p
        assert p["ok_p50_ms"] <= p["ok_p90_ms"] <= p["ok_p99_ms"]
        assert p["cpu_ms_per_answer"] > 0 and p["front_cores"] is None
    assert 0.9 <= got[("wrk", "/work", 8)]["wall_s"] <= 1.6  # the measured window, not the settling
    assert set(saved["targets"]) == {"wrk", "loadgen"}
