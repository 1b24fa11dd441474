"""``--set PATH=VALUE`` overrides applied to a parsed topology tree before it is checked.
Pure: edits the plain-value tree in place and records its problems with file ``--set``.

PATH starts with name, description, controller, a stage name, or ``stages.<stage>``
(``resize.workers=4`` sets ``stages.resize.workers``); VALUE is read as YAML, with
``${VAR}`` expanded, so ``--set resize.workers=4`` gives an integer. Each path set is
remembered in `Problems.overridden`, so that later problems inside it name ``--set``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sedamp.spec import yamlmap
from sedamp.spec.problems import OVERRIDE_FILE, Problems, describe, did_you_mean, field_name

__all__ = ["apply_overrides"]

_TOP_FIELDS = ("name", "description", "controller")  # what a PATH may start with, besides a stage


def apply_overrides(
    tree: dict[Any, Any],
    overrides: Sequence[str],
    substitute: Callable[[str], str],
    p: Problems,
) -> None:
    """Apply ``--set path=value`` strings to the parsed tree, in order."""
    for text in overrides:
        path_text, sep, value_text = text.partition("=")
        path_text = path_text.strip()
        segments = path_text.split(".")
        if not sep or not path_text or any(not s.strip() for s in segments):
            p.add_raw(
                OVERRIDE_FILE,
                None,
                path_text or text,
                f"malformed override {text!r}: expected PATH=VALUE",
                "e.g. --set resize.workers=4 or --set decode.params.size=128",
            )
            continue
        path = _resolve(tree, [s.strip() for s in segments], path_text, p)
        if path is None:
            continue
        try:
            loaded = yamlmap.load(value_text, substitute)
        except yamlmap.YamlSyntaxError as exc:
            p.add_raw(
                OVERRIDE_FILE,
                None,
                path_text,
                f"cannot parse the value {value_text!r}: {exc.message}",
                "quote the value, e.g. --set 'name=\"a: b\"'",
            )
            continue
        for issue in loaded.issues:
            p.issue(dataclasses.replace(issue, path=path + issue.path, line=None), override=True)
        if _assign(tree, path, loaded.value, path_text, p):
            p.overridden.add(path)


def _resolve(tree: dict[Any, Any], segments: list[str], path_text: str, p: Problems) -> tuple[Any, ...] | None:
    """The field path PATH names in `tree` (a stage name gains its ``stages.`` prefix), or
    None after recording why it names nothing that can be set."""
    stages = tree.get("stages")
    stage_names = [str(k) for k in stages] if isinstance(stages, dict) else []
    first = segments[0]
    path: tuple[Any, ...]
    if first in _TOP_FIELDS:
        path = tuple(segments)
    elif first in stage_names:
        path = ("stages", *segments)
    elif first == "stages" and len(segments) >= 2 and segments[1] in stage_names:
        path = tuple(segments)
    else:
        shown = segments[1] if first == "stages" and len(segments) >= 2 else first
        p.add_raw(
            OVERRIDE_FILE,
            None,
            path_text,
            f"unknown stage {shown!r}",
            did_you_mean(
                shown,
                [*stage_names, *_TOP_FIELDS],
                "the first part of PATH is name, description, controller or a stage name",
            ),
        )
        return None
    if first in ("name", "description") and len(segments) > 1:
        p.add_raw(OVERRIDE_FILE, None, path_text, f"{first} is a plain string", f"use --set {first}=VALUE")
        return None
    return path


def _assign(tree: dict[Any, Any], path: tuple[Any, ...], value: Any, path_text: str, p: Problems) -> bool:
    """Set `path` in `tree` to `value`, making the missing mappings on the way; False after
    recording the problem if a value on the way is not a mapping."""
    node: Any = tree
    for i, seg in enumerate(path[:-1]):
        child = node.get(seg)
        if child is None:
            child = {}
            node[seg] = child
        elif not isinstance(child, dict):
            p.add_raw(
                OVERRIDE_FILE,
                None,
                path_text,
                f"cannot set {path_text}: {field_name(path[: i + 1])} is {describe(child)}, not a mapping",
                f"set {field_name(path[: i + 1])} as a whole instead",
            )
            return False
        node = child
    node[path[-1]] = value
    return True
