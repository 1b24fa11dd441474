"""The sampling decision and the records a traced process writes."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sedamp.observe.trace import parse_records
from sedamp.runtime.tracing import RUN, Tracer, is_sampled, period_of, root_of, tracer_of


def test_period_of_sample() -> None:
    assert period_of(0.01) == 100
    assert period_of(0.05) == 20
    assert period_of(1.0) == 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="trace sample must be in"):
            period_of(bad)


def test_sampling_takes_about_the_share_asked_and_is_deterministic() -> None:
    ids = range(200_000)
    picked = [i for i in ids if is_sampled(i, 100)]
    assert abs(len(picked) - 2_000) <= RUN  # a run of RUN in each block of 100 x RUN positions
    assert picked == [i for i in ids if is_sampled(i, 100)]
    block = 100 * RUN
    runs: dict[int, list[int]] = {}
    for i in picked:
        runs.setdefault(i // block, []).append(i)
    for found in runs.values():  # in a row, RUN of them (the last block may be cut)
        assert found == list(range(found[0], found[0] + len(found)))
        assert len(found) == RUN or found[-1] == 199_999
    # not at one offset in every block: the input's own periods do not line up with it
    assert len({found[0] % block for found in runs.values()}) > len(runs) // 2


def _sampled_from(start: int, period: int) -> int:
    """The first sampled position from `start` on."""
    return next(i for i in range(start, start + period * RUN * 2) if is_sampled(i, period))


def test_picking_from_a_batch_agrees_with_the_decision_per_id(tmp_path: Path) -> None:
    tracer = Tracer(str(tmp_path), 0.05, "queue", "q")
    batches: list[list[object]] = [
        list(range(1000, 1512)),  # a source's read
        [7, 3000, 41, 999, 12, 18, 5, 260, 261, 262],  # leases merged out of order
        [1, 10**9],  # far apart: checked one by one
        ["40.0", "40.1", 41, "a.0.end.0", "777.3.1"],  # fan-out children and end-of-input ids
        [],
    ]
    # lists whose ends look like a run of positions but which are not that run
    first = _sampled_from(5000, 20)
    run = list(range(first - 40, first + 60))
    sampled = [i for i in run if is_sampled(i, 20)]
    unsampled = next(i for i in run[1:-1] if not is_sampled(i, 20))
    far = next(i for i in range(90_000, 91_000) if is_sampled(i, 20))
    batches += [
        [run[0], *reversed(run[1:-1]), run[-1]],  # the run, its middle reversed
        [x if x != sampled[1] else far for x in run],  # a sampled position swapped for another
        [x if x != unsampled else far for x in run],  # an unsampled one swapped for a sampled one
        [x if x != unsampled else f"{far}.0" for x in run],  # a string among the ints
        [1000, 0, 2003, 1003],  # a fan-in batch whose ends, length and sum look like a run
        [run[0], run[0], *run[3:-1], run[-1], run[-1]],  # ascending, a copy twice, positions missing
        [x for x in run if x % 3],  # ascending with gaps
    ]
    for ids in batches:
        assert set(tracer.pick(ids)) == {e for e in ids if is_sampled(e, 20)}, ids


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=80), st.booleans(), st.sampled_from([1, 2, 7, 20, 100]))
def test_picking_from_any_list_of_positions_agrees_with_the_decision_per_id(
    tmp_path_factory: pytest.TempPathFactory, ids: list[int], ascending: bool, period: int
) -> None:
    tracer = Tracer(str(tmp_path_factory.mktemp("t")), 1 / period, "queue", "q")
    batch = sorted(ids) if ascending else ids
    assert set(tracer.pick(batch)) == {e for e in batch if is_sampled(e, period)}


def test_fan_out_children_follow_their_root() -> None:
    sampled = next(i for i in range(1000) if is_sampled(i, 50))
    unsampled = next(i for i in range(1000) if not is_sampled(i, 50))
    assert is_sampled(f"{sampled}.3", 50) and is_sampled(f"{sampled}.3.1", 50)
    assert not is_sampled(f"{unsampled}.0", 50)
    assert root_of("17.2.5") == 17 and root_of(4) == 4
    assert root_of("count.0.end.2") is None and not is_sampled("count.0.end.2", 1)
    assert not is_sampled(None, 1)


def test_tracing_off_makes_no_tracer(tmp_path: Path) -> None:
    assert tracer_of("", 0.01, "worker", "a") is None
    assert tracer_of(str(tmp_path), 0.0, "worker", "a") is None
    assert list(tmp_path.iterdir()) == []


def test_a_worker_records_its_hops_and_calls(tmp_path: Path) -> None:
    tracer = Tracer(str(tmp_path / "traces"), 1.0, "worker", "a", 2)
    tracer.leased("a", 7, [0, 1, "a.0.end.0"])
    tracer.handled("a", 7, 3, 0, sink=False, outputs=True)
    tracer.acked("a", 7)
    tracer.handled("a", 8, 4, 0, sink=False)  # a batch with nothing sampled: its call only
    tracer.flush()
    [path] = (tmp_path / "traces").iterdir()
    assert path.name == f"worker-a-2-{tracer.pid}.trace"
    proc = parse_records(path.read_bytes())
    assert proc is not None and (proc.role, proc.stage, proc.index, proc.label) == ("worker", "a", 2, "sdw:a:2")
    by_event: dict[object, list[str]] = {}
    for hop, stage, ids, _t, batch in proc.hops:
        assert stage == "a" and batch == 7
        for eid in ids:
            by_event.setdefault(eid, []).append(hop)
    assert by_event == {e: ["leased", "start", "end", "put", "acked"] for e in (0, 1)}
    calls = json.loads("[" + ",".join(proc.slices) + "]")  # formatted by the process itself
    assert [(c["args"]["batch"], c["args"]["events"], c["args"]["sampled"]) for c in calls] == [
        (7, 3, ["0", "1"]),
        (8, 4, []),
    ]
    assert {(c["ph"], c["name"], c["cat"], c["pid"], c["tid"]) for c in calls} == {
        ("X", "a", "worker", tracer.pid, tracer.pid)
    }
    assert tracer.leases == {}


def test_a_read_with_no_sampled_event_records_its_call_and_no_hops(tmp_path: Path) -> None:
    tracer = Tracer(str(tmp_path), 0.01, "source", "s")
    first = _sampled_from(RUN * 100, 100)  # a run that starts after a gap of positions
    assert not is_sampled(first - 1, 100)
    assert tracer.read("s", list(range(first - 10, first)), 5) is False  # none sampled
    assert tracer.read("s", [first], 7) is True
    tracer.flush()
    proc = parse_records(tracer.path.read_bytes())
    assert proc is not None and [h[:3] for h in proc.hops] == [("read", "s", (first,)), ("sent", "s", (first,))]
    assert len(json.loads("[" + ",".join(proc.slices) + "]")) == 2  # both reads are slices


def test_a_cut_last_line_is_skipped(tmp_path: Path) -> None:
    tracer = Tracer(str(tmp_path), 1.0, "source", "s")
    tracer.read("s", [0, 1], 5)
    tracer.flush()
    data = tracer.path.read_bytes()
    cut = data + msgpack.packb([["hops", "read", "s", [2, 3], 9, None]])[:-3]
    proc = parse_records(cut)
    assert proc is not None and [h[:3] for h in proc.hops] == [("read", "s", (0, 1)), ("sent", "s", (0, 1))]
    assert proc.label == "src:s"
    assert parse_records(data[:5]) is None  # not even the header
    damaged = parse_records(data + b"\xc1" + data)  # a byte MessagePack never uses
    assert damaged is not None and len(damaged.hops) == 2


def test_a_source_samples_what_every_other_process_samples(tmp_path: Path) -> None:
    tracer = Tracer(str(tmp_path), 0.02, "source", "s")
    one = _sampled_from(5000, 50) - 100
    two = _sampled_from(one + 512, 50) - 100
    tracer.read("s", list(range(one, one + 512)), 0)
    tracer.read("s", [i for i in range(two, two + 512) if i % 3], 0)  # resuming: some skipped
    expected = [i for i in [*range(one, one + 512), *range(two, two + 512)] if i % 3 or i < two]
    read = [e for r in tracer.records if r[0] == "hops" and r[1] == "read" for e in r[3]]
    assert read == [i for i in expected if is_sampled(i, 50)] and read
