"""sedamp.control.roster against a fake executor: spawning to target, retiring,
restarts, failing stages, the end of stages and the watchdogs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sedamp.control.roster import (
    MAX_BARREN_DEATHS,
    SILENT_MIN_S,
    Child,
    Roster,
    excuse_pause,
    hold_leases,
    reap_all,
    watch_deadlines,
    watch_silence,
)
from sedamp.executor.ray import RemoteSlot
from sedamp.runtime.pauses import Pauses
from sedamp.runtime.slot import Slot
from tests.unit.control.fakes import FakeLinks, FakeProc, roster, topology


def started(executor_started: list[FakeProc], role: str) -> list[str]:
    return [p.name for p in executor_started if p.role == role]


def test_reconcile_spawns_until_each_pool_matches_its_target() -> None:
    r, executor, _ = roster()
    assert started(executor.started, "queue") == ["sdq:work", "sdq:out"]
    r.stages["work"].target = 3
    r.reconcile()
    assert sorted(r.stages["work"].workers) == [0, 1, 2]
    assert sorted(r.stages["out"].workers) == [0]
    assert started(executor.started, "worker") == ["sdw:work:0", "sdw:work:1", "sdw:work:2", "sdw:out:0"]
    r.reconcile()  # at target: nothing more
    assert len(started(executor.started, "worker")) == 4
    assert r.stages["work"].peak_workers == 3
    cfg = r.stages["work"].workers[2].proc.config  # type: ignore[attr-defined]
    assert (cfg.stage, cfg.index, cfg.input_endpoint) == ("work", 2, "ipc:///nowhere/q1")
    assert [o.stage for o in cfg.outputs] == ["out"]


def test_the_queues_and_then_the_workers_are_each_asked_for_in_one_request() -> None:
    """One request per batch of processes: the local executor's launcher then forks
    them back to back instead of waiting for a round trip each."""
    r, executor, _ = roster()
    r.stages["work"].target = 3
    r.reconcile()
    assert executor.requests == [["sdq:work", "sdq:out"], ["sdw:work:0", "sdw:work:1", "sdw:work:2", "sdw:out:0"]]
    del r.stages["work"].workers[1]  # a gap: the next worker takes index 1, then 3
    r.stages["work"].target = 4
    r.reconcile()
    assert executor.requests[2:] == [["sdw:work:1", "sdw:work:3"]]


def test_a_lower_target_retires_the_highest_indexes_once() -> None:
    r, executor, links = roster()
    st = r.stages["work"]
    st.target = 3
    r.reconcile()
    st.target = 1
    r.reconcile()
    r.reconcile()
    retiring = sorted(w.index for w in st.workers.values() if w.retiring)
    assert retiring == [1, 2]
    assert links.kinds(st.workers[2].identity) == ["RETIRE"]
    assert links.kinds(st.workers[0].identity) == []
    assert len(started(executor.started, "worker")) == 4  # no replacement for a retiring worker


def test_a_dead_worker_returns_its_leases_and_is_replaced() -> None:
    r, executor, links = roster()
    r.reconcile()
    st = r.stages["work"]
    dead = st.workers[0]
    dead.proc.kill()
    r.on_exit(dead)
    assert r.state.error is None
    assert st.restarts == 1 and st.workers == {}
    gone = [(who, fields) for who, kind, fields in links.sent if kind == "GONE"]
    queues = [st.queue.identity, r.stages["out"].queue.identity]  # type: ignore[union-attr]
    assert [who for who, _ in gone] == queues  # its own queue (leases) and the next (credit)
    assert gone[0][1] == [dead.identity, "was killed by SIGKILL", -1, -1]
    r.reconcile()
    assert st.workers[0] is not dead and st.workers[0].identity != dead.identity
    assert started(executor.started, "worker").count("sdw:work:0") == 2


def test_a_stage_whose_workers_keep_dying_without_progress_fails() -> None:
    r, _, _ = roster()
    st = r.stages["work"]
    for _ in range(MAX_BARREN_DEATHS):
        assert r.state.error is None
        r.reconcile()
        w = st.workers[0]
        w.proc.exit(1)
        r.on_exit(w)
    assert r.state.error == (
        f"workers of stage 'work' died {MAX_BARREN_DEATHS} times in a row without finishing an event; "
        "last one exited with code 1"
    )
    r.reconcile()  # a failed run spawns nothing more
    assert st.workers == {}


def test_deaths_between_acknowledged_events_are_not_barren() -> None:
    r, _, _ = roster()
    st = r.stages["work"]
    assert st.queue is not None
    for i in range(2 * MAX_BARREN_DEATHS):
        r.reconcile()
        r.on_stats(st.queue, {"acked": i})
        w = st.workers[0]
        w.proc.exit(1)
        r.on_exit(w)
    assert r.state.error is None and st.restarts == 2 * MAX_BARREN_DEATHS


def test_a_fatal_worker_fails_the_run_with_its_message() -> None:
    r, _, _ = roster()
    r.reconcile()
    w = r.stages["work"].workers[0]
    r.on_fatal(w, {"message": "stage 'work': setup failed: boom", "traceback": "", "pid": w.pid})
    w.proc.exit(1)
    r.on_exit(w)
    assert r.state.error == "stage 'work': setup failed: boom"


def test_an_unstopped_queue_that_dies_fails_the_run() -> None:
    r, _, _ = roster()
    q = r.stages["out"].queue
    assert q is not None
    q.proc.exit(-11)
    r.on_exit(q)
    assert r.state.error == f"the queue of stage 'out' (pid {q.proc.pid}) was killed by SIGSEGV"


def test_stages_finish_in_order() -> None:
    r, _, links = roster()
    r.start_sources()
    r.reconcile()
    work, out = r.stages["work"], r.stages["out"]
    assert work.queue is not None and out.queue is not None
    r.advance()
    assert links.kinds(work.queue.identity) == []  # its source still runs
    src = r.stages["src"].source
    assert src is not None
    r.on_done(src, {"in": 5, "out": 5})
    src.proc.exit(0)
    r.on_exit(src)
    r.advance()
    assert links.kinds(work.queue.identity) == ["CLOSE"]
    assert links.kinds(src.identity) == ["STOP"]  # its DONE acknowledged
    r.on_done(work.queue, {"ended": True})
    w = work.workers[0]
    r.on_done(w, {"in": 5, "out": 5, "failed": 0})
    assert links.kinds(w.identity) == ["STOP"]
    w.proc.exit(0)
    r.on_exit(w)
    r.advance()
    assert work.complete and not out.complete
    assert links.kinds(work.queue.identity) == ["CLOSE", "STOP"]
    assert links.kinds(out.queue.identity) == ["CLOSE"]
    assert r.stages["work"].retired == {"in": 5, "out": 5, "failed": 0}
    assert r.state.error is None


def test_a_stage_ends_on_its_done_reports_not_on_its_exits() -> None:
    """DONE means everything a process will send is in the next queues: the next
    queue closes then, while the processes that said it are still leaving, so the
    end of a run does not wait for each stage's exits in turn."""
    r, _, links = roster()
    r.start_sources()
    r.reconcile()
    work, out = r.stages["work"], r.stages["out"]
    assert work.queue is not None and out.queue is not None
    src = r.stages["src"].source
    assert src is not None
    r.on_done(src, {"in": 5, "out": 5})
    r.advance()
    assert links.kinds(work.queue.identity) == ["CLOSE"]  # the source has not exited yet
    r.on_done(work.queue, {"ended": True})
    w = work.workers[0]
    r.on_done(w, {"in": 5, "out": 5, "failed": 0})
    r.advance()
    assert work.complete and links.kinds(out.queue.identity) == ["CLOSE"]  # w is still running
    assert src.proc.is_alive() and w.proc.is_alive()
    r.on_done(out.queue, {"ended": True})
    o = out.workers[0]
    r.on_done(o, {"in": 5, "out": 5, "failed": 0})
    r.advance()
    assert r.complete
    # the run is over: the exits come in after it, and are accounted as in the run
    for child in [src, w, o, work.queue, out.queue]:
        child.proc.exit(0)
    reap_all(r)
    assert work.workers == {} and out.workers == {} and r.stages["src"].source is None
    assert work.retired == {"in": 5, "out": 5, "failed": 0}
    assert r.stages["src"].retired == {"in": 5, "out": 5}
    assert r.state.error is None and work.restarts == 0


