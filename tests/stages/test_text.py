"""stages.text: called directly, no runtime, no processes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sedamp import Many
from sedamp.runtime.stage import check_ref, outputs_of
from stages.files import ListFiles, list_files, read_text
from stages.text import Count, WriteCounts, tokenize

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"

# ---------------------------------------------------------------- tokenize


def _words(text: str, **params: object) -> list[str]:
    return [e["word"] for e in tokenize({"path": "p", "text": text}, **params)]  # type: ignore[arg-type]


def test_tokenize_yields_word_events() -> None:
    result = tokenize({"path": "x.txt", "text": "Hello, world! Hello."})
    assert isinstance(result, Iterator)
    assert list(result) == [{"word": "hello"}, {"word": "world"}, {"word": "hello"}]


def test_tokenize_apostrophes_digits_and_case() -> None:
    text = "'Tis the night--Don't stop 'til 1999's END'' _under_score café"
    assert _words(text) == [
        "tis",
        "the",
        "night",
        "don't",
        "stop",
        "til",
        "1999's",
        "end",
        "under",
        "score",
        "café",
    ]
    assert _words("Don't SHOUT", lower=False) == ["Don't", "SHOUT"]


def test_tokenize_min_length_and_empty() -> None:
    assert _words("a an the ' '' x", min_length=2) == ["an", "the"]
    assert _words("   \n\t ...  ") == []
    assert _words("") == []


def test_tokenize_bad_event() -> None:
    with pytest.raises(ValueError, match="'bad.txt'.*str 'text'"):
        tokenize({"path": "bad.txt", "text": b"bytes"})
    with pytest.raises(ValueError, match="str 'text'"):
        tokenize({"path": "p"})


# ---------------------------------------------------------------- Count


def test_count_emits_sorted_counts_at_finish() -> None:
    c = Count()
    c.setup()
    for w in ["pear", "apple", "pear", "fig", "pear", "apple"]:
        assert c.handle({"word": w}) is None  # type: ignore[func-returns-value]
    result = c.finish()
    assert isinstance(result, Many)
    assert result.events == [
        {"word": "apple", "count": 2},
        {"word": "fig", "count": 1},
        {"word": "pear", "count": 3},
    ]


def test_count_other_field_and_mixed_types() -> None:
    c = Count()
    c.setup(field="tag")
    for v in ["b", 2, "a", 2, 1.5]:
        c.handle({"tag": v})
    assert outputs_of(c.finish()) == [
        {"tag": 1.5, "count": 1},
        {"tag": 2, "count": 2},
        {"tag": "a", "count": 1},
        {"tag": "b", "count": 1},
    ]


def test_count_empty_and_errors() -> None:
    c = Count()
    c.setup()
    assert outputs_of(c.finish()) == []
    with pytest.raises(ValueError, match="no 'word' field"):
        c.handle({"text": "x"})
    with pytest.raises(ValueError, match="'word' must be a str"):
        c.handle({"word": ["a", "list"]})


# ---------------------------------------------------------------- WriteCounts


def test_write_counts_sorted_tsv_atomic(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "counts.tsv"
    sink = WriteCounts()
    sink.setup(out=str(out))
    for w, n in [("b", 2), ("a", 2), ("c", 5), ("d", 1)]:
        sink.handle({"word": w, "count": n})
    assert not out.exists()  # nothing before teardown
    sink.teardown()
    sink.teardown()  # idempotent
    assert out.read_text() == "c\t5\na\t2\nb\t2\nd\t1\n"
    assert os.listdir(out.parent) == ["counts.tsv"]


def test_write_counts_adds_duplicates_and_writes_empty(tmp_path: Path) -> None:
    sink = WriteCounts()
    sink.setup(out=str(tmp_path / "c.tsv"))
    sink.handle({"word": "x", "count": 1})
    sink.handle({"word": "x", "count": 2})
    sink.teardown()
    assert (tmp_path / "c.tsv").read_text() == "x\t3\n"

    empty = WriteCounts()
    empty.setup(out=str(tmp_path / "e.tsv"))
    empty.teardown()
    assert (tmp_path / "e.tsv").read_text() == ""


def test_write_counts_errors(tmp_path: Path) -> None:
    sink = WriteCounts()
    sink.setup(out=str(tmp_path / "c.tsv"))
    with pytest.raises(ValueError, match="'word' and 'count'"):
        sink.handle({"word": "x"})
    with pytest.raises(ValueError, match="non-negative int"):
        sink.handle({"word": "x", "count": "3"})
    with pytest.raises(ValueError, match="non-negative int"):
        sink.handle({"word": "x", "count": True})
    with pytest.raises(ValueError, match="tab or newline"):
        sink.handle({"word": "a\tb", "count": 1})


# ---------------------------------------------------------------- the whole chain, serially


def test_wordcount_chain_serially(tmp_path: Path) -> None:
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "one.txt").write_text("The cat and the hat.")
    (texts / "two.txt").write_text("A cat? The CAT!")
    (texts / "skip.md").write_text("the the the")
    counters = [Count(), Count()]  # two workers, routed by word
    for c in counters:
        c.setup()
    for f in list_files(root=texts, pattern="*.txt"):
        for ev in tokenize(read_text(f)):
            counters[len(ev["word"]) % 2].handle(ev)
    sink = WriteCounts()
    sink.setup(out=str(tmp_path / "counts.tsv"))
    for c in counters:
        for ev in outputs_of(c.finish()):
            sink.handle(ev)
    sink.teardown()
    assert (tmp_path / "counts.tsv").read_text() == "cat\t3\nthe\t3\na\t1\nand\t1\nhat\t1\n"


# ---------------------------------------------------------------- topologies/wordcount.yaml


def _stage_params(topology: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each stage's params, with ${TOPOLOGY_DIR} and ${VAR:-default} substituted."""
    text = (TOPOLOGIES / topology).read_text()

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2) or ""
        return str(TOPOLOGIES) if name == "TOPOLOGY_DIR" else env.get(name, default)

    spec = yaml.safe_load(re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", sub, text))
    return {name: dict(s.get("params") or {}) for name, s in spec["stages"].items()}


def test_wordcount_topology_on_its_sample_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TOPOLOGIES)  # where a run runs its stage code: relative paths resolve here
    spec = yaml.safe_load((TOPOLOGIES / "wordcount.yaml").read_text())
    out = tmp_path / "counts.tsv"
    params = _stage_params("wordcount.yaml", {"OUT": str(out)})
    for name, stage in spec["stages"].items():
        kind = next(k for k in ("source", "handler", "sink") if k in stage)
        assert check_ref(kind, stage[kind], params[name]) is None, name
    assert spec["stages"]["tokenize"]["to"] == {"stage": "count", "key": "word"}

    files = ListFiles()
    files.setup(**params["files"])
    assert files.total() >= 3
    count = Count()
    count.setup(**params["count"])
    n_words = 0
    for f in files:
        for ev in tokenize(read_text(f, **params["read"]), **params["tokenize"]):
            count.handle(ev)
            n_words += 1
    sink = WriteCounts()
    sink.setup(**params["write"])
    for ev in outputs_of(count.finish()):
        sink.handle(ev)
    sink.teardown()
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert lines[0][0] == "the"  # the most frequent word of any English text
    assert sum(int(n) for _, n in lines) == n_words
    keys = [(-int(n), w) for w, n in lines]
    assert keys == sorted(keys)
