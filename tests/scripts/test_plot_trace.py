"""scripts/plot_trace.py: a window of a trace as rows, bars and arrows (and a PNG)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import plot_trace  # noqa: E402

from sedamp.observe.trace import chrome_trace  # noqa: E402
from tests.unit.observe.test_trace import _records  # noqa: E402


def test_a_window_shows_its_slices_and_the_flows_through_it(tmp_path: Path) -> None:
    doc = chrome_trace(_records(), ["src", "a", "b"], "demo")
    whole = plot_trace.timeline(doc, 0.0, 100.0)
    assert whole.rows == ["src:src", "q:a", "waiting 1", "sdw:a:0", "q:b", "waiting 1", "sdw:b:1"]
    # reads, calls and waits at their times (ms from the first slice, at 1 ms)
    assert sorted(whole.bars) == [
        (0, 0.0, 1.0, "source"),
        (2, 2.0, 2.0, "queue"),
        (3, 5.0, 3.0, "worker"),
        (5, 9.0, 1.0, "queue"),
        (6, 11.0, 8.0, "worker"),
    ]
    # two arrows: 5 ends at a; 0 and its children go on through b
    assert sorted(map(len, whole.arrows)) == [3, 5]
    assert all([t for t, _ in a] == sorted(t for t, _ in a) for a in whole.arrows)
    late = plot_trace.timeline(doc, 10.5, 5.0)  # b's call, cut to the window, and the arrow into it
    assert late.bars == [(6, 0.5, 4.5, "worker")]
    assert late.arrows == [[(-10.5, 0), (-8.5, 2), (-5.5, 3), (-1.5, 5), (0.5, 6)]]  # whole: drawn inside only
    # a window inside b's queue wait: the wait, and the arrow that passes through it
    inside = plot_trace.timeline(doc, 9.2, 0.5)
    assert inside.bars == [(5, 0.0, 0.5, "queue")] and len(inside.arrows) == 1
    # a slice that ends where the window starts is not in it
    assert all(r != 0 for r, *_ in plot_trace.timeline(doc, 1.0, 1.0).bars)
    out = tmp_path / "t.png"
    plot_trace.draw(whole, out, "demo")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
