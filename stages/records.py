"""Record stages: read JSON Lines / CSV, validate and reshape records, write them back.

Event shapes
    ``ReadJsonl`` (source) yields ``{"line": int, "text": str}`` per non-blank line.
    ``parse_json`` (handler): ``{"line": int, "text": str}`` -> the parsed JSON object plus
    ``"_line": int``.
    ``transform`` (handler): a dict -> a new dict.
    ``Validate`` (handler): a dict -> a checked, normalised dict (declared fields only).
    ``WriteJsonl`` (sink): a dict per event -> one JSON object per line.
    ``ReadCsv`` (source) yields ``{<column>: str, ..., "_line": int}`` per row.
    ``WriteCsv`` (sink): a dict per event -> one CSV row (the `fields` columns).

Bad records are rejected by raising ValueError with a message naming the line number and
the field, so the runtime writes them to the dead-letter file and carries on.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stages.files import AtomicFile, atomic_write

__all__ = [
    "ReadCsv",
    "ReadJsonl",
    "Validate",
    "WriteCsv",
    "WriteJsonl",
    "parse_json",
    "transform",
    "validate",
]


def _existing_file(stage: str, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{stage}: {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"{stage}: {str(p)!r} is not a file")
    return p


def _names(value: str | Iterable[str] | None) -> list[str]:
    """A list of field names given as a list or as one comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


# --------------------------------------------------------------------------- JSON Lines


class ReadJsonl:
    """Source: the non-blank lines of a JSON Lines file, streamed (the file is never held
    in memory whole).

    Params: `path`, `encoding` (default ``"utf-8"``; a UTF-8 byte-order mark on the first
    line is dropped). Lines are split on ``\\n`` only and numbered from 1 as in an editor;
    the yielded ``text`` has its line ending removed. ``total()`` is the number of
    non-blank lines (one extra pass over the file, done once).

    Yields ``{"line": int, "text": str}``. A line that is not valid in `encoding` is
    yielded with its bytes decoded with replacement characters and an extra
    ``"decode_error": str`` field, so ``parse_json`` rejects it with its line number.
    """

    def setup(self, path: str | os.PathLike[str], encoding: str = "utf-8") -> None:
        self.path = _existing_file("ReadJsonl", path)
        self.encoding = encoding
        self._total: int | None = None

    def total(self) -> int:
        if self._total is None:
            n = 0
            with self.path.open("rb") as f:
                for raw in f:
                    if raw.strip():
                        n += 1
            self._total = n
        return self._total

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                if n == 1 and raw.startswith(b"\xef\xbb\xbf") and "utf" in self.encoding.lower():
                    raw = raw[3:]
                try:
                    yield {"line": n, "text": raw.decode(self.encoding)}
                except UnicodeDecodeError as exc:
                    yield {
                        "line": n,
                        "text": raw.decode(self.encoding, errors="replace"),
                        "decode_error": f"not valid {self.encoding} at byte {exc.start}",
                    }


_JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}

