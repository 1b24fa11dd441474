"""stages.records: called directly, no runtime, no processes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sedamp.runtime.stage import check_ref
from stages.records import ReadCsv, ReadJsonl, Validate, WriteCsv, WriteJsonl, parse_json, transform

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def _tmp_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- ReadJsonl


def test_read_jsonl_numbers_lines_and_skips_blanks(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"a": 1}\n\n   \n{"b": 2}\r\n[3]\n{"c": "no newline at end"}')
    src = ReadJsonl()
    src.setup(path=str(p))
    assert src.total() == 4
    assert list(src) == [
        {"line": 1, "text": '{"a": 1}'},
        {"line": 4, "text": '{"b": 2}'},
        {"line": 5, "text": "[3]"},
        {"line": 6, "text": '{"c": "no newline at end"}'},
    ]
    assert list(src) == list(src)


def test_read_jsonl_streams(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_text("".join(f'{{"i": {i}}}\n' for i in range(1000)))
    src = ReadJsonl()
    src.setup(path=str(p))
    it = iter(src)
    assert next(it) == {"line": 1, "text": '{"i": 0}'}
    p.unlink()  # the open file keeps being read lazily (POSIX)
    assert sum(1 for _ in it) == 999


def test_read_jsonl_bom_and_bad_encoding(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"b": "\xff"}\n')
    src = ReadJsonl()
    src.setup(path=str(p))
    first, second = list(src)
    assert first == {"line": 1, "text": '{"a": 1}'}
    assert second["line"] == 2 and "decode_error" in second
    with pytest.raises(ValueError, match=r"^line 2: not valid utf-8"):
        parse_json(second)


def test_read_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absent.jsonl.*does not exist"):
        ReadJsonl().setup(path=str(tmp_path / "absent.jsonl"))


# ---------------------------------------------------------------- parse_json


def test_parse_json_returns_record_with_line() -> None:
    ev = {"line": 7, "text": '{"id": 3, "name": "x", "score": 1.5, "ok": true}'}
    assert parse_json(ev, required=["id", "name"], types={"id": "int", "ok": "bool"}) == {
        "id": 3,
        "name": "x",
        "score": 1.5,
        "ok": True,
        "_line": 7,
    }


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ('{"id": 1,', {}, r"^line 9: invalid JSON: .*column"),
        ("not json", {}, r"^line 9: invalid JSON"),
        ('{"v": NaN}', {}, r"^line 9: invalid JSON: NaN"),
        ("[1, 2]", {}, r"^line 9: expected a JSON object, got array"),
        ('"str"', {}, r"^line 9: expected a JSON object, got string"),
        ("null", {}, r"^line 9: expected a JSON object, got null"),
        ('{"id": 1}', {"required": ["id", "email"]}, r"^line 9: missing required field 'email'"),
        (
            '{"id": "1"}',
            {"types": {"id": "int"}},
            r"^line 9: field 'id' must be int, got string \"1\"",
        ),
        ('{"id": true}', {"types": {"id": "int"}}, r"^line 9: field 'id' must be int, got boolean"),
        ('{"id": 1.0}', {"types": {"id": "int"}}, r"^line 9: field 'id' must be int, got number"),
        ('{"n": null}', {"types": {"n": "str"}}, r"^line 9: field 'n' must be str, got null"),
        ('{"b": "yes"}', {"types": {"b": "bool"}}, r"^line 9: field 'b' must be bool"),
        ('{"x": "1"}', {"types": {"x": "number"}}, r"^line 9: field 'x' must be number"),
        ('{"x": false}', {"types": {"x": "float"}}, r"^line 9: field 'x' must be float"),
        ('{"x": 1}', {"types": {"x": "decimal"}}, r"unknown type 'decimal' for field 'x'"),
    ],
)
def test_parse_json_rejects(text: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_json({"line": 9, "text": text}, **params)


def test_parse_json_type_details() -> None:
    types = {"f": "float", "n": "number", "i": "int", "s": "str", "absent": "int"}
    rec = parse_json({"line": 1, "text": '{"f": 2, "n": 3, "i": 4, "s": ""}'}, types=types)
    assert rec == {"f": 2.0, "n": 3, "i": 4, "s": "", "_line": 1}
    assert isinstance(rec["f"], float) and isinstance(rec["n"], int)
    with pytest.raises(ValueError, match=r"got string \"x{36}\.\.\.$"):  # shortened
        parse_json({"line": 2, "text": json.dumps({"s": "x" * 100})}, types={"s": "int"})


def test_parse_json_required_as_string_and_bad_event() -> None:
    assert parse_json({"line": 1, "text": '{"a": 1, "b": 2}'}, required="a, b")["a"] == 1
    with pytest.raises(ValueError, match="missing required field 'b'"):
        parse_json({"line": 1, "text": '{"a": 1}'}, required="a,b")
    with pytest.raises(ValueError, match="^line 4: the event must be a dict with a str 'text'"):
        parse_json({"line": 4})


# ---------------------------------------------------------------- transform


def test_transform_all_steps_in_order() -> None:
    ev = {"Name": "Ada", "Email": "ADA@Example.org", "tmp": 1, "n": 5}
    out = transform(
        ev,
        rename={"Name": "name", "Email": "email", "missing": "x"},
        lower=["email", "n", "absent"],
        drop=["tmp", "absent"],
        add={"source": "test", "n": 6},
    )
    assert out == {"name": "Ada", "email": "ada@example.org", "n": 6, "source": "test"}
    assert list(out) == ["name", "email", "n", "source"]
    assert ev == {"Name": "Ada", "Email": "ADA@Example.org", "tmp": 1, "n": 5}  # untouched


def test_transform_defaults_swap_and_collision() -> None:
    ev = {"a": 1, "b": 2}
    assert transform(ev) == ev and transform(ev) is not ev
    assert transform(ev, rename={"a": "b", "b": "a"}) == {"b": 1, "a": 2}
    assert transform(ev, drop="a, b") == {}
    with pytest.raises(ValueError, match=r"two fields named 'b' \(line 3\)"):
        transform({"a": 1, "b": 2, "_line": 3}, rename={"a": "b"})
    with pytest.raises(ValueError, match="must be a dict"):
        transform([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------- WriteJsonl


def test_write_jsonl_streamed_in_arrival_order(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    sink = WriteJsonl()
    sink.setup(path=str(out))
    sink.handle({"b": 1, "a": "é"})
    sink.handle({"z": [1, {"y": None}]})
    assert not out.exists()  # only the temp file until teardown
    assert len(_tmp_names(out.parent)) == 1
    sink.teardown()
    sink.teardown()
    assert out.read_text(encoding="utf-8") == '{"a":"é","b":1}\n{"z":[1,{"y":null}]}\n'
    assert os.listdir(out.parent) == ["out.jsonl"]
    assert sink.count == 2


def test_write_jsonl_sorted(tmp_path: Path) -> None:
    out = tmp_path / "sorted.jsonl"
    sink = WriteJsonl()
    sink.setup(path=str(out), sort_by="id")
    events: list[dict[str, Any]] = [
        {"id": 3},
        {"id": "b"},
        {"id": 1, "v": 2},
        {"id": 2.5},
        {"id": 1, "v": 1},
    ]
    for ev in events:
        sink.handle(ev)
    assert not out.exists() and _tmp_names(tmp_path) == []
    sink.teardown()
    assert out.read_text().splitlines() == [
        '{"id":1,"v":1}',
        '{"id":1,"v":2}',
        '{"id":2.5}',
        '{"id":3}',
        '{"id":"b"}',
    ]
    assert os.listdir(tmp_path) == ["sorted.jsonl"]


def test_write_jsonl_errors(tmp_path: Path) -> None:
    sink = WriteJsonl()
    sink.setup(path=str(tmp_path / "o.jsonl"), sort_by="id")
    with pytest.raises(ValueError, match="no 'id' field"):
        sink.handle({"x": 1})
    with pytest.raises(ValueError, match="sort field 'id' must be a str or number, got null"):
        sink.handle({"id": None})
    with pytest.raises(ValueError, match=r"\(line 5\) is not JSON-serialisable"):
        sink.handle({"id": 1, "data": b"raw", "_line": 5})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        sink.handle({"id": float("nan")})
    with pytest.raises(ValueError, match="must be a dict"):
        sink.handle([1])  # type: ignore[arg-type]
    sink.teardown()
    assert (tmp_path / "o.jsonl").read_text() == ""


# ---------------------------------------------------------------- CSV


def test_read_csv_rows_lines_and_ragged(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_bytes(
        b'\xef\xbb\xbfid,name,city\r\n1,Ada,London\r\n\r\n2,"Multi\nline",Paris\r\n'
        b"3,Short\r\n4,Long,Rome,extra1,extra2\r\n"
    )
    src = ReadCsv()
    src.setup(path=str(p))
    assert src.total() == 4
    assert list(src) == [
        {"id": "1", "name": "Ada", "city": "London", "_line": 2},
        {"id": "2", "name": "Multi\nline", "city": "Paris", "_line": 4},
        {"id": "3", "name": "Short", "city": None, "_line": 6},
        {"id": "4", "name": "Long", "city": "Rome", "_extra": ["extra1", "extra2"], "_line": 7},
    ]


def test_read_csv_delimiter_empty_and_missing(tmp_path: Path) -> None:
    p = tmp_path / "in.tsv"
    p.write_text("a\tb\nx\ty\n")
    src = ReadCsv()
    src.setup(path=str(p), delimiter="\t")
    assert list(src) == [{"a": "x", "b": "y", "_line": 2}]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    e = ReadCsv()
    e.setup(path=str(empty))
    assert list(e) == [] and e.total() == 0
    with pytest.raises(ValueError, match="nope.csv.*does not exist"):
        ReadCsv().setup(path=str(tmp_path / "nope.csv"))


def test_write_csv_streamed_atomic(tmp_path: Path) -> None:
    out = tmp_path / "d" / "out.csv"
    sink = WriteCsv()
    sink.setup(path=str(out), fields=["id", "name", "ok"])
    sink.handle({"id": 1, "name": 'Ada, "the first"', "ok": True, "ignored": 1})
    sink.handle({"id": 2.5, "name": None})
    assert not out.exists()
    sink.teardown()
    sink.teardown()
    assert out.read_text() == 'id,name,ok\n1,"Ada, ""the first""",true\n2.5,,\n'
    assert os.listdir(out.parent) == ["out.csv"]
    assert sink.count == 2