def test_a_recycled_worker_frees_its_index_for_a_fresh_one() -> None:
    r, _, _ = roster()
    r.reconcile()
    st = r.stages["work"]
    old = st.workers[0]
    r.on_done(old, {"in": 3, "out": 3, "failed": 0, "retired": True, "recycled": True})
    assert st.recycled == 1 and st.leaving == {old.identity: old} and st.workers == {}
    r.reconcile()
    assert st.workers[0] is not old and not st.ended


TIMED = """
stages:
  src: {source: "m:src", to: work}
  work: {sink: "m:work", timeout_s: 1}
"""


def in_a_call(tmp_path: Path, n: int = 1) -> tuple[Roster, FakeLinks, Child, Slot]:
    """A roster whose one worker of a stage with timeout_s 1 is in a handler call on
    events 3.. (n of them) of batch 7, as its slot says: the roster, its links, the
    worker, and the worker's side of its slot (the caller closes it)."""
    r, _, links = roster(topology(TIMED), slot_dir=tmp_path)
    r.reconcile()
    w = r.stages["work"].workers[0]
    assert w.slot is not None
    seen = Slot(w.slot.path)
    seen.timeout_s = 1.0
    seen.begin(7)
    seen.at(3, n=n)
    return r, links, w, seen


def test_a_worker_past_its_deadline_is_killed_and_its_event_blamed(tmp_path: Path) -> None:
    r, links, w, seen = in_a_call(tmp_path)
    st = r.stages["work"]
    now = time.monotonic()
    watch_deadlines(r.stages.values(), now + 0.5, lambda _t: 0.0)
    assert w.killed is None
    watch_deadlines(r.stages.values(), now + 5.0, lambda _t: 0.0)
    assert w.proc.killed  # type: ignore[attr-defined]
    assert w.killed is not None and w.killed.startswith("was killed: a handler call ran past timeout_s (1 s, overdue")
    assert st.timeouts == 1 and w.in_hand == (7, 3)
    seen.close()
    r.on_exit(w)
    assert st.queue is not None
    [gone] = [f for who, kind, f in links.sent if kind == "GONE"]
    assert gone[2:] == [7, 3]
    assert not Path(w.slot.path).exists()


