"""A stage's own check of its param values (`check_params`), run by validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sedamp.errors import TopologyError
from sedamp.spec import parse_topology


def topology(tmp_path: Path, module: str, code: str, params: str) -> str:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(code))
    return f"""
stages:
  src:
    source: {module}:numbers
    to: mid
  mid:
    handler: {module}:Work
    params: {params}
    to: out
  out:
    sink: {module}:save
"""


STAGES = """
def numbers():
    return [1, 2, 3]


def save(event):
    pass


class Work:
    def setup(self, size=1, fit="contain"):
        pass

    def handle(self, event):
        return event

    @staticmethod
    def check_params(**params):
        {check}
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, file="t.yaml", base_dir=tmp_path, env={})
    return [str(p) for p in info.value.problems]


def test_each_refused_value_is_a_problem_at_its_param(tmp_path: Path) -> None:
    check = 'return {k: f"{k} is wrong: {v!r}" for k, v in params.items() if v == "bad"}'
    text = topology(tmp_path, "work_each", STAGES.format(check=check), "{size: bad, fit: bad}")
    assert problems(tmp_path, text) == [
        "t.yaml:8: stages.mid.params.size: size is wrong: 'bad' (see what its setup() accepts)",
        "t.yaml:8: stages.mid.params.fit: fit is wrong: 'bad' (see what its setup() accepts)",
    ]
    ok = topology(tmp_path, "work_ok", STAGES.format(check=check), "{size: 2}")
    assert parse_topology(ok, file="t.yaml", base_dir=tmp_path, env={}).stages["mid"].params == {"size": 2}


def test_a_check_that_raises_or_answers_nonsense_is_a_problem_of_the_params(tmp_path: Path) -> None:
    text = topology(tmp_path, "work_raises", STAGES.format(check="raise KeyError('size')"), "{size: 2}")
    fix = " (fix check_params in the stage's module)"
    assert problems(tmp_path, text) == [
        "t.yaml:8: stages.mid.params: work_raises:Work: check_params raised KeyError: 'size'" + fix
    ]
    text = topology(tmp_path, "work_list", STAGES.format(check="return ['size']"), "{size: 2}")
    assert problems(tmp_path, text) == [
        "t.yaml:8: stages.mid.params: work_list:Work: check_params returned a list, not a dict of param problems" + fix
    ]


def test_a_stage_without_a_check_is_not_asked(tmp_path: Path) -> None:
    code = STAGES.format(check="pass").replace("    @staticmethod\n    def check_params(**params):\n        pass\n", "")
    text = topology(tmp_path, "work_none", code, "{size: 2}")
    assert parse_topology(text, file="t.yaml", base_dir=tmp_path, env={}).stages["mid"].params == {"size": 2}
