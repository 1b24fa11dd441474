"""Hints that point the right way, through the real CLI: a handler module that exists
but fails to import says so, with its error and line; a handler that turns dict events
into lists (one event each for the next stage) is warned of once."""

from __future__ import annotations

from pathlib import Path

from tests.integration.util import TESTSTAGES, chain_yaml, run_sedamp


def test_a_module_that_fails_to_import_says_so_and_why(tmp_path: Path) -> None:
    (tmp_path / "mystages").mkdir()
    (tmp_path / "mystages" / "__init__.py").write_text("")
    (tmp_path / "mystages" / "foo.py").write_text(
        '"""Handlers."""\nimport json\nimport no_such_package_xyz\n\n\ndef f(event):\n    return event\n'
    )
    # the other stages beside it too: the run's directory is the topology's, not the repository
    (tmp_path / "mystages" / "ok.py").write_text(
        '"""Stages that import."""\n\n\ndef numbers(count):\n    return range(count)\n\n\ndef keep(event):\n    pass\n'
    )
    topo = tmp_path / "t.yaml"
    topo.write_text(
        "name: t\nstages:\n  src: {source: mystages.ok:numbers, params: {count: 3}, to: mid}\n"
        "  mid: {handler: mystages.foo:f, to: out}\n"
        "  out: {sink: mystages.ok:keep}\n"
    )
    for command in (["validate"], ["run", "--workdir", str(tmp_path / "w")]):
        r = run_sedamp(*command, str(topo), cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, r.stderr
        assert "stages.mid.handler: mystages/foo.py:3 failed to import: No module named 'no_such_package_xyz'" in errors[0]
        assert "install 'no_such_package_xyz'" in errors[0]
        assert "make sure" not in r.stderr and "Traceback" not in r.stderr


def test_a_handler_returning_lists_for_dicts_is_warned_of_once(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    listy = tmp_path / "listy.yaml"
    listy.write_text(chain_yaml(out, f"    handler: {TESTSTAGES}:as_list\n    workers: 2", sink="Append", count=3000))
    r = run_sedamp("run", str(listy), "--workdir", str(tmp_path / "w"), "--json")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "warning:" in line]
    assert warned == [
        "sedamp: warning: stage 'mid' returned a list for a dict event: the next stage gets it as ONE event "
        "(a list); to emit several events, yield them or return sedamp.Many([...])"
    ], r.stderr
    quiet = run_sedamp("run", str(listy), "--workdir", str(tmp_path / "w"), "-q")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr  # -q: nothing but errors
    dicts = tmp_path / "dicts.yaml"
    dicts.write_text(chain_yaml(out, f"    handler: {TESTSTAGES}:with_pid", sink="Append", count=300))
    r = run_sedamp("run", str(dicts), "--workdir", str(tmp_path / "w"), "--json")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