def test_silence_kills_a_worker_outside_user_code_and_fails_on_a_queue() -> None:
    r, _, _ = roster()
    r.reconcile()
    st = r.stages["work"]
    w: Child = st.workers[0]
    w.proc.local = True  # type: ignore[misc]  # its (absent) slot would be readable
    now = time.monotonic()
    watch_silence(r.stages.values(), r.state, 0.1, now + SILENT_MIN_S / 2)
    assert w.killed is None and r.state.error is None
    w.last_heard = now
    assert st.queue is not None
    st.queue.last_heard = now + 2 * SILENT_MIN_S  # the queue still reports
    r.stages["out"].queue.last_heard = now + 2 * SILENT_MIN_S  # type: ignore[union-attr]
    watch_silence(r.stages.values(), r.state, 0.1, now + SILENT_MIN_S + 1)
    assert w.killed is not None and w.killed.startswith("was killed: silent for 4.0 s outside any handler call")
    assert r.state.error is None
    watch_silence(r.stages.values(), r.state, 0.1, now + 10 * SILENT_MIN_S)
    assert r.state.error is not None and r.state.error.startswith("the queue of stage 'work'")


def test_deaths_inside_a_handler_call_are_the_events_not_the_stages(tmp_path: Path) -> None:
    """A worker that dies with an event in its handler (the slot says which) is that
    event's doing: the queue strikes the event. Only deaths with no event in hand count
    towards failing the stage, so poison events close together never stop a job."""
    top_text = """
stages:
  src: {source: "m:src", to: work}
  work: {sink: "m:work"}
"""
    r, _, _ = roster(topology(top_text), slot_dir=tmp_path)
    st = r.stages["work"]
    for lease in range(2 * MAX_BARREN_DEATHS):
        r.reconcile()
        w = st.workers[0]
        assert w.slot is not None
        seen = Slot(w.slot.path)
        seen.begin(lease)  # inside the handler, on this lease's first event
        seen.close()
        w.proc.exit(-9)  # type: ignore[attr-defined]
        r.on_exit(w)
    assert r.state.error is None and st.restarts == 2 * MAX_BARREN_DEATHS
    for _ in range(MAX_BARREN_DEATHS):  # with nothing in hand (say, in setup) they count
        r.reconcile()
        w = st.workers[0]
        w.proc.exit(1)  # type: ignore[attr-defined]
        r.on_exit(w)
    assert r.state.error is not None and "died 10 times in a row" in r.state.error


