"""Draw a trace written by `sedamp run --trace FILE` as a timeline picture (PNG), for a
look at it where no browser is at hand (ui.perfetto.dev shows the same file live).

    python scripts/plot_trace.py run.trace.json --out trace.png                # the first 50 ms
    python scripts/plot_trace.py run.trace.json --out trace.png --from-ms 200 --span-ms 20

One row per track, in the file's order (sources, queues and their waiting lanes,
workers): each slice a bar (handler calls and reads in one colour per stage, waits in a
queue in grey), each flow arrow a line from step to step. Needs matplotlib (the `plot`
extra).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Timeline:
    """What a picture of a window of the trace shows, times in ms from its start."""

    span_ms: float = 0.0  # the window's length
    rows: list[str] = field(default_factory=list)  # track names, top to bottom
    bars: list[tuple[int, float, float, str]] = field(
        default_factory=list
    )  # (row, start, length, category), cut to the window
    arrows: list[list[tuple[float, int]]] = field(default_factory=list)  # steps (t, row) of the flows that cross it


def timeline(doc: dict[str, Any], from_ms: float, span_ms: float) -> Timeline:
    """The tracks, slices and flows of `doc` in the window [from_ms, from_ms + span_ms),
    counted from the document's first slice: slices cut to the window, and every flow
    that crosses it, whole (the picture shows the part inside)."""
    events = doc["traceEvents"]
    names: dict[tuple[int, int], str] = {}
    order: dict[int, int] = {}
    for e in events:
        if e["ph"] == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e["ph"] == "M" and e["name"] == "process_sort_index":
            order[e["pid"]] = e["args"]["sort_index"]
    timed = [e for e in events if e["ph"] in ("X", "s", "t", "f")]
    if not timed:
        return Timeline(span_ms)
    zero = min(e["ts"] for e in timed) / 1000 + from_ms
    end = zero + span_ms
    tracks = sorted(names, key=lambda k: (order.get(k[0], 0), k[0], k[1] != k[0], k[1]))
    row = {k: i for i, k in enumerate(tracks)}
    out = Timeline(span_ms, [names[k] for k in tracks])
    flows: dict[Any, list[tuple[float, int]]] = {}
    for e in timed:
        t = e["ts"] / 1000
        if e["ph"] == "X":
            first, last = max(t, zero), min(t + e["dur"] / 1000, end)
            if first < last and (e["pid"], e["tid"]) in row:
                out.bars.append((row[(e["pid"], e["tid"])], first - zero, last - first, e["cat"]))
        elif (e["pid"], e["tid"]) in row:
            flows.setdefault(e["id"], []).append((t - zero, row[(e["pid"], e["tid"])]))
    out.arrows = [sorted(s) for s in flows.values() if min(s)[0] < span_ms and max(s)[0] >= 0 and len(s) > 1]
    return out


def draw(tl: Timeline, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 0.45 * len(tl.rows) + 1.5))
    colours = {"source": "tab:green", "worker": "tab:blue", "queue": "0.75"}
    for r, start, length, cat in tl.bars:
        ax.broken_barh([(start, max(length, 0.01))], (r - 0.35, 0.7), color=colours.get(cat, "tab:orange"))
    for steps in tl.arrows:
        ax.plot([t for t, _ in steps], [r for _, r in steps], color="tab:red", linewidth=0.6, alpha=0.7)
    ax.set_xlim(0, tl.span_ms)
    ax.set_yticks(range(len(tl.rows)), tl.rows)
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--from-ms", type=float, default=0.0, help="where the window starts (ms from the first slice)")
    ap.add_argument("--span-ms", type=float, default=50.0, help="how long the window is (ms)")
    args = ap.parse_args()
    doc = json.loads(args.trace.read_text())
    tl = timeline(doc, args.from_ms, args.span_ms)
    name = doc.get("sedamp", {}).get("name", args.trace.name)
    title = f"{name}: {len(tl.bars)} slices, {len(tl.arrows)} flows, {args.span_ms:g} ms from {args.from_ms:g} ms"
    draw(tl, args.out, title)
    print(f"{args.out}: {title}")


if __name__ == "__main__":
    main()
