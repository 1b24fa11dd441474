"""sedamp.cli.table: the run's summary drawn as plain text, as rich drew it."""

from __future__ import annotations

from sedamp.cli import table


def test_a_table_in_the_box_rich_draws_with_its_title_and_caption_centred() -> None:
    lines = table.draw(
        "t: 1,000 events",
        ["stage", "in"],
        [["src", "1,000"], ["sink", "7"]],
        right=[False, True],
        caption="fused: a+b",
    )
    assert lines == [
        "t: 1,000 events".center(17),
        "┏━━━━━━━┳━━━━━━━┓",
        "┃ stage ┃    in ┃",
        "┡━━━━━━━╇━━━━━━━┩",
        "│ src   │ 1,000 │",
        "│ sink  │     7 │",
        "└───────┴───────┘",
        "fused: a+b".center(17),
    ]
    assert all(len(x) == 17 for x in lines[1:-1])