def test_write_csv_errors_and_roundtrip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names no column"):
        WriteCsv().setup(path=str(tmp_path / "x.csv"), fields=[])
    sink = WriteCsv()
    sink.setup(path=str(tmp_path / "r.csv"), fields="a, b")
    with pytest.raises(ValueError, match=r"field 'b' \(line 3\) must be a str"):
        sink.handle({"a": 1, "b": [1], "_line": 3})
    sink.handle({"a": "x\ny", "b": "z"})
    sink.teardown()
    src = ReadCsv()
    src.setup(path=str(tmp_path / "r.csv"))
    assert list(src) == [{"a": "x\ny", "b": "z", "_line": 2}]


# ---------------------------------------------------------------- topologies/jsonl-etl.yaml


def _stage_params(topology: str) -> dict[str, dict[str, Any]]:
    """Each stage's params, with ${TOPOLOGY_DIR} and ${VAR:-default} substituted."""
    text = (TOPOLOGIES / topology).read_text()

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2) or ""
        return str(TOPOLOGIES) if name == "TOPOLOGY_DIR" else default

    spec = yaml.safe_load(re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", sub, text))
    return {name: dict(s.get("params") or {}) for name, s in spec["stages"].items()}


def test_jsonl_etl_topology_refs_and_sample_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TOPOLOGIES)  # where a run runs its stage code: relative paths resolve here
    spec = yaml.safe_load((TOPOLOGIES / "jsonl-etl.yaml").read_text())
    params = _stage_params("jsonl-etl.yaml")
    for name, stage in spec["stages"].items():
        kind = next(k for k in ("source", "handler", "sink") if k in stage)
        assert check_ref(kind, stage[kind], params[name]) is None, name

    src = ReadJsonl()
    src.setup(**params["read"])
    sink = WriteJsonl()
    sink.setup(**{**params["write"], "path": str(tmp_path / "clean.jsonl")})
    errors: dict[int, str] = {}
    for ev in src:
        try:
            record = parse_json(ev, **params["parse"])
        except ValueError as exc:
            errors[ev["line"]] = str(exc)
            continue
        sink.handle(transform(record, **params["clean"]))
    sink.teardown()

    assert src.total() == 40
    assert len(errors) == 6
    assert all(msg.startswith(f"line {n}: ") for n, msg in errors.items())
    reasons = sorted(re.sub(r"^line \d+: ", "", m) for m in errors.values())
    expected = [
        "expected a JSON object, got array",
        "field 'active' must be bool, got string \"yes\"",
        "field 'age' must be int, got number 41.5",
        "field 'id' must be int, got string \"23\"",
        "invalid JSON",
        "missing required field 'email'",
    ]
    assert [r[: len(e)] for r, e in zip(reasons, expected, strict=True)] == expected
    rows = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert len(rows) == 34
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    for r in rows:
        assert "name" not in r and "note" not in r and isinstance(r["full_name"], str)
        assert r["email"] == r["email"].lower() and r["country"] == r["country"].lower()
        assert r["source"] == "records.jsonl" and isinstance(r["_line"], int)


