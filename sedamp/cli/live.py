"""Progress of `sedamp run` on a terminal: a live bar, redrawn every period, with each
new kind of failure a record carries printed as a line of its own above it; so are the
run's log lines (the word on Ctrl-C that a second one stops at once), which the bar
would otherwise draw over."""

from __future__ import annotations

import logging
import sys
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sedamp.cli.progress import idle
from sedamp.observe.failures import failure_lines
from sedamp.observe.progress import Tracker, View, duration, headline, stage_line


class HeldLines:
    """The stream of the log handlers while the bar is on screen: a line written to the
    terminal under the bar would be drawn over at its next redraw, so lines are kept
    here and printed above the bar at the redraw. Writing only appends to a list: log
    calls may come from a signal handler (Ctrl-C), in the middle of a redraw."""

    def __init__(self) -> None:
        self.partial = ""
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        head, *rest = (self.partial + text).split("\n")
        if rest:
            self.lines.append(head)
            self.lines.extend(rest[:-1])
            self.partial = rest[-1]
        else:
            self.partial = head
        return len(text)

    def flush(self) -> None:
        pass

    def take(self) -> list[str]:
        taken, self.lines = self.lines, []
        return taken


def hold_log_lines(stream: HeldLines, terminal: Any) -> list[tuple[logging.StreamHandler[Any], Any]]:
    """Point the root logger's handlers that write to `terminal` at `stream`; returns
    the handlers and their streams, to put back."""
    moved = []
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (terminal, sys.__stderr__):
            moved.append((h, h.setStream(stream)))
    return moved


class TerminalProgress:
    """A bar (done of total, rate, ETA, failures) and a compact line per stage, redrawn
    in place every period; left on screen when the run ends. Log lines are printed
    above it (`HeldLines`)."""

    def __init__(self, console: Console | None = None, copies: bool = False, verbose: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.tracker = Tracker(copies=copies)
        self.verbose = verbose
        self.held = HeldLines()
        self.moved = hold_log_lines(self.held, self.console.file)
        self.live = Live(Text("starting..."), console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def __call__(self, record: dict[str, Any]) -> None:
        self._print_held()
        for line in failure_lines(record, self.verbose):
            self.console.print(Text(line), soft_wrap=True)  # above the bar
        self.live.update(self.render(self.tracker.update(record)), refresh=True)

    def _print_held(self) -> None:
        for line in self.held.take():
            self.console.print(Text(line), soft_wrap=True)

    def render(self, v: View) -> Group:
        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=40)
        bar.add_column()
        frac = v.fraction
        shown = ProgressBar(total=100.0, completed=100.0 * (frac if frac is not None else 0.0), width=40)
        if frac is None:
            shown = ProgressBar(total=None, width=40, pulse=True)  # no total: a moving bar
        failed = Text(f"{v.failed:,} failed", style="red" if v.failed else "")
        line = Text(headline(v).rsplit(", ", 1)[0] + ", ")
        line.append_text(failed)
        line.append(f"  [{duration(v.elapsed_s)}]", style="dim")
        bar.add_row(shown, line)
        return Group(bar, Text(stage_line(v), style="dim", overflow="ellipsis", no_wrap=True))

    def close(self) -> None:
        self._print_held()
        if self.tracker.last is None or idle(self.tracker.last):
            self.live.transient = True  # erased: the error says why nothing happened
        self.live.stop()
        for handler, stream in self.moved:
            handler.setStream(stream)
        for line in self.held.take() + ([self.held.partial] if self.held.partial else []):
            print(line, file=self.console.file)  # logged while the bar stopped
