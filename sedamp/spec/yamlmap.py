"""YAML text -> plain Python values plus the 1-based line of every field.

PyYAML's composer gives a node tree in which every node knows where it starts. This module
walks that tree with the *safe* scalar constructors only (null, bool, int, float, str,
and the other YAML 1.1 safe types), so ``!!python/...`` tags are never executed, and
records, for every field path (a tuple of mapping keys and sequence indices), the line of
its key (for a mapping entry) or of its node (for a sequence item or the root).

Things that are wrong but do not stop the walk (a duplicate key, an unsupported tag, a
string whose ``${VAR}`` cannot be substituted) are collected as `YamlIssue`; a syntax
error stops it and raises `YamlSyntaxError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

__all__ = [
    "LineMap",
    "Loaded",
    "SubstitutionError",
    "YPath",
    "YamlIssue",
    "YamlSyntaxError",
    "load",
]

YPath = tuple[Any, ...]
"""A field path: mapping keys and sequence indices from the root, e.g. ``("stages", "a")``."""

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 200
# Limits that keep a hostile or broken file from taking the machine: a topology is a
# few KiB; 256 KiB holds a generated one of a thousand stages. Aliases are expanded, so
# a few hundred bytes of nested aliases could otherwise stand for billions of values.
MAX_TEXT_CHARS = 256 * 1024
MAX_VALUES = 200_000


class YamlSyntaxError(Exception):
    """The text is not valid YAML. `line` is 1-based (None when unknown)."""

    def __init__(self, message: str, line: int | None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.hint = hint


class SubstitutionError(ValueError):
    """Raised by a `substitute` callback when a string cannot be expanded."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class YamlIssue:
    """A problem found while walking the tree. `poisoned` means the value at `path` is
    unusable (replaced by None or left unexpanded), so checks of it should stay quiet."""

    path: YPath
    line: int | None
    message: str
    hint: str | None = None
    poisoned: bool = False


@dataclass
class LineMap:
    """1-based lines by field path.

    `keys` holds the line of a mapping entry's key, of a sequence item, and of the root
    (path ``()``); `values` holds the line where the value node itself starts."""

    keys: dict[YPath, int] = field(default_factory=dict)
    values: dict[YPath, int] = field(default_factory=dict)

    def line(self, path: YPath) -> int | None:
        """The line of exactly `path`, or None."""
        return self.keys.get(tuple(path))

    def value_line(self, path: YPath) -> int | None:
        """The line where the value at `path` starts (falls back to its key's line)."""
        path = tuple(path)
        return self.values.get(path, self.keys.get(path))

    def nearest(self, path: YPath) -> int | None:
        """The line of `path`, or of its closest ancestor that has one."""
        path = tuple(path)
        for i in range(len(path), -1, -1):
            line = self.keys.get(path[:i])
            if line is not None:
                return line
        return None


@dataclass
class Loaded:
    """The result of `load`: the plain value, its lines, and the non-fatal issues."""

    value: Any
    lines: LineMap
    issues: list[YamlIssue]