_TYPE_NAMES = ("str", "int", "float", "bool", "number")


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _matches(value: Any, type_name: str) -> bool:
    if type_name == "str":
        return isinstance(value, str)
    if type_name == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # a JSON true is not a number
        return False
    if type_name == "int":
        return isinstance(value, int)
    return isinstance(value, int | float)  # "float" and "number"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(
    event: dict[str, Any],
    required: Sequence[str] | str = (),
    types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Handler: ``{"line": int, "text": str}`` -> the JSON object in ``text`` plus
    ``"_line": int`` (the line number).

    Params
        required: field names that must be present (a list, or one comma-separated str).
        types: field -> ``"str"``, ``"int"``, ``"float"``, ``"bool"`` or ``"number"``,
            checked when the field is present (``null`` matches no type). ``"int"`` and
            ``"number"`` reject booleans; ``"float"`` accepts an integer and converts it
            to a float, so the field always comes out as a float; ``"number"`` keeps
            integers and floats as they are.

    Raises ValueError, with a message starting ``line N:``, if the text is not JSON
    (``NaN``/``Infinity`` included), is not an object, lacks a required field or has a
    field of the wrong type (the message names the field). An unknown type name in
    `types` is a ValueError too.
    """
    line = event.get("line") if isinstance(event, dict) else None
    where = f"line {line}" if line is not None else "line ?"
    if not isinstance(event, dict) or not isinstance(event.get("text"), str):
        raise ValueError(f"{where}: the event must be a dict with a str 'text' field")
    if "decode_error" in event:
        raise ValueError(f"{where}: {event['decode_error']}")
    text = event["text"]
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # NaN / Infinity
        raise ValueError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{where}: invalid JSON: nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {_json_type(record)}")
    for name in _names(required):
        if name not in record:
            raise ValueError(f"{where}: missing required field {name!r}")
    for name, type_name in (types or {}).items():
        if type_name not in _TYPE_NAMES:
            raise ValueError(
                f"parse_json: unknown type {type_name!r} for field {name!r}; use one of {', '.join(_TYPE_NAMES)}"
            )
        if name not in record:
            continue
        value = record[name]
        if not _matches(value, type_name):
            shown = json.dumps(value, ensure_ascii=False)
            if len(shown) > 40:
                shown = shown[:37] + "..."
            raise ValueError(f"{where}: field {name!r} must be {type_name}, got {_json_type(value)} {shown}")
        if type_name == "float":
            record[name] = float(value)
    record["_line"] = line
    return record


def transform(
    event: dict[str, Any],
    rename: Mapping[str, str] | None = None,
    lower: Sequence[str] | str = (),
    drop: Sequence[str] | str = (),
    add: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Handler: a dict -> a new dict (the input is not modified), in this order:

    1. `rename` (old name -> new name), all at once, so ``{a: b, b: a}`` swaps; a missing
       old name is skipped; two fields ending up with one name is a ValueError;
    2. `lower`: lowercase the string values of these fields (names after renaming;
       missing or non-string fields are left alone);
    3. `drop`: remove these fields (missing ones are skipped);
    4. `add`: set these constant fields (replacing existing values).

    Field lists may be given as lists or as one comma-separated string.
    """
    if not isinstance(event, dict):
        raise ValueError(f"transform: the event must be a dict, got {type(event).__name__}")
    renames = dict(rename or {})
    out: dict[str, Any] = {}
    for key, value in event.items():
        new = renames.get(key, key)
        if new in out:
            raise ValueError(
                f"transform: renaming gives two fields named {new!r}"
                + (f" (line {event['_line']})" if "_line" in event else "")
            )
        out[new] = value
    for name in _names(lower):
        value = out.get(name)
        if isinstance(value, str):
            out[name] = value.lower()
    for name in _names(drop):
        out.pop(name, None)
    if add:
        out.update(add)
    return out


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_FIELD_KEYS = {"type", "required", "default", "min", "max", "pattern", "choices", "case", "formats", "min_length",
               "max_length"}  # fmt: skip
_VALIDATE_TYPES = ("str", "int", "float", "bool", "date")