# ------------------------------------------------------------------ workers on another host


def test_a_worker_elsewhere_is_watched_through_its_executors_view_of_its_slot(tmp_path: Path) -> None:
    """Its slot is on its own host; the executor's view of it (a RemoteSlot) takes the
    place of the slot file the roster made, which is removed at once."""
    r, _, _ = roster(slot_dir=tmp_path, elsewhere=True)
    r.reconcile()
    w = r.stages["work"].workers[0]
    assert isinstance(w.slot, RemoteSlot) and w.slot is w.proc.slot
    assert list(tmp_path.iterdir()) == []


def test_silence_kills_a_worker_elsewhere_unless_its_slot_says_it_is_in_user_code() -> None:
    """Before, a worker on another host was never killed for silence."""
    r, _, _ = roster(elsewhere=True)
    r.reconcile()
    st = r.stages["work"]
    w: Child = st.workers[0]
    view = w.proc.slot
    assert isinstance(view, RemoteSlot)
    for q in (st.queue, r.stages["out"].queue):
        assert q is not None
        q.last_heard = time.monotonic() + 100  # the queues still report
    view.update((None, 12, 0, 0.0))  # inside a handler call: only timeout_s bounds it
    watch_silence(r.stages.values(), r.state, 0.1, time.monotonic() + 2 * SILENT_MIN_S)
    assert w.killed is None
    view.update((None, -1, -1, 0.0))  # between batches, and silent
    watch_silence(r.stages.values(), r.state, 0.1, time.monotonic() + 2 * SILENT_MIN_S)
    assert w.proc.killed  # type: ignore[attr-defined]
    assert w.killed is not None and "outside any handler call" in w.killed


def test_a_stale_view_does_not_keep_a_silent_worker_alive() -> None:
    view = RemoteSlot(stale_s=5.0)
    view.update((None, 12, 3, 0.0))
    assert view.read()[1:] == (12, 3)
    view._at -= 6.0  # nobody answered for it since
    assert view.read()[1:] == (-1, -1)


def test_a_pause_of_the_controller_is_not_held_against_a_handler_or_a_heartbeat(tmp_path: Path) -> None:
    """The whole job stopped for 30 s (Ctrl-Z) during a handler call and between
    heartbeats: neither the call's timeout_s nor the silence bound is passed for it."""
    r, _, w, seen = in_a_call(tmp_path)
    state = r.state
    started = time.monotonic()
    pauses = Pauses(started)
    now = started + 30.5
    assert pauses.observe(now, 0.5) == pytest.approx(30.0)
    excuse_pause(r, state, 30.0)
    watch_deadlines(r.stages.values(), now, pauses.since)
    watch_silence(r.stages.values(), state, 0.5, now)
    assert w.killed is None and state.error is None
    watch_deadlines(r.stages.values(), now + 1.0, pauses.since)  # past its second, not counting the pause
    assert w.killed is not None and "ran past timeout_s" in w.killed
    seen.close()