def load(text: str, substitute: Callable[[str], str] | None = None) -> Loaded:
    """Parse one YAML document into plain values (dict, list, scalars) with line numbers.

    `substitute`, when given, is applied to every string value (not to mapping keys). A
    plain (unquoted) scalar that contained ``${`` is re-resolved after substitution, so
    ``workers: ${N:-4}`` gives the integer 4 while ``"${N:-4}"`` stays a string. It may
    raise `SubstitutionError`, which becomes a poisoned issue at that value.

    Raises `YamlSyntaxError` when the text is not YAML (or holds several documents).
    """
    if len(text) > MAX_TEXT_CHARS:
        raise YamlSyntaxError(
            f"the file holds {len(text):,} characters; a topology file may hold at most {MAX_TEXT_CHARS:,}",
            None,
            "is this the right file? a topology is a few KiB of YAML",
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise YamlSyntaxError(
            "YAML syntax error: the nesting is too deep to read", None, "a topology nests a few levels deep"
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        raise YamlSyntaxError(f"cannot read the text: {exc.reason}", line) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error above has a mark
        raise YamlSyntaxError(f"YAML error: {exc}", None) from None
    walker = _Walker(substitute)
    if root is None:
        return Loaded(None, walker.lines, walker.issues)
    walker.lines.keys[()] = _line(root)
    walker.lines.values[()] = _line(root)
    try:
        value = walker.convert(root, (), 0)
    except _TooManyValues as exc:
        raise YamlSyntaxError(
            f"the document stands for more than {MAX_VALUES:,} values once its aliases are expanded",
            exc.line,
            "use each anchor (&name) for a small part of the file, not an alias of aliases",
        ) from None
    return Loaded(value, walker.lines, walker.issues)


class _TooManyValues(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    line = int(mark.line) + 1 if mark is not None else None
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    message = f"YAML syntax error: {problem}"
    if exc.context and exc.problem and exc.problem.startswith("but "):
        message = f"YAML syntax error: {exc.context.strip()}, {problem}"
    elif exc.context and exc.problem and exc.context_mark is not None:
        ctx_line = int(exc.context_mark.line) + 1
        if ctx_line != line:
            message += f"; {exc.context.strip()} on line {ctx_line}"
        else:
            message += f"; {exc.context.strip()}"
    if "\t" in problem or "'\\t'" in problem:
        hint = "indent with spaces: YAML does not allow tabs for indentation"
    elif "expected a single document" in message or "expected '<document start>'" in message:
        hint = "a topology file holds exactly one YAML document"
    else:
        hint = "check the indentation, colons and quoting on and just above this line"
    return YamlSyntaxError(message, line, hint)


class _Walker:
    """Converts a node tree, filling `lines` and `issues` as it goes."""

    def __init__(self, substitute: Callable[[str], str] | None) -> None:
        self.substitute = substitute
        self.lines = LineMap()
        self.issues: list[YamlIssue] = []
        self.constructor = SafeConstructor()
        self.resolver = Resolver()
        self._active: set[int] = set()  # ids of the collection nodes being walked
        self._values = 0  # nodes converted so far: an alias counts again each time

    def convert(self, node: Node, path: YPath, depth: int) -> Any:
        self._values += 1
        if self._values > MAX_VALUES:
            raise _TooManyValues(_line(node))
        if depth > _MAX_DEPTH:
            self.issues.append(YamlIssue(path, _line(node), "nesting is too deep", poisoned=True))
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            self.issues.append(
                YamlIssue(
                    path,
                    _line(node),
                    "an alias refers to its own parent (a recursive structure)",
                    "remove the recursive alias",
                    poisoned=True,
                )
            )
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    return self._unsupported(node, path)
                out: list[Any] = []
                for i, item in enumerate(node.value):
                    self.lines.keys[(*path, i)] = _line(item)
                    self.lines.values[(*path, i)] = _line(item)
                    out.append(self.convert(item, (*path, i), depth + 1))
                return out
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    return self._unsupported(node, path)
                return self._mapping(node, path, depth)
            return self._unsupported(node, path)  # pragma: no cover - no other node kinds
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, path: YPath, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        # Merge keys (<<: *defaults) first, so the mapping's own keys override them.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(out, value_node, path, depth)
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self.issues.append(
                    YamlIssue(
                        path,
                        _line(key_node),
                        "a mapping key must be a plain scalar, not a list or mapping",
                        "write the key as a plain word",
                    )
                )
                continue
            key = self._construct(key_node, path)
            if key is None and key_node.tag != "tag:yaml.org,2002:null":
                continue  # an unsupported tag, already reported
            kpath = (*path, key)
            kline = _line(key_node)
            if key in first_line:
                self.issues.append(
                    YamlIssue(
                        kpath,
                        kline,
                        f"duplicate key {key!r} (first defined on line {first_line[key]})",
                        "remove or rename one of the two",
                    )
                )
            else:
                first_line[key] = kline
            self.lines.keys[kpath] = kline
            self.lines.values[kpath] = _line(value_node)
            out.pop(key, None)  # a later duplicate wins, and takes the later position
            out[key] = self.convert(value_node, kpath, depth + 1)
        return out

    def _merge(self, out: dict[Any, Any], value_node: Node, path: YPath, depth: int) -> None:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        merged: dict[Any, Any] = {}
        for src in reversed(sources):  # earlier mappings in a `<<: [*a, *b]` list win
            if not isinstance(src, MappingNode):
                self.issues.append(
                    YamlIssue(
                        path,
                        _line(src),
                        "a merge key (<<) needs a mapping or a list of mappings",
                        "point << at an anchored mapping",
                    )
                )
                continue
            merged.update(self.convert(src, path, depth + 1))
        out.update(merged)

    def _unsupported(self, node: Node, path: YPath) -> None:
        self.issues.append(
            YamlIssue(
                path,
                _line(node),
                f"unsupported YAML tag {node.tag!r}",
                "only plain YAML values are allowed (no ! or !! tags)",
                poisoned=True,
            )
        )
        return None

    def _construct(self, node: ScalarNode, path: YPath) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except ConstructorError:
            return self._unsupported(node, path)
        except (ValueError, TypeError) as exc:  # e.g. an impossible timestamp
            self.issues.append(
                YamlIssue(
                    path,
                    _line(node),
                    f"invalid {node.tag.rsplit(':', 1)[-1]} value {node.value!r}: {exc}",
                    "quote it to make it a string",
                    poisoned=True,
                )
            )
            return None

    def _scalar(self, node: ScalarNode, path: YPath) -> Any:
        if node.tag != _STR_TAG or self.substitute is None or "$" not in node.value:
            return self._construct(node, path)
        raw = str(node.value)
        try:
            text = self.substitute(raw)
        except SubstitutionError as exc:
            self.issues.append(YamlIssue(path, _line(node), exc.message, exc.hint, poisoned=True))
            return raw
        if node.style is None and "${" in raw and text:
            tag = self.resolver.resolve(ScalarNode, text, (True, False))
            return self._construct(ScalarNode(tag, text, node.start_mark, node.end_mark), path)
        return text
