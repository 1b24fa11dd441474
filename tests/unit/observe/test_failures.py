"""sedamp.observe.failures (pure): the user's file:line in a traceback, failures grouped
into kinds with their repeats, the lines `sedamp run` prints, and the error budget; and
the displays printing a new kind of failure as it comes."""

from __future__ import annotations

import io
import os
import sysconfig
from pathlib import Path
from typing import Any

from rich.console import Console

import sedamp
from sedamp.cli.live import TerminalProgress
from sedamp.cli.progress import LogProgress
from sedamp.observe.failures import (
    MAX_KINDS_PER_STAGE,
    FailureDigest,
    FailureLines,
    budget_message,
    failure_line,
    over_budget,
    repeat_lines,
    user_place,
)

SEDAMP = str(Path(sedamp.__file__).parent)
STDLIB = sysconfig.get_paths()["stdlib"]


def traceback(*frames: tuple[str, int], last: str = "ValueError: boom") -> str:
    body = "".join(f'  File "{path}", line {line}, in f\n    code()\n' for path, line in frames)
    return f"Traceback (most recent call last):\n{body}{last}\n"


def dead(stage: str, message: str, tb: str | None, etype: str = "ValueError", event_id: Any = 0) -> dict[str, Any]:
    return {"stage": stage, "error_type": etype, "message": message, "traceback": tb, "event_id": event_id}


def test_the_users_place_is_the_last_frame_outside_sedamp_and_the_standard_library() -> None:
    tb = traceback(
        (f"{SEDAMP}/runtime/stage.py", 278),
        ("/home/me/proj/shout.py", 3),
        ("/home/me/proj/helpers.py", 12),
        (f"{STDLIB}/json/decoder.py", 337),
    )
    assert user_place(tb, cwd="/home/me/proj") == "helpers.py:12"
    assert user_place(tb, cwd="/elsewhere") == "/home/me/proj/helpers.py:12"
    only_ours = traceback((f"{SEDAMP}/runtime/stage.py", 278), (f"{STDLIB}/json/decoder.py", 337))
    assert user_place(only_ours, cwd="/") == os.path.relpath(f"{STDLIB}/json/decoder.py", "/") + ":337"
    assert user_place(None) is None and user_place("no frames at all") is None


def test_a_chained_traceback_places_the_last_exception() -> None:
    cause = traceback(("/srv/app/low.py", 9), last="OSError: address already in use")
    tb = cause + "\nThe above exception was the direct cause of the following exception:\n\n"
    tb += traceback((f"{SEDAMP}/runtime/source.py", 87), ("/srv/app/front.py", 225), last="RuntimeError: x")
    assert user_place(tb, cwd="/srv") == "app/front.py:225"


def test_failures_at_one_place_are_one_kind_whatever_their_messages() -> None:
    digest = FailureDigest(cwd="/p")
    here = traceback(("/p/thumbs.py", 40))
    new = [digest.add(dead("thumb", f"{name!r} is not a readable image", here)) for name in ("a.jpg", "b.jpg")]
    assert new[0] is not None and new[1] is None
    assert digest.add(dead("thumb", "other", traceback(("/p/thumbs.py", 41)))) is not None  # another line
    assert digest.add(dead("write", "'a.jpg' is not a readable image", here)) is not None  # another stage
    kinds = digest.kinds()
    assert [(k.stage, k.place, k.count, k.message) for k in kinds] == [
        ("thumb", "thumbs.py:40", 2, "'a.jpg' is not a readable image"),
        ("thumb", "thumbs.py:41", 1, "other"),
        ("write", "thumbs.py:40", 1, "'a.jpg' is not a readable image"),
    ]
    assert digest.first_of("thumb") == new[0]


def test_without_a_traceback_the_message_less_its_numbers_and_names_makes_the_kind() -> None:
    digest = FailureDigest()
    for n in range(5):
        digest.add(dead("mid", f"event {n} of 'k{n}' is 2{n} bytes too large", None, "WireError"))
    digest.add(dead("mid", "rejected: queue full", None, "Rejected"))
    assert [(k.error_type, k.count, k.place) for k in digest.kinds()] == [("WireError", 5, None), ("Rejected", 1, None)]


def test_past_the_kinds_kept_failures_are_counted_as_of_other_kinds() -> None:
    digest = FailureDigest()
    for n in range(MAX_KINDS_PER_STAGE + 3):
        digest.add(dead("mid", "x", None, etype=f"Error{n}"))
    assert len(digest.kinds()) == MAX_KINDS_PER_STAGE
    assert digest.unlisted == {"mid": 3}
    assert repeat_lines([], digest.unlisted) == ["mid: 3 more failures of other kinds"]


