"""A table drawn as plain text in the box rich draws by default (a heavy head), for the
summary `sedamp run` prints when it ends: importing rich and laying a table out with it
took a tenth of a one-event job. Pure."""

from __future__ import annotations

from collections.abc import Sequence


def draw(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool],
    caption: str | None = None,
) -> list[str]:
    """The lines of the table: `title` centred above it, a row of `header`, then `rows`
    (cells right-aligned where `right` says), `caption` centred below."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(left: str, fill: str, sep: str, end: str) -> str:
        return left + sep.join(fill * (w + 2) for w in widths) + end

    def cells(values: Sequence[str], bar: str) -> str:
        shown = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return bar + bar.join(f" {v} " for v in shown) + bar

    width = sum(widths) + 3 * len(widths) + 1
    lines = [title.center(width)]
    lines += [line("┏", "━", "┳", "┓"), cells(header, "┃"), line("┡", "━", "╇", "┩")]
    lines += [cells(r, "│") for r in rows]
    lines.append(line("└", "─", "┴", "┘"))
    if caption:
        lines.append(caption.center(width))
    return lines
