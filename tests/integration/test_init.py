"""`sedamp init`: the starter project it writes runs as is, and it never overwrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedamp.cli import templates
from tests.integration.util import run_sedamp, stage_of, summary_of

# COUNT and OUT set to "" make the topology use its defaults whatever the environment holds
DEFAULTS = {"COUNT": "", "OUT": ""}
SQUARES = "".join(f"{n} squared is {n * n}\n" for n in range(10))


def test_init_writes_a_project_that_runs_as_is(tmp_path: Path) -> None:
    r = run_sedamp("init", "shout", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"wrote {tmp_path}/shout_stages.py\n"
        f"wrote {tmp_path}/shout.yaml\n"
        f"run it:  sedamp run {tmp_path}/shout.yaml\n"
        f"output:  {tmp_path}/shout.txt\n"
    )
    assert (tmp_path / "shout.yaml").read_text() == templates.topology_yaml("shout")
    assert (tmp_path / "shout_stages.py").read_text() == templates.stages_py("shout")

    run = run_sedamp("run", "shout.yaml", "--json", cwd=tmp_path, env=DEFAULTS)
    assert run.returncode == 0, run.stderr
    summary = summary_of(run)
    assert summary["events"] == 10 and summary["failed"] == 0
    assert [stage_of(summary, s)["events_in"] for s in ("numbers", "square", "write")] == [10, 10, 10]
    assert (tmp_path / "shout.txt").read_text() == SQUARES


def test_the_project_runs_from_another_directory_with_variables(tmp_path: Path) -> None:
    project = tmp_path / "project"
    assert run_sedamp("init", "tally", "--dir", str(project)).returncode == 0
    out = tmp_path / "three.txt"
    r = run_sedamp(
        "run", str(project / "tally.yaml"), "--workdir", str(tmp_path / "work"), env={"COUNT": "3", "OUT": str(out)}
    )
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "0 squared is 0\n1 squared is 1\n2 squared is 4\n"
    assert not (project / "tally.txt").exists()


def test_the_project_writes_beside_itself_from_any_directory(tmp_path: Path) -> None:
    """The starter wrote beside the topology through ${TOPOLOGY_DIR} while the run
    directory went to the current one; now both follow the topology's folder."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    assert run_sedamp("init", "tally", "--dir", str(project)).returncode == 0
    elsewhere.mkdir()
    r = run_sedamp("run", str(project / "tally.yaml"), cwd=elsewhere, env=DEFAULTS)
    assert r.returncode == 0, r.stderr
    assert (project / "tally.txt").read_text() == SQUARES
    assert (project / ".sedamp" / "runs").is_dir()
    assert list(elsewhere.iterdir()) == []
    assert f"output: {project / 'tally.txt'}" in r.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run_sedamp("init", "shout", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "shout.yaml").write_text("mine\n")
    r = run_sedamp("init", "shout", "--dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == (
        f"error: {tmp_path}/shout.yaml and {tmp_path}/shout_stages.py already exist; nothing was written "
        "(choose another NAME or --dir, or remove the file)\n"
    )
    assert (tmp_path / "shout.yaml").read_text() == "mine\n"


def test_init_refuses_when_one_file_exists_and_writes_neither(tmp_path: Path) -> None:
    (tmp_path / "shout_stages.py").write_text("# mine\n")
    r = run_sedamp("init", "shout", "--dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == (
        f"error: {tmp_path}/shout_stages.py already exists; nothing was written "
        "(choose another NAME or --dir, or remove the file)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shout_stages.py"]
    assert (tmp_path / "shout_stages.py").read_text() == "# mine\n"


@pytest.mark.parametrize("name", ["9lives", "my-pipeline", "a.b", "caf\u00e9", "two words"])
def test_init_refuses_a_bad_name(tmp_path: Path, name: str) -> None:
    r = run_sedamp("init", name, "--dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == (
        f"error: invalid name {name!r}: it names a Python module ({name}_stages), so use a letter or _, "
        "then letters, digits and _ (e.g. my_pipeline)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_init_help_documents_exit_codes_and_an_example() -> None:
    r = run_sedamp("init", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0
    assert "Example: sedamp init shout --dir shout && sedamp run shout/shout.yaml" in r.stdout
    assert "Exit codes: 0 written; 1 a file could not be written; 2 invalid NAME," in r.stdout