def test_the_lines_printed_as_it_happens_and_at_the_end() -> None:
    digest = FailureDigest(cwd="/p")
    for n in range(5000):
        digest.add(dead("shout", "'txt'", traceback(("/p/shout.py", 3)), "KeyError", event_id=n))
    [kind] = digest.kinds()
    assert failure_line(kind.as_dict()) == "stage 'shout' failed on event 0: KeyError: 'txt' (at shout.py:3)"
    assert repeat_lines([kind.as_dict()], {}) == ["shout: KeyError: 'txt' (at shout.py:3), and 4,999 more like it"]
    long = dead("s", "first line " + "x" * 1000 + "\nsecond line", None)
    shown = FailureDigest().add(long)
    assert shown is not None and "\n" not in shown.message and len(shown.message) <= 300


def stages(handled: int, failed: int, kind: str = "handler") -> dict[str, Any]:
    return {"stages": {"src": {"kind": "source", "events_in": handled}, "mid": {"kind": kind, "events_in": handled,
                                                                                  "failed": failed}}}  # fmt: skip


def test_the_budget_is_judged_after_enough_events_and_only_past_its_share() -> None:
    budgets = {"mid": 0.9}
    assert over_budget(stages(49, 49), budgets) is None  # too few to judge
    assert over_budget(stages(50, 50), budgets) == ("mid", 50, 50)
    assert over_budget(stages(1000, 900), budgets) is None  # at the budget: still allowed
    assert over_budget(stages(1000, 901), budgets) == ("mid", 901, 1000)
    assert over_budget(stages(100_000, 30_000), budgets) is None  # failing often, not nearly always
    assert over_budget(stages(1000, 1000), {"mid": 1.0}) is None  # 1: never
    assert over_budget(stages(1000, 1000), {}) is None  # sources have none


def test_the_budget_message_names_the_stage_and_its_first_failure() -> None:
    digest = FailureDigest(cwd="/p")
    digest.add(dead("mid", "'txt'", traceback(("/p/shout.py", 3)), "KeyError"))
    assert budget_message("mid", 2150, 2150, 0.9, digest.first_of("mid")) == (
        "stage 'mid' failed 2,150 of the 2,150 events it handled, over its error budget (on_error.budget: 0.9); "
        "the first: KeyError: 'txt' (at shout.py:3)"
    )


NEW = {"failures": [{"stage": "mid", "error_type": "KeyError", "message": "'txt'", "place": "shout.py:3",
                     "event_id": 7, "traceback": "Traceback (most recent call last):\n  ...\nKeyError: 'txt'\n"}]}  # fmt: skip
LINE = "sedamp: stage 'mid' failed on event 7: KeyError: 'txt' (at shout.py:3)"


def test_a_failure_and_its_traceback_go_out_in_one_write() -> None:
    """The runtime's processes write to the same stderr (their logs, with -v): printed
    line by line, one of their lines could land between a failure and its traceback."""

    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            return super().write(s)

    out = Writes()
    FailureLines(verbose=True, stream=out)({"stages": {}, **NEW, "warnings": ["w"]})
    assert out.writes == 1 and out.getvalue().splitlines()[:3] == [
        "sedamp: warning: w",
        LINE,
        "Traceback (most recent call last):",
    ]
    out = Writes()
    FailureLines(stream=out)({"stages": {}})
    assert out.writes == 0


def test_each_display_prints_a_new_kind_of_failure_when_it_comes() -> None:
    out = io.StringIO()
    FailureLines(stream=out)({"stages": {}, **NEW})
    assert out.getvalue() == LINE + "\n"
    out = io.StringIO()
    FailureLines(verbose=True, stream=out)({"stages": {}, **NEW})
    assert out.getvalue().splitlines()[:2] == [LINE, "Traceback (most recent call last):"]
    out = io.StringIO()
    LogProgress(interval_s=3600, stream=out)({"elapsed_s": 0.5, "stages": {}, **NEW})
    assert out.getvalue() == LINE + "\n"  # at once, not at the next interval
    buf = io.StringIO()
    tp = TerminalProgress(Console(file=buf, force_terminal=True, width=200, color_system=None))
    tp({"elapsed_s": 0.5, "stages": {"mid": {"kind": "handler", "events_in": 3, "failed": 1}}, **NEW})
    tp.close()
    assert LINE in buf.getvalue() and "1 failed" in buf.getvalue()


def test_a_run_that_stopped_before_it_began_leaves_no_line_of_zeros() -> None:
    """A setup() raised: the final record is all zeros (the source may have read some);
    the progress line said nothing the error does not."""
    zeros = {"elapsed_s": 0.1, "final": True, "stages": {"src": {"kind": "source", "events_out": 6},
                                                          "mid": {"kind": "handler"}}}  # fmt: skip
    out = io.StringIO()
    LogProgress(interval_s=3600, stream=out)(zeros)
    assert out.getvalue() == ""
    buf = io.StringIO()
    tp = TerminalProgress(Console(file=buf, force_terminal=True, width=200, color_system=None))
    tp(zeros)
    tp.close()
    assert buf.getvalue().endswith("\x1b[1A\x1b[2K")  # the bar is erased at the end (cursor up, erase line)