# --------------------------------------------------------------------------- Validate


def _validate(fields: dict[str, Any], **kw: Any) -> Validate:
    v = Validate()
    v.setup(fields=fields, **kw)
    return v


def test_validate_converts_and_normalises() -> None:
    v = _validate(
        {
            "id": {"type": "int", "min": 1},
            "name": {"type": "str", "case": "title"},
            "ok": "bool",
            "when": {"type": "date", "formats": ["%Y-%m-%d", "%d/%m/%Y"]},
            "score": {"type": "float", "required": False, "default": 0.0},
        },
        rename={"Name": "name"},
    )
    out = v.handle({"id": " 7 ", "Name": "  ada LOVELACE ", "ok": "Yes", "when": "10/07/1842", "score": "", "_line": 3})
    assert out == {"id": 7, "name": "Ada Lovelace", "ok": True, "when": "1842-07-10", "score": 0.0, "_line": 3}
    assert list(out) == ["id", "name", "ok", "when", "score", "_line"]  # declared order, extras dropped


@pytest.mark.parametrize(
    ("fields", "record", "message"),
    [
        ({"n": "int"}, {"n": "1.5"}, "line 4: field 'n': '1.5' is not an int"),
        ({"n": "int"}, {"n": "1_000"}, "line 4: field 'n': '1_000' is not an int"),
        ({"n": "int"}, {"n": True}, "line 4: field 'n': True is not an int"),
        ({"n": "int"}, {"n": 3.7}, "line 4: field 'n': 3.7 is not an int"),
        ({"n": "int"}, {"n": float("inf")}, "line 4: field 'n': inf is not an int"),
        ({"n": "float"}, {"n": "nan"}, "line 4: field 'n': 'nan' is not a finite number"),
        ({"n": {"type": "int", "max": 9}}, {"n": "10"}, "line 4: field 'n': 10 is above the maximum 9"),
        ({"n": {"type": "float", "min": 0}}, {"n": "-1"}, "line 4: field 'n': -1.0 is below the minimum 0"),
        ({"s": "str"}, {}, "line 4: field 's' is required"),
        ({"s": "str"}, {"s": "   "}, "line 4: field 's' is required"),
        ({"s": {"pattern": "[a-z]+"}}, {"s": "ab1"}, "line 4: field 's': 'ab1' does not match '[a-z]+'"),
        ({"s": {"choices": ["a", "b"]}}, {"s": "c"}, "line 4: field 's': 'c' is not one of a, b"),
        ({"s": {"max_length": 2}}, {"s": "abc"}, "line 4: field 's': 'abc' is longer than 2"),
        ({"b": "bool"}, {"b": "maybe"}, "line 4: field 'b': 'maybe' is not a boolean (true/false, yes/no, 1/0)"),
        ({"d": "date"}, {"d": "2024-02-30"}, "line 4: field 'd': '2024-02-30' is not a date (%Y-%m-%d)"),
    ],
)
def test_validate_rejects_with_the_line_field_and_value(
    fields: dict[str, Any], record: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as exc:
        _validate(fields).handle({**record, "_line": 4})
    assert str(exc.value) == message


def test_validate_keeps_none_for_optional_and_strip_can_be_off() -> None:
    v = _validate({"a": {"type": "int", "required": False}, "s": "str"}, strip=False)
    assert v.handle({"s": " x "}) == {"a": None, "s": " x "}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "validate: 'fields' must map each field name to its rules"),
        ({"a": {"type": "decimal"}}, "validate: field 'a': type must be one of str, int, float, bool, date"),
        ({"a": {"typo": 1}}, "validate: field 'a': unknown rule(s) typo"),
        ({"a": {"case": "snake"}}, "validate: field 'a': case must be lower, upper or title"),
        ({"a": {"type": "int", "min": "1"}}, "validate: field 'a': min must be a number, got '1'"),
        ({"a": {"min_length": 1.5}}, "validate: field 'a': min_length must be an integer, got 1.5"),
        ({"a": {"required": "false"}}, "validate: field 'a': required must be true or false, got 'false'"),
        ({"a": {"choices": "ab"}}, "validate: field 'a': choices must be a list, got 'ab'"),
        (
            {"a": {"type": "date", "formats": 5}},
            "validate: field 'a': formats must be a strptime format or a list of them, got 5",
        ),
        ({"a": 5}, "validate: field 'a': give a type name or a mapping of rules, got 5"),
    ],
)
def test_validate_refuses_bad_rules_at_setup(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        _validate(fields)
    assert str(exc.value) == message


def test_validate_names_the_field_of_a_bad_pattern() -> None:
    with pytest.raises(ValueError, match=r"^validate: field 'a': pattern '\[a-' is not a regular expression: "):
        _validate({"a": {"pattern": "[a-"}})


def test_validate_is_a_valid_stage_ref() -> None:
    assert check_ref("handler", "stages.records:Validate", {"fields": {"a": "int"}}) is None