def test_a_pause_early_in_a_batch_call_is_excused_too(tmp_path: Path) -> None:
    """A handle_batch call of 50 events has 50 x timeout_s: its deadline less one
    timeout_s is not when it began. A 30 s pause 5 s into it is excused all the same."""
    r, _, w, seen = in_a_call(tmp_path, n=50)  # the batch's call: 50 s
    began = time.monotonic()
    pauses = Pauses(began + 5.0)
    assert pauses.observe(began + 35.5, 0.5) == pytest.approx(30.0)
    watch_deadlines(r.stages.values(), began + 60.0, pauses.since)  # 10 s overdue, 30 s of it paused
    assert w.killed is None
    watch_deadlines(r.stages.values(), began + 81.0, pauses.since)
    assert w.killed is not None and "ran past timeout_s" in w.killed
    seen.close()


def test_a_worker_elsewhere_past_its_deadline_is_killed_and_its_event_blamed() -> None:
    top_text = """
stages:
  src: {source: "m:src", to: work}
  work: {sink: "m:work", timeout_s: 1}
"""
    r, _, links = roster(topology(top_text), elsewhere=True)
    r.reconcile()
    st = r.stages["work"]
    w = st.workers[0]
    assert isinstance(w.slot, RemoteSlot)
    w.slot.update((0.5, 7, 3, 0.0))  # its call has half a second left, on its host's clock
    now = time.monotonic()
    watch_deadlines(r.stages.values(), now, lambda _t: 0.0)
    assert w.killed is None
    watch_deadlines(r.stages.values(), now + 2.0, lambda _t: 0.0)
    assert w.proc.killed  # type: ignore[attr-defined]
    assert w.killed is not None and "ran past timeout_s (1 s" in w.killed
    assert st.timeouts == 1 and w.in_hand == (7, 3)
    r.on_exit(w)
    [gone] = [f for who, kind, f in links.sent if kind == "GONE"]
    assert gone[2:] == [7, 3]


def test_hold_names_to_each_queue_the_workers_inside_user_code(tmp_path: Path) -> None:
    r, _, links = roster(slot_dir=tmp_path)
    r.stages["work"].target = 2
    r.reconcile()
    a, b = r.stages["work"].workers[0], r.stages["work"].workers[1]
    assert a.slot is not None and b.slot is not None
    seen = Slot(a.slot.path)
    seen.begin(4)  # a is handling lease 4; b waits between batches
    hold_leases(r.stages.values(), links)
    assert [(who, f) for who, kind, f in links.sent if kind == "HOLD"] == [("q:work", [[a.identity]])]
    seen.close()


def test_reports_are_asked_of_every_queue_and_of_the_ready_workers() -> None:
    """Before a record the controller asks for STATS (REPORT). A worker still in its
    setup() is left out: it would find one REPORT per period waiting when done."""
    from sedamp.control.roster import ask_for_reports

    r, _, links = roster()
    r.stages["work"].target = 2
    r.reconcile()
    first, second = r.stages["work"].workers.values()
    r.on_stats(first, {"in": 0, "busy_s": 0.0})  # its setup is done; the other's is not
    links.sent.clear()
    ask_for_reports(r.stages.values(), links)
    asked = sorted(identity for identity, kind, _ in links.sent if kind == "REPORT")
    queues = sorted(st.queue.identity for st in r.stages.values() if st.queue is not None)
    assert asked == sorted([*queues, first.identity]) and second.identity not in asked