def _field_specs(fields: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the `fields` param of `validate` once per stage (a mistake there is a
    programming error, named precisely, not a bad record)."""
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError("validate: 'fields' must map each field name to its rules")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in fields.items():
        if spec is not None and not isinstance(spec, str | Mapping):
            raise ValueError(f"validate: field {name!r}: give a type name or a mapping of rules, got {spec!r}")
        spec = {"type": spec} if isinstance(spec, str) else dict(spec or {})
        unknown = set(spec) - _FIELD_KEYS
        if unknown:
            raise ValueError(f"validate: field {name!r}: unknown rule(s) {', '.join(sorted(unknown))}")
        spec.setdefault("type", "str")
        where = f"validate: field {name!r}"
        if spec["type"] not in _VALIDATE_TYPES:
            raise ValueError(f"{where}: type must be one of {', '.join(_VALIDATE_TYPES)}")
        if spec.get("case") not in (None, "lower", "upper", "title"):
            raise ValueError(f"{where}: case must be lower, upper or title")
        if not isinstance(spec.get("required", True), bool):
            raise ValueError(f"{where}: required must be true or false, got {spec['required']!r}")
        for rule in ("min", "max"):
            if rule in spec and (isinstance(spec[rule], bool) or not isinstance(spec[rule], int | float)):
                raise ValueError(f"{where}: {rule} must be a number, got {spec[rule]!r}")
        for rule in ("min_length", "max_length"):
            if rule in spec and (isinstance(spec[rule], bool) or not isinstance(spec[rule], int)):
                raise ValueError(f"{where}: {rule} must be an integer, got {spec[rule]!r}")
        if "choices" in spec and not isinstance(spec["choices"], list | tuple):
            raise ValueError(f"{where}: choices must be a list, got {spec['choices']!r}")
        formats = spec.get("formats")
        if formats is not None and not (
            isinstance(formats, str) or (isinstance(formats, list | tuple) and all(isinstance(f, str) for f in formats))
        ):
            raise ValueError(f"{where}: formats must be a strptime format or a list of them, got {formats!r}")
        if "pattern" in spec:
            try:
                spec["_re"] = re.compile(str(spec["pattern"]))
            except re.error as exc:
                raise ValueError(f"{where}: pattern {spec['pattern']!r} is not a regular expression: {exc}") from None
        out[str(name)] = spec
    return out


def _convert(raw: Any, spec: dict[str, Any], name: str) -> Any:
    kind = spec["type"]
    shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
    if kind == "str":
        value: Any = raw if isinstance(raw, str) else str(raw)
        case = spec.get("case")
        if case:
            value = getattr(value, case)()
        if "min_length" in spec and len(value) < spec["min_length"]:
            raise ValueError(f"field {name!r}: {shown} is shorter than {spec['min_length']}")
        if "max_length" in spec and len(value) > spec["max_length"]:
            raise ValueError(f"field {name!r}: {shown} is longer than {spec['max_length']}")
        if "_re" in spec and not spec["_re"].fullmatch(value):
            raise ValueError(f"field {name!r}: {shown} does not match {spec['pattern']!r}")
    elif kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif str(raw).lower() in _TRUE:
            value = True
        elif str(raw).lower() in _FALSE:
            value = False
        else:
            raise ValueError(f"field {name!r}: {shown} is not a boolean (true/false, yes/no, 1/0)")
    elif kind in ("int", "float"):
        if isinstance(raw, bool):
            raise ValueError(f"field {name!r}: {shown} is not {'an int' if kind == 'int' else 'a number'}")
        text = raw.replace("_", "x") if isinstance(raw, str) else raw  # int("1_000") would pass
        if kind == "int" and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(f"field {name!r}: {shown} is not an int")  # int(3.7) would truncate
        try:
            value = int(text) if kind == "int" else float(text)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"field {name!r}: {shown} is not {'an int' if kind == 'int' else 'a number'}") from None
        if kind == "float" and not math.isfinite(value):
            raise ValueError(f"field {name!r}: {shown} is not a finite number")
        if "min" in spec and value < spec["min"]:
            raise ValueError(f"field {name!r}: {value} is below the minimum {spec['min']}")
        if "max" in spec and value > spec["max"]:
            raise ValueError(f"field {name!r}: {value} is above the maximum {spec['max']}")
    else:  # date
        formats = spec.get("formats") or ["%Y-%m-%d"]
        for fmt in [formats] if isinstance(formats, str) else formats:
            try:
                value = datetime.datetime.strptime(str(raw), fmt).date().isoformat()
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"field {name!r}: {shown} is not a date ({' or '.join(map(str, formats))})")
    if "choices" in spec and value not in spec["choices"]:
        raise ValueError(f"field {name!r}: {shown} is not one of {', '.join(map(str, spec['choices']))}")
    return value


class Validate:
    """Handler: checks each record (a dict, e.g. a CSV row) field by field and returns a
    normalised copy holding exactly the declared fields, in the declared order (plus
    ``_line`` when the input has it).

    Params
        fields: field name -> rules (or just a type name):
            type: ``str`` (default), ``int``, ``float``, ``bool`` (true/false, yes/no,
                1/0, on/off, any case) or ``date`` (written as ISO ``YYYY-MM-DD``);
            required: default true; a missing, null or blank value is then an error;
                when false such a value becomes `default` (or null);
            default: the value of a missing optional field;
            min, max: bounds of an int or float;
            min_length, max_length, pattern (a regular expression the whole value
                must match), case (``lower``, ``upper`` or ``title``): for str;
            choices: the allowed values (after conversion and case);
            formats: for date, the accepted ``strptime`` formats (default
                ``["%Y-%m-%d"]``), tried in order.
        strip: strip whitespace around string values first (default true).
        rename: input name -> field name, applied before the checks (e.g. a CSV
            header ``"E-mail"`` -> ``email``).

    A record that breaks a rule is a ValueError starting ``line N:`` and naming the field
    and the value, so it goes to the dead-letter file and the run carries on. A mistake
    in `fields` itself (an unknown rule or type) is a ValueError at setup.
    """

    def setup(self, fields: Mapping[str, Any], strip: bool = True, rename: Mapping[str, str] | None = None) -> None:
        self.fields = _field_specs(fields)
        self.strip = bool(strip)
        self.rename = dict(rename or {})

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(event, dict):
            raise ValueError(f"validate: the event must be a dict, got {type(event).__name__}")
        where = f"line {event['_line']}" if "_line" in event else "record"
        record = {self.rename.get(k, k): v for k, v in event.items()}
        out: dict[str, Any] = {}
        for name, spec in self.fields.items():
            raw = record.get(name)
            if isinstance(raw, str) and self.strip:
                raw = raw.strip()
            if raw is None or raw == "":
                if spec.get("required", True):
                    raise ValueError(f"{where}: field {name!r} is required")
                out[name] = spec.get("default")
                continue
            try:
                out[name] = _convert(raw, spec, name)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        if "_line" in event:
            out["_line"] = event["_line"]
        return out


validate = Validate


def _dump_line(event: Any, stage: str) -> str:
    if not isinstance(event, dict):
        raise ValueError(f"{stage}: the event must be a dict, got {type(event).__name__}")
    try:
        return json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        line = f" (line {event['_line']})" if "_line" in event else ""
        raise ValueError(f"{stage}: the event{line} is not JSON-serialisable: {exc}") from None


def _order_key(value: Any) -> tuple[int, Any]:
    # Numbers before strings, so a file mixing both still sorts.
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (2, value)


class WriteJsonl:
    """Sink: writes each event (a dict) as one compact JSON object per line, keys sorted,
    non-ASCII kept as UTF-8. Parent directories are created.

    Params
        path: the output file.
        sort_by: a field name, or None (default). With None the lines are streamed to a
            temporary file, in arrival order, that replaces `path` at ``teardown()``. With
            a field, the lines are kept in memory and written atomically at ``teardown()``
            sorted by that field (numbers before strings; ties in line text order, so the
            output does not depend on arrival order); an event without the field, or with
            a value that is not a str or a finite number, is a ValueError.

    Events that are not dicts or hold values JSON cannot represent (bytes, NaN) are a
    ValueError.
    """

    def setup(self, path: str | os.PathLike[str], sort_by: str | None = None) -> None:
        self.path = Path(path)
        self.sort_by = sort_by
        self.count = 0
        self._rows: list[tuple[tuple[int, Any], str]] = []
        self._file: AtomicFile | None = None
        self._done = False
        if sort_by is None:
            self._file = AtomicFile(self.path, "w", encoding="utf-8", newline="\n")

    def handle(self, event: dict[str, Any]) -> None:
        line = _dump_line(event, "WriteJsonl")
        if self.sort_by is None:
            assert self._file is not None, "setup() was not called"
            self._file.write(line + "\n")
        else:
            if self.sort_by not in event:
                raise ValueError(f"WriteJsonl: the event has no {self.sort_by!r} field to sort by")
            value = event[self.sort_by]
            if not isinstance(value, str | int | float):  # NaN was refused by _dump_line
                raise ValueError(
                    f"WriteJsonl: sort field {self.sort_by!r} must be a str or number, got {_json_type(value)}"
                )
            self._rows.append((_order_key(value), line))
        self.count += 1

    def teardown(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is not None:
            self._file.commit()
        else:
            self._rows.sort()
            data = "".join(line + "\n" for _, line in self._rows)
            atomic_write(self.path, data.encode("utf-8"))
            self._rows = []


# --------------------------------------------------------------------------- CSV


class ReadCsv:
    """Source: the rows of a CSV file with a header line, streamed.

    Params: `path`, `delimiter` (default ``","``), `encoding` (default ``"utf-8-sig"``:
    UTF-8, with or without a byte-order mark).

    Yields ``{<column>: str, ..., "_line": int}`` per data row, where ``_line`` is the
    file line the row starts on (1 is the header). Blank lines are skipped. A row with too
    few values has the missing columns set to None; the values beyond the header of a row
    with too many are kept as a list under ``"_extra"``. ``total()`` is the number of data
    rows (one extra pass over the file, done once). An empty file yields nothing.
    """

    def setup(self, path: str | os.PathLike[str], delimiter: str = ",", encoding: str = "utf-8-sig") -> None:
        self.path = _existing_file("ReadCsv", path)
        self.delimiter = delimiter
        self.encoding = encoding
        self._total: int | None = None

    def _rows(self) -> Iterator[tuple[int, list[str]]]:
        """(start line, values) of each non-blank row, header included."""
        with self.path.open("r", encoding=self.encoding, newline="") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            end = 0  # the line the previous row ended on
            for values in reader:
                start, end = end + 1, reader.line_num
                if values:
                    yield start, values

    def total(self) -> int:
        if self._total is None:
            self._total = max(0, sum(1 for _ in self._rows()) - 1)
        return self._total

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = self._rows()
        header: list[str] | None = None
        for start, values in rows:
            if header is None:
                header = values
                continue
            record: dict[str, Any] = dict(zip(header, values, strict=False))
            for name in header[len(values) :]:
                record[name] = None
            if len(values) > len(header):
                record["_extra"] = values[len(header) :]
            record["_line"] = start
            yield record


def _csv_value(value: Any, field: str, event: dict[str, Any]) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    line = f" (line {event['_line']})" if "_line" in event else ""
    raise ValueError(f"WriteCsv: field {field!r}{line} must be a str, number, bool or null, got {type(value).__name__}")


class WriteCsv:
    """Sink: writes the `fields` columns of each event (a dict) as CSV rows, after a
    header line. Streamed to a temporary file that replaces `path` at ``teardown()``;
    parent directories are created.

    Params: `path`, `fields` (a list of column names, or one comma-separated str),
    `delimiter` (default ``","``). Fields missing from an event and None are written
    empty, booleans as ``true``/``false``; other event fields are ignored. A list, dict
    or bytes value in a column is a ValueError.
    """

    def setup(self, path: str | os.PathLike[str], fields: Sequence[str] | str, delimiter: str = ",") -> None:
        self.fields = _names(fields)
        if not self.fields:
            raise ValueError("WriteCsv: 'fields' names no column")
        self.path = Path(path)
        self.count = 0
        self._done = False
        self._file = AtomicFile(self.path, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file.file, delimiter=delimiter, lineterminator="\n")
        self._writer.writerow(self.fields)

    def handle(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict):
            raise ValueError(f"WriteCsv: the event must be a dict, got {type(event).__name__}")
        row = [_csv_value(event.get(f), f, event) for f in self.fields]
        self._writer.writerow(row)
        self.count += 1

    def teardown(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.commit()
