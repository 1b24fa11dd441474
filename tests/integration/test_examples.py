"""Every example topology in topologies/ runs end to end through the real runtime and
produces exactly the output the same stage functions give when called serially."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sedamp.runtime.deadletter import read_dead_letters
from stages import burn, records, text
from stages.files import ListFiles, read_text
from tests.integration.util import TOPOLOGIES, run_sedamp, stage_of, summary_of


def test_every_example_is_covered() -> None:
    tested = {
        "wordcount.yaml",
        "jsonl-etl.yaml",
        "csv-clean.yaml",
        "burn.yaml",
        "tiny.yaml",
        "tiny-domain.yaml",
        "shift.yaml",
        "staircase.yaml",
        "http-service.yaml",  # tests/integration/test_http.py::test_the_http_service_example
        "thumbnails.yaml",  # tests/integration/test_thumbnails.py::test_thumbnails_example
        "photos.yaml",  # tests/integration/test_photos.py
    }
    present = {p.name for p in TOPOLOGIES.glob("*.yaml")}
    assert present <= tested, f"untested example topologies: {sorted(present - tested)}"


def serial_wordcount() -> Counter[str]:
    counts: Counter[str] = Counter()
    src = ListFiles()
    src.setup(root=str(TOPOLOGIES / "data" / "texts"), pattern="*.txt")
    for ev in src:
        for w in text.tokenize(read_text(ev)):
            counts[w["word"]] += 1
    return counts


def test_wordcount(workdir: Path) -> None:
    out = workdir / "counts.tsv"
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "wordcount.yaml"), "--workdir", str(workdir), "--json", env={"OUT": str(out)}
    )
    assert proc.returncode == 0, proc.stderr
    expected = serial_wordcount()
    lines = out.read_text().splitlines()
    got = {w: int(n) for w, n in (line.split("\t") for line in lines)}
    assert got == dict(expected)
    assert len(lines) == len(expected)  # each word once: key routing kept equal words together
    order = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [line.split("\t")[0] for line in lines] == [w for w, _ in order]
    s = summary_of(proc)
    assert stage_of(s, "tokenize")["events_out"] == sum(expected.values())
    assert stage_of(s, "write")["events_in"] == len(expected)
    assert s["failed"] == 0 and s["exit_code"] == 0


def test_jsonl_etl(workdir: Path) -> None:
    out = workdir / "clean.jsonl"
    src = TOPOLOGIES / "data" / "records.jsonl"
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "jsonl-etl.yaml"), "--workdir", str(workdir), "--json", env={"OUT": str(out)}
    )
    # bad records go to the dead-letter file and make the exit code 1
    assert proc.returncode == 1, proc.stderr
    s = summary_of(proc)

    good, bad_lines = [], []
    reader = records.ReadJsonl()
    reader.setup(path=str(src))
    params = {
        "required": ["id", "name", "email"],
        "types": {
            "id": "int",
            "name": "str",
            "email": "str",
            "age": "int",
            "score": "number",
            "active": "bool",
            "country": "str",
        },
    }
    for ev in reader:
        try:
            rec = records.parse_json(ev, **params)
        except ValueError:
            bad_lines.append(ev["line"])
            continue
        good.append(
            records.transform(
                rec,
                rename={"name": "full_name"},
                lower=["email", "country"],
                drop=["note"],
                add={"source": "records.jsonl"},
            )
        )
    good.sort(key=lambda r: r["id"])
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == good
    assert len(got) == 34 and len(bad_lines) == 6

    dead = read_dead_letters(s["dead_letters"])
    assert s["failed"] == 6
    assert sorted(d["event"]["line"] for d in dead) == sorted(bad_lines)
    for d in dead:
        assert d["stage"] == "parse"
        assert d["error_type"] == "ValueError"
        assert str(d["event"]["line"]) in d["message"]
        assert "Traceback" in d["traceback"]
        assert d["event_id"] is not None


def run_example(name: str, workdir: Path, *extra: str, **env: str):  # type: ignore[no-untyped-def]
    """`sedamp run topologies/NAME --workdir W --json` with `env` set; must exit 0."""
    proc = run_sedamp("run", str(TOPOLOGIES / name), *extra, "--workdir", str(workdir), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_burn(workdir: Path) -> None:
    out = workdir / "result.json"
    n = 120
    proc = run_example("burn.yaml", workdir, OUT=str(out), COUNT=str(n))
    result = json.loads(out.read_text())
    assert result == burn.expected_checksum(n, [9600, 38400, 4800])
    s = summary_of(proc)
    assert s["events"] == n
    assert [stage_of(s, x)["events_in"] for x in ("a", "b", "c", "collect")] == [n] * 4


@pytest.mark.parametrize("name", ["tiny.yaml", "tiny-domain.yaml"])
def test_tiny(workdir: Path, name: str) -> None:
    out = workdir / "tiny.json"
    n = 20_000
    run_example(name, workdir, OUT=str(out), COUNT=str(n))
    result = json.loads(out.read_text())
    assert result["count"] == n
    assert result["checksum"] == sum(range(n))


def test_shift(workdir: Path) -> None:
    """The controller's benchmark topology: same CPU work per event before and after the
    shift, so the checksum is the plain pipeline's."""
    out = workdir / "shift.json"
    n = 200
    run_example("shift.yaml", workdir, OUT=str(out), COUNT=str(n), SHIFT_AT=str(n // 2))
    assert json.loads(out.read_text()) == burn.expected_checksum(n, [9600, 38400, 4800])


def test_staircase(workdir: Path) -> None:
    out = workdir / "stair.json"
    run_example("staircase.yaml", workdir, "--set", "arrivals.params.steps=[[200, 0.5], [400, 0.5]]", OUT=str(out))
    n = 100 + 200
    got = json.loads(out.read_text())
    assert got["count"] == n
    assert got == burn.expected_checksum(n, [38400]) | {"count": n}


def test_csv_clean(workdir: Path) -> None:
    """Every row checked and normalised; the 5 bad rows dead-lettered with line and field."""
    out = workdir / "clean.jsonl"
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "csv-clean.yaml"), "--workdir", str(workdir), "--json", env={"OUT": str(out)}
    )
    assert proc.returncode == 1, proc.stderr  # some rows failed
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == [1, 2, 3, 4, 5, 10, 11]
    assert got[0] == {
        "_line": 2, "id": 1, "name": "Ada Lovelace", "email": "ada@example.org", "age": 36, "country": "GB",
        "joined": "1842-07-10", "active": True, "score": 98.5,
    }  # fmt: skip
    assert got[3]["score"] is None and got[3]["active"] is False  # optional and empty; "no"
    assert got[4]["age"] is None and got[4]["active"] is True  # optional and empty; "Y"
    assert got[5]["name"] == "Hopper, Grace (again)"  # a quoted comma
    letters = read_dead_letters(next(workdir.glob("runs/*/dead-letters.jsonl")))
    assert sorted(d["message"] for d in letters) == [
        "line 10: field 'active': 'maybe' is not a boolean (true/false, yes/no, 1/0)",
        "line 13: field 'score': 1000.0 is above the maximum 100",
        "line 7: field 'age': 'old' is not an int",
        "line 8: field 'joined': '1957-13-01' is not a date (%Y-%m-%d or %d/%m/%Y)",
        "line 9: field 'email' is required",
    ]
    s = summary_of(proc)
    assert stage_of(s, "check")["failed"] == 5 and stage_of(s, "write")["events_in"] == 7
