"""scripts/bench_http.py: the order of the rounds, the per-point machine speed, the
summary over rounds and sedamp's target checks, on synthetic rows; one short live run of a
peer server."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import REPO


def _load() -> Any:
    if str(REPO / "scripts") not in sys.path:  # as when it runs: its directory first on the path
        sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_http", REPO / "scripts" / "bench_http.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bh = _load()


def row(
    clients: int,
    ok: float,
    rnd: int = 0,
    system: str = "sedamp",
    p90: float | None = 100.0,
    mx: float | None = 150.0,
    jain: float | None = 0.99,
    refused: int = 0,
    timeouts: int = 0,
    errors: int = 0,
    efficiency: float | None = None,
) -> dict[str, Any]:
    """One point as run_system records it (loadgen's JSON plus round, system and speed)."""
    r = {
        "round": rnd,
        "system": system,
        "clients": clients,
        "ok_throughput": ok,
        "throughput": ok + refused / 20,
        "ok_latency_ms": {"p50": None if p90 is None else p90 / 2, "p90": p90, "p99": p90, "max": mx},
        "latency_ms": {"p50": None, "p90": p90, "p99": p90, "max": mx},
        "statuses": {"200": int(ok * 20), **({"503": refused} if refused else {})},
        "timeouts": timeouts,
        "errors": errors,
        "per_client": {"min": 1, "max": 2, "jain": jain},
    }
    if efficiency is not None:
        r |= {"cost_ms": 5.0, "limit_rps": 400.0, "efficiency": efficiency}
    return r


def rounds_of(*throughputs: list[float], counts: tuple[int, ...] = (4, 16, 64, 256), **kw: Any) -> list[dict[str, Any]]:
    """sedamp rows: one list of 200s per second (one per client count) per round."""
    return [row(c, ok, rnd, **kw) for rnd, oks in enumerate(throughputs) for c, ok in zip(counts, oks, strict=True)]


FLAT = [100.0, 380.0, 400.0, 390.0]  # saturation at 16 (95% of 400), every later count >= 95%


# ---------------------------------------------------------------------------------------
# Order of the runs


def test_the_system_order_rotates_by_one_each_round() -> None:
    systems = ["sedamp", "gunicorn", "asyncio"]
    assert bh.rotation(systems, 0) == ["sedamp", "gunicorn", "asyncio"]
    assert bh.rotation(systems, 1) == ["gunicorn", "asyncio", "sedamp"]
    assert bh.rotation(systems, 2) == ["asyncio", "sedamp", "gunicorn"]
    assert bh.rotation(systems, 3) == systems
    assert bh.rotation(["sedamp"], 5) == ["sedamp"]
    assert bh.rotation([], 1) == []
    # over as many rounds as systems, each system runs once in each position
    for pos in range(3):
        assert sorted(bh.rotation(systems, r)[pos] for r in range(3)) == sorted(systems)


def test_client_counts_run_ascending_and_descending_in_turn() -> None:
    counts = [64, 4, 256, 16]
    assert bh.client_order(counts, 0) == [4, 16, 64, 256]
    assert bh.client_order(counts, 1) == [256, 64, 16, 4]
    assert bh.client_order(counts, 2) == [4, 16, 64, 256]
    # over two rounds each count's positions add up to the same: a drift over a round
    # (the machine slowing steadily) weighs on every count alike
    for c in counts:
        assert bh.client_order(counts, 0).index(c) + bh.client_order(counts, 1).index(c) == len(counts) - 1
    assert bh.client_order(counts, 1, "ascending") == [4, 16, 64, 256]
    with pytest.raises(ValueError, match="order must be one of"):
        bh.client_order(counts, 0, "random")


# ---------------------------------------------------------------------------------------
# Machine speed


def test_machine_speed_times_the_work_over_the_cpu_budget() -> None:
    calls: list[tuple[int, int]] = []

    def spin(n: int, seed: int) -> int:
        calls.append((n, seed))
        x = 0
        for i in range(n):
            x += i
        return x

    cost = bh.machine_speed(spin, 20_000, cpu_s=0.02)
    assert cost > 0
    assert len(calls) >= 1 and all(n == 20_000 for n, _ in calls)
    assert [s for _, s in calls] == list(range(len(calls)))  # a different seed each call
    assert cost * len(calls) >= 0.02


def test_with_speed_records_cost_limit_and_efficiency() -> None:
    out = bh.with_speed(row(16, 300.0), cost_s=0.005, cores=2)
    assert out["cost_ms"] == 5.0
    assert out["limit_rps"] == 400.0
    assert out["efficiency"] == pytest.approx(0.75)
    slower = bh.with_speed(row(16, 300.0), cost_s=0.0075, cores=2)  # the machine a third slower
    assert slower["limit_rps"] == pytest.approx(266.7)
    assert slower["efficiency"] > 1.0


# ---------------------------------------------------------------------------------------
# Summary over rounds


def test_summary_takes_medians_highest_latencies_and_totals() -> None:
    rows = [
        row(16, 300.0, 0, p90=80, mx=120, jain=0.999, efficiency=0.70),
        row(16, 360.0, 1, p90=95, mx=300, jain=0.990, refused=3, efficiency=0.80),
        row(16, 330.0, 2, p90=90, mx=110, jain=0.995, timeouts=1, errors=2, efficiency=0.78),
        row(4, 120.0, 0, efficiency=0.3),
        row(4, 110.0, 1, system="asyncio"),
    ]
    s = bh.summarize(rows)
    assert [(e["system"], e["clients"]) for e in s] == [("sedamp", 4), ("sedamp", 16), ("asyncio", 4)]
    e = s[1]
    assert e["rounds"] == 3
    assert e["ok_throughput"] == 330.0
    assert (e["ok_throughput_lowest"], e["ok_throughput_highest"]) == (300.0, 360.0)
    assert e["efficiency"] == 0.78
    assert e["p90_ms_highest"] == 95
    assert e["max_ms_highest"] == 300
    assert e["jain"] == 0.995
    assert e["jain_lowest"] == 0.990
    assert e["refused"] == 3
    assert e["unanswered"] == 3
    assert s[2]["efficiency"] is None  # no speed recorded
    lines = bh.summary_lines(s)
    assert "over 3 rounds" in lines[0]
    assert any(" 330.0" in ln and "300.0-360.0" in ln for ln in lines)


def test_summary_ignores_missing_latencies_and_jain() -> None:
    s = bh.summarize([row(4, 0.0, 0, p90=None, mx=None, jain=None), row(4, 10.0, 1, p90=None, mx=50, jain=0.9)])
    assert s[0]["p90_ms_highest"] is None
    assert s[0]["max_ms_highest"] == 50
    assert s[0]["jain"] == 0.9


# ---------------------------------------------------------------------------------------
# Targets


def test_median_shares_take_the_median_per_count_then_the_peak() -> None:
    rows = rounds_of([100.0, 400.0, 300.0, 380.0], [80.0, 300.0, 320.0, 320.0], [90.0, 360.0, 330.0, 330.0])
    med, peak, share = bh.median_shares(rows)
    assert med == {4: 90.0, 16: 360.0, 64: 320.0, 256: 330.0}
    assert peak == 360.0
    assert share[16] == 1.0 and share[64] == pytest.approx(320 / 360)
    assert bh.median_shares(rounds_of([0.0, 0.0, 0.0, 0.0]))[2] == {4: 0.0, 16: 0.0, 64: 0.0, 256: 0.0}
    assert bh.median_shares([]) == ({}, 0.0, {})


def test_ratios_are_to_each_rounds_own_peak() -> None:
    ratios = bh.throughput_ratios(rounds_of([100.0, 400.0, 400.0, 380.0], [80.0, 300.0, 320.0, 320.0]))
    assert ratios[0] == {4: 0.25, 16: 1.0, 64: 1.0, 256: 0.95}
    assert ratios[1][64] == 1.0 and ratios[1][16] == pytest.approx(300 / 320)


def test_all_targets_met_on_flat_rounds() -> None:
    t = bh.evaluate_targets(rounds_of(FLAT, FLAT, FLAT))
    assert t["saturation"] == 16 and t["saturation_found"]
    assert t["throughput"]["met"] and t["p90"]["met"] and t["jain"]["met"] and t["unanswered"]["met"]
    lines = bh.check_targets(rounds_of(FLAT, FLAT, FLAT))
    verdicts = [ln.strip() for ln in lines if ln.strip().startswith(("throughput", "p90", "Jain", "nothing"))]
    assert len(verdicts) == 4
    assert all(": met (" in ln for ln in verdicts)


def test_a_dip_in_one_round_is_absorbed_by_the_median() -> None:
    # round 1 loses 20% at 64 clients (the machine slowed down for that point)
    rows = rounds_of(FLAT, [100.0, 380.0, 320.0, 390.0], FLAT)
    t = bh.evaluate_targets(rows)
    assert t["throughput"]["met"]
    assert t["throughput"]["lowest_single"] == pytest.approx(320 / 390)
    assert (t["throughput"]["lowest_single_round"], t["throughput"]["lowest_single_clients"]) == (1, 64)
    lines = bh.check_targets(rows)
    assert any(ln.strip().startswith("throughput >= 95% of peak to 8x saturation: met") for ln in lines)
    assert any("82.1%" in ln for ln in lines)  # the per-round ratio is shown
    # the single-pass rule would fail on that round alone
    assert not bh.evaluate_targets([r for r in rows if r["round"] == 1])["throughput"]["met"]


def test_a_count_whose_median_is_below_95_percent_is_not_met() -> None:
    rows = rounds_of(FLAT, [100.0, 380.0, 400.0, 360.0], [100.0, 380.0, 400.0, 370.0])
    t = bh.evaluate_targets(rows)
    assert not t["throughput"]["met"]
    assert t["throughput"]["lowest_clients"] == 256
    assert t["throughput"]["lowest"] == pytest.approx(0.925)
    assert any(
        ln.strip().startswith("throughput >= 95% of peak to 8x saturation: NOT met") for ln in bh.check_targets(rows)
    )


def test_saturation_is_the_first_count_with_a_median_ratio_of_95_percent() -> None:
    # 16 clients reach 95% in one round only: the median puts saturation at 64
    rows = rounds_of([100.0, 390.0, 400.0, 400.0], [100.0, 300.0, 400.0, 400.0], [100.0, 330.0, 400.0, 400.0])
    t = bh.evaluate_targets(rows)
    assert t["saturation"] == 64
    # held from 64 to 256 clients, but that is 4x saturation, not the 8x the target asks for
    assert t["throughput"]["held"] and t["throughput"]["reaches"] == 4.0
    assert not t["throughput"]["met"]
    lines = bh.check_targets(rows)
    assert any("the counts reach 4x saturation, not the 8x" in ln and "(held >= 95%" in ln for ln in lines)
    assert any(ln.strip().startswith("throughput >= 95% of peak to 8x saturation: NOT met") for ln in lines)
    # a p90 over the limit below saturation does not count
    rows[1]["ok_latency_ms"]["p90"] = 900.0
    assert bh.evaluate_targets(rows)["p90"]["met"]


def test_a_peak_from_one_lucky_round_does_not_set_the_bar() -> None:
    # each round is 10% faster at a different count (the machine sped up for one point):
    # every median is 100, so the curve is flat; each round's own peak is its lucky
    # point, and the shares of it sit at 91% (reported, not the target)
    rows = rounds_of([100.0, 110.0, 100.0, 100.0], [100.0, 100.0, 110.0, 100.0], [100.0, 100.0, 100.0, 110.0])
    t = bh.evaluate_targets(rows)
    assert t["saturation_found"] and t["saturation"] == 4
    assert t["throughput"]["met"] and t["throughput"]["lowest"] == 1.0
    assert t["throughput"]["lowest_median_ratio"] == pytest.approx(100 / 110)
    lines = bh.check_targets(rows)
    assert any(ln.strip().startswith("throughput >= 95% of peak to 8x saturation: met (lowest 100.0%") for ln in lines)
    assert any("lowest median 90.9%" in ln for ln in lines)


def test_nothing_served_is_not_met() -> None:
    rows = rounds_of([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    t = bh.evaluate_targets(rows)
    assert not t["saturation_found"]
    assert not t["throughput"]["met"]
    assert any("no client count's median reaches 95%" in ln for ln in bh.check_targets(rows))


def test_p90_over_the_limit_in_one_round_is_not_met() -> None:
    rows = rounds_of(FLAT, FLAT, FLAT)
    limit = 1.2 * bh.TARGET_P90_MS
    rows[4 + 3]["ok_latency_ms"]["p90"] = limit  # at the limit: met
    assert bh.evaluate_targets(rows)["p90"]["met"]
    rows[4 + 3]["ok_latency_ms"]["p90"] = limit + 1  # round 1, 256 clients
    t = bh.evaluate_targets(rows)
    assert not t["p90"]["met"]
    assert (t["p90"]["highest_ms"], t["p90"]["round"], t["p90"]["clients"]) == (limit + 1, 1, 256)
    assert any(ln.strip().startswith("p90 of 200s <= 300 ms: NOT met") for ln in bh.check_targets(rows))


def test_jain_uses_the_median_per_count_and_reports_the_lowest_single() -> None:
    rows = rounds_of(FLAT, FLAT, FLAT)
    rows[4 + 2]["per_client"]["jain"] = 0.95  # round 1, 64 clients: the median absorbs it
    t = bh.evaluate_targets(rows)
    assert t["jain"]["met"]
    assert t["jain"]["lowest_median"] == 0.99
    assert (t["jain"]["lowest_single"], t["jain"]["lowest_single_round"], t["jain"]["lowest_single_clients"]) == (
        0.95,
        1,
        64,
    )
    rows[8 + 2]["per_client"]["jain"] = 0.97  # round 2 too: the median at 64 is 0.97
    t = bh.evaluate_targets(rows)
    assert not t["jain"]["met"]
    assert (t["jain"]["lowest_median"], t["jain"]["lowest_median_clients"]) == (0.97, 64)
    lines = bh.check_targets(rows)
    assert any(ln.strip().startswith("Jain >= 0.98: NOT met (lowest median 0.970") for ln in lines)


def test_unanswered_in_one_round_is_not_met() -> None:
    rows = rounds_of(FLAT, FLAT, FLAT)
    rows[8]["timeouts"] = 1  # round 2, 4 clients: below saturation, still counted
    t = bh.evaluate_targets(rows)
    assert not t["unanswered"]["met"]
    assert t["unanswered"]["per_round"] == {0: 0, 1: 0, 2: 1}
    assert any(ln.strip().startswith("nothing unanswered: NOT met (1 timeouts") for ln in bh.check_targets(rows))


def test_other_systems_do_not_count_and_no_sedamp_means_no_targets() -> None:
    rows = rounds_of(FLAT) + [row(c, 1.0, 0, system="asyncio", p90=5000.0, timeouts=9) for c in (4, 16, 64, 256)]
    t = bh.evaluate_targets(rows)
    assert t["p90"]["met"] and t["unanswered"]["met"]
    assert bh.check_targets([r for r in rows if r["system"] == "asyncio"]) == []
    assert bh.evaluate_targets([]) is None


def _single_pass(rows: list[dict[str, Any]]) -> tuple[int, bool, float, bool, float, bool, float, bool]:
    """The checks of one pass over the client counts, before there were rounds."""
    mine = [r for r in rows if r["system"] == "sedamp"]
    peak = max(r["ok_throughput"] for r in mine)
    sat = next(r["clients"] for r in mine if r["ok_throughput"] >= 0.95 * peak)
    after = [r for r in mine if r["clients"] >= sat]
    worst = min(r["ok_throughput"] for r in after) / peak
    p90 = max(r["ok_latency_ms"]["p90"] or 0.0 for r in after)
    jain = min(r["per_client"]["jain"] or 0.0 for r in after)
    lost = sum(r["timeouts"] + r["errors"] for r in mine)
    held = worst >= 0.95 and max(r["clients"] for r in mine) >= 8 * sat
    return sat, held, worst, p90 <= 300.0, p90, jain >= 0.98, jain, lost == 0


def test_one_round_gives_the_single_pass_verdicts() -> None:
    rng = random.Random(7)
    counts = (4, 8, 16, 32, 64, 128, 256)
    for _ in range(500):
        peak = rng.uniform(150, 450)
        rows = [
            row(
                c,
                round(min(1.0, c / 20) * peak * rng.uniform(0.85, 1.05), 1),
                p90=rng.choice([None, round(rng.uniform(50, 320), 2)]),
                jain=rng.choice([None, round(rng.uniform(0.95, 1.0), 4)]),
                timeouts=int(rng.random() < 0.05),
            )
            for c in counts
        ]
        sat, tp_met, worst, p90_met, p90, jain_met, jain, lost_met = _single_pass(rows)
        t = bh.evaluate_targets(rows)
        assert t["saturation"] == sat
        assert t["throughput"]["met"] == tp_met and t["throughput"]["lowest"] == pytest.approx(worst)
        assert t["p90"]["met"] == p90_met and t["p90"]["highest_ms"] == p90
        assert t["jain"]["met"] == jain_met and t["jain"]["lowest_median"] == jain
        assert t["unanswered"]["met"] == lost_met


def test_targets_and_summary_are_json_serializable() -> None:
    rows = rounds_of(FLAT, FLAT, counts=(4, 16, 64, 256), efficiency=0.9)
    text = json.dumps({"rows": rows, "summary": bh.summarize(rows), "targets": bh.evaluate_targets(rows)})
    back = json.loads(text)
    assert back["targets"]["ratios"]["1"]["64"] == 1.0
    assert len(back["summary"]) == 4


def test_row_line_shows_round_and_speed() -> None:
    line = bh._row(bh.with_speed(row(64, 300.0, 2), 0.005, 2))
    fields = line.split()
    assert fields[:4] == ["2", "sedamp", "64", "300.0"]
    assert fields[-9:] == ["5.00", "400", "75.0%", "-", "-", "-", "-", "-", "-"]
    assert len(bh.ROW_HEADER) == len(line)
    measured = {**row(64, 300.0, 2), "loadgen_cpu_s": 10.0, "loadgen_wall_s": 20.0, "work_cpu_cores": 1.7}
    more = {"work_cpu_ms": 5.67, "work_batch": 6.25, "server_cores": 1.93, "switches_per_answer": 41.04}
    line = bh._row(bh.with_speed({**measured, **more}, 0.005, 2))
    assert line.split()[-6:] == ["0.50", "1.70", "5.67", "6.2", "1.93", "41.0"]
    assert len(bh.ROW_HEADER) == len(line)


def test_with_speed_records_the_load_generators_cores() -> None:
    out = bh.with_speed({**row(64, 270.0), "loadgen_cpu_s": 5.0, "loadgen_wall_s": 10.0}, 0.005, 2)
    assert out["loadgen_cores"] == 0.5
    assert out["efficiency"] == 0.675
    assert "loadgen_cores" not in bh.with_speed(row(64, 270.0), 0.005, 2)


def metrics_record(
    t: float, cpus: list[float], busy: list[float], done: float, per_batch: float | None = None
) -> dict[str, Any]:
    detail = [{"cpu_percent": c, "busy": b} for c, b in zip(cpus, busy, strict=True)]
    work = {"worker_detail": detail, "completions_per_s": done, "events_per_batch": per_batch}
    return {"t": t, "stages": {"work": work, "http": {}}}


def test_worker_cpu_reads_the_window_of_the_metrics() -> None:
    records = [
        metrics_record(99.0, [10.0, 10.0], [0.1, 0.1], 50.0),  # before the window
        metrics_record(100.0, [90.0, 80.0], [1.0, 0.9], 340.0, 6.0),
        metrics_record(100.5, [80.0, 90.0], [1.0, 1.0], 340.0, 8.0),
        metrics_record(102.0, [0.0, 0.0], [0.0, 0.0], 0.0),  # after it
    ]
    share = bh.worker_cpu(records, 100.0, 101.0)
    assert share == {
        "cores": 1.7,
        "busy": 0.975,
        "cpu_ms_per_event": 5.0,
        "events_per_batch": 7.0,
        "workers": 2.0,
        "records": 2,
    }
    # a period without a batch has no figure, and does not count as zero
    quiet = [metrics_record(100.0, [90.0, 80.0], [1.0, 0.9], 340.0, None), *records[2:3]]
    assert bh.worker_cpu(quiet, 100.0, 101.0)["events_per_batch"] == 8.0  # type: ignore[index]
    assert bh.worker_cpu(records, 200.0, 300.0) is None


def test_worker_share_target_apart_from_the_machines_speed() -> None:
    def point(clients: int, ok: float, cores: float, rnd: int) -> dict[str, Any]:
        return {**row(clients, ok, rnd), "work_cpu_cores": cores}

    # throughput falls to 85% at 256 clients while the workers keep 97% of their CPU:
    # the requests cost more at the time; a second set where the workers lost CPU
    kept = [p for rnd in (0, 1, 2) for p in (point(32, 400.0, 1.75, rnd), point(256, 340.0, 1.70, rnd))]
    t = bh.evaluate_targets(kept)
    assert t is not None and not t["throughput"]["met"]
    assert t["worker_share"]["met"] and round(t["worker_share"]["lowest"], 3) == 0.971
    lost = [p for rnd in (0, 1, 2) for p in (point(32, 400.0, 1.75, rnd), point(256, 340.0, 1.50, rnd))]
    t = bh.evaluate_targets(lost)
    assert t is not None and not t["worker_share"]["met"]
    assert any("CPU of the /work workers" in line and "NOT met" in line for line in bh.check_targets(lost))
    assert bh.evaluate_targets([row(32, 400.0)])["worker_share"] is None  # type: ignore[index]


# ---------------------------------------------------------------------------------------
# Pooling saved runs (--report)


def _saved(rows: list[dict[str, Any]], **args: Any) -> dict[str, Any]:
    base = {"duration": 20.0, "settle": 5.0, "think_ms": 20.0, "cores": 2, "ignore_retry_after": False}
    iterations = args.pop("iterations", 30000)
    return {
        "started": "t",
        "complete": True,
        "target_p90_ms": bh.TARGET_P90_MS,
        "iterations": iterations,
        "args": base | args,
        "rows": rows,
    }


def test_pooled_runs_renumber_their_rounds_and_take_medians_over_all() -> None:
    a = _saved(rounds_of(FLAT, [100.0, 380.0, 300.0, 390.0]))  # rounds 0-1
    b = _saved(rounds_of([100.0, 380.0, 310.0, 390.0], FLAT, FLAT))  # rounds 0-2 of another run
    rows = bh.pool_rounds([a, b])
    assert sorted({r["round"] for r in rows}) == [0, 1, 2, 3, 4]
    assert len(rows) == 4 * 5
    # at 64 clients: 400, 300, 310, 400, 400 -> median 400; alone, run a's median is 350
    t = bh.evaluate_targets(rows)
    assert t["medians"][64] == 400.0 and t["throughput"]["met"]
    assert bh.evaluate_targets(a["rows"])["medians"][64] == 350.0  # type: ignore[index]
    # the reports given are not changed
    assert [r["round"] for r in b["rows"]][:4] == [0, 0, 0, 0]


def test_pooled_runs_are_scaled_to_the_first_runs_request() -> None:
    # the second run calibrated a request 10% heavier: 360/s of it is 396/s of the first's
    a = _saved(rounds_of(FLAT))
    b = _saved(rounds_of([90.0, 342.0, 360.0, 351.0]), iterations=33000)
    rows = bh.pool_rounds([a, b])
    assert [r["ok_throughput"] for r in rows if r["round"] == 1] == pytest.approx([99.0, 376.2, 396.0, 386.1])
    assert rows[4]["ok_latency_ms"] == b["rows"][0]["ok_latency_ms"]  # latencies as measured


def test_pooling_refuses_runs_of_different_settings() -> None:
    with pytest.raises(ValueError, match="different things: args"):
        bh.pool_rounds([_saved(rounds_of(FLAT)), _saved(rounds_of(FLAT), think_ms=0.0)])
    other = {**_saved(rounds_of(FLAT)), "target_p90_ms": 100.0}
    with pytest.raises(ValueError, match="target_p90_ms"):
        bh.pool_rounds([_saved(rounds_of(FLAT)), other])


def test_report_prints_the_targets_of_saved_runs(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_saved(rounds_of(FLAT, FLAT))))
    second.write_text(json.dumps(_saved(rounds_of(FLAT) + [row(c, 5.0, 0, "gunicorn") for c in (4, 16, 64, 256)])))
    assert bh.main(["--report", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert f"from    : {first}: t, 2 rounds, 30000 iterations" in out and f"from    : {second}: t, 1 rounds" in out
    assert "summary over 3 rounds" in out
    assert "throughput >= 95% of peak to 8x saturation: met" in out
    second.write_text(json.dumps(_saved(rounds_of(FLAT), duration=5.0)))
    assert bh.main(["--report", str(first), str(second)]) == 2
    assert "reports measure different things" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# The server's CPU and the machine's context switches


def test_context_switches_read_the_ctxt_line() -> None:
    stat = "cpu  1 2 3 4\nintr 5 6\nctxt 123456\nbtime 1700000000\n"
    assert bh.context_switches(stat) == 123456
    assert bh.context_switches("cpu  1 2 3 4\n") is None
    live = bh.context_switches()
    assert live is None or live > 0


def test_tree_cpu_counts_a_busy_child() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while bh.tree_cpu_s(child.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bh.tree_cpu_s(child.pid) >= 0.3
    finally:
        child.kill()
        child.wait()
    assert bh.tree_cpu_s(child.pid) == 0.0  # gone: nothing to count


def test_a_run_with_fixed_iterations_serves_that_work(tmp_path: Any) -> None:
    """A live run of one peer at one small count: --iterations replaces the calibration
    (runs of a series then ask the same work per request) and is what the server runs;
    the peer server is stopped at the end (the leftover check of conftest)."""
    out = tmp_path / "run.json"
    cmd = [sys.executable, "scripts/bench_http.py", "--systems", "asyncio", "--clients", "2", "--rounds", "1"]
    cmd += ["--duration", "1", "--settle", "0.2", "--warmup", "0.2", "--iterations", "2000", "--json", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "work    : 2000 iterations" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["iterations"] == 2000 and saved["complete"]
    (point,) = saved["rows"]
    assert point["system"] == "asyncio" and point["clients"] == 2
    assert point["statuses"].get("200", 0) > 0 and point["timeouts"] == 0 and point["errors"] == 0


def test_iterations_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bh.main(["--iterations", "0"])
    assert "must be >= 1" in capsys.readouterr().err
