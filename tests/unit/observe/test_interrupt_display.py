"""What a user sees of an interrupt: log lines kept above the bar, and a summary that
counts what was done, not what was read."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from rich.console import Console

from sedamp.cli.live import HeldLines, TerminalProgress
from sedamp.cli.run import interrupted_line, summary_title
from sedamp.control.summary import StageSummary, Summary
from tests.integration.util import screen
from tests.unit.observe.test_progress import chain, record


def test_held_lines_keep_whole_lines_until_taken() -> None:
    held = HeldLines()
    held.write("sedamp: WARNING: one\nsedamp: ERR")
    held.write("OR: two\n")
    assert held.take() == ["sedamp: WARNING: one", "sedamp: ERROR: two"]
    assert held.take() == []


def test_a_log_line_while_the_bar_is_shown_is_printed_above_it_and_the_handler_restored() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        tp = TerminalProgress(Console(file=buf, force_terminal=True, width=120, color_system=None))
        tp(record(0.0, chain(10, 10, 5, 5)))
        logging.getLogger("sedamp.test").warning("SIGINT: draining; interrupt again to stop at once")
        assert "SIGINT" not in buf.getvalue()  # kept: written now it would be drawn over
        tp(record(1.0, chain(20, 20, 10, 10)))
        tp.close()
        assert handler.stream is buf
    finally:
        root.removeHandler(handler)
    shown = screen(buf.getvalue().encode())
    # a line of its own, and the bar redrawn below it
    assert shown[0] == "SIGINT: draining; interrupt again to stop at once"
    assert "20/100 done" in shown[1] and shown[2].startswith("list 20 read")


def summary(interrupted: bool, done: int | None, events: int = 2560) -> Summary:
    stages = (StageSummary("files", "source", events, events, 0, 1, 0, discarded=events - (done or 0)),)
    return Summary("job", Path("r"), Path("d"), stages, 4.0, events, 0, interrupted, None, done=done)


def test_an_interrupted_summary_counts_what_was_done() -> None:
    s = summary(True, 344)
    assert summary_title(s) == "job: 344 of 2,560 events done in 4.00 s (interrupted)"
    assert interrupted_line(s) == "interrupted: 2,216 of the events read were not done; run again to do them"
    assert s.events_per_s == 86.0
    assert s.to_dict()["done"] == 344 and s.to_dict()["discarded"] == 0
    assert summary_title(summary(False, 2560)) == "job: 2,560 events in 4.00 s (640 events/s)"
    assert summary_title(summary(True, None)) == "job: 2,560 events read in 4.00 s (interrupted)"
    assert interrupted_line(summary(True, 2560)) == "interrupted"
