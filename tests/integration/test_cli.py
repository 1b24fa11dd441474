"""The command line, run as a user runs it (a real subprocess for each command)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.util import REPO, TESTSTAGES, TOPOLOGIES, run_sedamp, sedamp_cmd, summary_of

BAD = sorted((REPO / "tests" / "data" / "bad").glob("*.yaml"))


def expectation(path: Path) -> tuple[int, str]:
    m = re.match(r"# expect: (\d+): (.*)", path.read_text().splitlines()[0])
    assert m, f"{path} has no '# expect:' first line"
    return int(m.group(1)), m.group(2)


def test_bad_corpus_is_large_enough() -> None:
    assert len(BAD) >= 30


@pytest.mark.slow  # one `sedamp validate` process per file of the corpus: ~25 s
def test_every_bad_topology_fails_validation_with_one_precise_line() -> None:
    """All files in one process (the corpus is large); each must exit 2 with its line."""
    script = (
        "import sys, subprocess\n"
        "for p in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-m', 'sedamp', 'validate', p], capture_output=True, text=True)\n"
        "    print(f'@@{p}@@{r.returncode}@@{r.stderr!r}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, BAD)],
        cwd=REPO / "tests" / "data" / "bad",
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    results = {}
    for line in out.splitlines():
        _, p, code, err = line.split("@@", 3)
        results[p] = (int(code), eval(err))  # repr of a str we printed ourselves
    for path in BAD:
        code, err = results[str(path)]
        line, fragment = expectation(path)
        assert code == 2, f"{path.name}: exit {code}\n{err}"
        assert "Traceback" not in err, f"{path.name}: traceback printed\n{err}"
        errors = [x for x in err.splitlines() if x.startswith("error: ")]
        assert len(errors) == 1, f"{path.name}: expected one problem, got\n{err}"
        assert errors[0].startswith(f"error: {path}:{line}:"), f"{path.name}: {errors[0]}"
        assert fragment in errors[0], f"{path.name}: {fragment!r} not in {errors[0]!r}"


@pytest.mark.parametrize("name", ["wordcount.yaml", "jsonl-etl.yaml", "burn.yaml"])
def test_validate_examples(name: str) -> None:
    r = run_sedamp("validate", str(TOPOLOGIES / name))
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_validate_with_override_error_names_the_override() -> None:
    r = run_sedamp("validate", str(TOPOLOGIES / "wordcount.yaml"), "--set", "count.workers=zero")
    assert r.returncode == 2
    assert "--set" in r.stderr and "count.workers" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_file() -> None:
    r = run_sedamp("run", "no/such/topology.yaml")
    assert r.returncode == 2
    assert "no/such/topology.yaml" in r.stderr and "Traceback" not in r.stderr


def test_graph_formats() -> None:
    r = run_sedamp("graph", str(TOPOLOGIES / "wordcount.yaml"), "--format", "mermaid")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flowchart LR") and "key: word" in r.stdout
    r = run_sedamp("graph", str(TOPOLOGIES / "wordcount.yaml"), "--format", "dot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("digraph") and "->" in r.stdout


COMMANDS = [
    "run", "validate", "graph", "status", "scale", "top", "keys", "schema", "init", "report", "simulate", "trace", "clean",
]  # fmt: skip
WIDE = {"COLUMNS": "200"}  # one help line per option row: the checks below read rows


def test_every_command_is_listed_here() -> None:
    from sedamp.cli import COMMANDS as ALL

    assert list(ALL) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_and_the_exit_codes(command: str) -> None:
    r = run_sedamp(command, "--help", env=WIDE)
    assert r.returncode == 0
    assert "Example: sedamp " + command in r.stdout
    assert "Exit codes: 0 " in r.stdout, r.stdout


def test_top_level_help_has_an_example_and_the_exit_codes() -> None:
    r = run_sedamp("--help", env=WIDE)
    assert r.returncode == 0
    assert "Example: sedamp run topologies/wordcount.yaml" in r.stdout
    assert "Exit codes: 0 " in r.stdout and "130 interrupted" in r.stdout


def test_version() -> None:
    from sedamp import __version__

    r = run_sedamp("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"sedamp {__version__}\n", "")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_type_labels_on_options(command: str) -> None:
    """typer labels an option with its Python type (``-v <int>`` on a counted flag,
    ``--set <str>`` on a repeatable one); each option names what it takes instead."""
    r = run_sedamp(command, "--help", env=WIDE)
    assert r.returncode == 0
    options = r.stdout[r.stdout.index("Options"):]
    assert not re.search(r"<(int|float|str|bool|path|list|text|integer)\b", options), options
    if command == "run":
        assert re.search(r"--verbose\s+-v\s+More log lines", options), options
        assert "--set" in options and "K=V" in options


def test_the_scale_example_names_a_stage_that_can_be_scaled() -> None:
    from sedamp.api import load

    r = run_sedamp("scale", "--help", env=WIDE)
    m = re.search(r"Example: sedamp scale (\w+)=(\d+) (\S+)", r.stdout)
    assert m, r.stdout
    stage, n, path = m.group(1), int(m.group(2)), m.group(3)
    top = load(REPO / path, check_handlers=False)
    workers = top.stages[stage].workers
    assert workers.min != workers.max and workers.min <= n  # a pool the controller sizes


def test_python_m_and_console_script_agree() -> None:
    exe = Path(sys.executable).parent / "sedamp"
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    a = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30)
    b = run_sedamp("--help")
    assert a.returncode == b.returncode == 0
    assert "run" in a.stdout and "validate" in a.stdout


def test_run_prints_summary_table(tmp_path: Path) -> None:
    out = tmp_path / "counts.tsv"
    r = run_sedamp("run", str(TOPOLOGIES / "wordcount.yaml"), "--workdir", str(tmp_path), env={"OUT": str(out)})
    assert r.returncode == 0, r.stderr
    assert "events/s" in r.stdout and "tokenize" in r.stdout
    assert out.exists()


def test_show_completion_prints_a_bash_completion_script() -> None:
    import os

    # the console script: the script names the program it completes as it was invoked
    exe = Path(sys.executable).parent / "sedamp"
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    env = {**os.environ, "SHELL": "/bin/bash"}
    r = subprocess.run([str(exe), "--show-completion", "bash"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "_SEDAMP_COMPLETE=complete_bash" in r.stdout
    assert "complete -o default -F _sedamp_completion sedamp" in r.stdout
    # the script calls sedamp back with these variables: command names complete
    env.update({"_SEDAMP_COMPLETE": "complete_bash", "COMP_WORDS": "sedamp sch", "COMP_CWORD": "1"})
    r = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, "schema\n")


def test_the_cli_leaves_optional_and_heavy_modules_unimported() -> None:
    """`sedamp run` starts every command module: plotting, Prometheus, the JSON Schema
    and Ray are imported only by the command or flag that uses them."""
    code = (
        "import sys, sedamp.cli\n"
        "heavy = ('ray', 'matplotlib', 'prometheus_client', 'sedamp.spec.schema', 'sedamp.observe.report',\n"
        "         'sedamp.observe.prometheus', 'sedamp.executor.ray')\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "[]\n", "")


def test_sedamp_run_loads_only_its_own_command() -> None:
    """The app built for `sedamp run` imports no other command's module, and no rich
    (the progress bar imports it when it draws on a terminal)."""
    code = (
        "import sys\n"
        "from sedamp.cli import command_of\n"
        "from sedamp.cli.app import make_app\n"
        "assert command_of(['run', 'x.yaml', '-q']) == 'run' and command_of(['--help']) is None\n"
        "app = make_app('run')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('sedamp.cli.', 'rich'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "['sedamp.cli._common', 'sedamp.cli.app', 'sedamp.cli.run', 'sedamp.cli.table']\n"


def test_a_run_whose_output_goes_to_pipes_never_imports_rich(tmp_path: Path) -> None:
    """Its progress lines and its summary table are plain text: importing rich and laying
    the table out with it took a tenth of a one-event job."""
    env = {"COUNT": "3", "OUT": str(tmp_path / "result.json")}
    r = run_sedamp("run", str(TOPOLOGIES / "tiny.yaml"), "--workdir", str(tmp_path), "--progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "sedamp: progress" in r.stderr and "┃ stage" in r.stdout  # both shown
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *sedamp_cmd("run", str(TOPOLOGIES / "tiny.yaml"))[1:],
         "--workdir", str(tmp_path), "--progress"],
        env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert traced.returncode == 0, traced.stderr
    imported = [line.split("|")[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")]
    assert "sedamp.cli.run" in imported  # the trace is there
    assert [m for m in imported if m == "rich" or m.startswith("rich.")] == []


def test_sedamp_run_starts_its_launcher_before_the_heavy_imports() -> None:
    """`sedamp run` starts the launcher of its processes first thing, so that it boots
    while the command line imports typer, the topology and the controller: the modules
    the command line needs for that import none of them (nor ZeroMQ or psutil)."""
    code = (
        "import sys\n"
        "import sedamp.cli, sedamp.executor.local\n"
        "heavy = ('typer', 'zmq', 'psutil', 'yaml', 'dataclasses', 'sedamp.errors', 'sedamp.runtime.stage')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "[]\n", "")


def test_the_command_line_leaves_without_tearing_down_but_runs_exit_handlers() -> None:
    """`sedamp` ends with os._exit (the interpreter's teardown took ~17 ms of a ~0.2 s
    job): exit handlers still run, buffered output still reaches its pipe, and the
    status is what sys.exit would give."""
    code = (
        "import atexit, sys\n"
        "from sedamp.cli import exit_code, leave\n"
        "assert (exit_code(None), exit_code(4), exit_code('bad')) == (0, 4, 1)\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "print('buffered', end=' ')\n"
        "sys.stderr.write('err')\n"
        "leave(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (3, "buffered handler ran\n", "bad\nerr")


def test_the_command_line_under_a_profiler_ends_the_usual_way(tmp_path: Path) -> None:
    """A profiler writes its results once the command returns: os._exit left
    `python -m cProfile -o FILE -m sedamp ...` without its file."""
    out = tmp_path / "prof.out"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "sedamp", "--version"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.startswith("sedamp "), out.exists()) == (0, True, True), r.stderr


def test_clean_removes_ended_runs_and_keeps_the_newest(tmp_path: Path) -> None:
    """Run directories used to pile up for ever; every run now keeps the newest
    KEEP_RUNS ended runs of its topology, and `sedamp clean` removes the rest."""
    from sedamp.control import rundir

    work = tmp_path / "w"
    runs = work / "runs"
    runs.mkdir(parents=True)
    for i in range(5):  # five ended runs of t, one of u, one still going (this process)
        d = runs / f"t-{i}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"name": "t", "pid": 1, "started": i, "ended": True}))
    (runs / "u-0").mkdir()
    (runs / "u-0" / "run.json").write_text(json.dumps({"name": "u", "pid": 1, "started": 0, "ended": True}))
    (runs / "t-live").mkdir()
    (runs / "t-live" / "run.json").write_text(json.dumps({"name": "t", "pid": os.getpid(), "started": 0}))
    assert sorted(p.name for p in rundir.prune_runs(work, "t", 3)) == ["t-0", "t-1"]
    r = run_sedamp("clean", "--workdir", str(work), "--keep", "1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["t-4", "t-live", "u-0"]
    assert "removed 2 run directories" in r.stderr


def test_an_unusable_workdir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A --workdir that cannot hold run directories (here a file is in the way) gave a
    traceback and exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run_sedamp("run", str(TOPOLOGIES / "tiny.yaml"), "--workdir", str(blocker / "w"), "-q", env={"COUNT": "3"})
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"error: --workdir {blocker / 'w'}: cannot make run directories there: {blocker} is not a directory"
    )
    assert blocker.read_text() == ""


def test_status_in_a_pipe_shows_every_column_whole(tmp_path: Path) -> None:
    """With stdout a pipe, rich drew the table for 80 columns and cut the numbers of a
    wide one off (``1,2…``); it also had no completions per second."""
    topo = tmp_path / "wide.yaml"
    topo.write_text(
        f"""name: wide
stages:
  numbers_from_a_long_named_source:
    source: {TESTSTAGES}:Numbers
    params: {{count: 100000}}
    to: a_handler_with_a_rather_long_name
  a_handler_with_a_rather_long_name:
    handler: {TESTSTAGES}:pause
    params: {{delay_s: 0.002}}
    workers: 1
    to: the_sink_that_records_every_event
  the_sink_that_records_every_event:
    sink: {TESTSTAGES}:Record
    params: {{out: "{tmp_path / 'out.jsonl'}"}}
controller: {{period_s: 0.2}}
"""
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    # no --workdir: the run goes beside the topology, and status finds it by the file
    proc = subprocess.Popen(sedamp_cmd("run", str(topo), "-q", "--drain-timeout", "1"), cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:

        def answered() -> str | None:
            r = subprocess.run(
                sedamp_cmd("status", str(topo)), env=env, cwd=REPO, capture_output=True, text=True, timeout=30
            )
            row = [line for line in r.stdout.splitlines() if "a_handler_with_a_rather_long_name" in line]
            done = row[0].split("│")[6].strip().replace(",", "") if row and row[0].count("│") > 6 else ""
            return r.stdout if r.returncode == 0 and done.isdigit() and int(done) >= 100 else None

        shown = wait_until(answered, 30, "status to show events done")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert "…" not in shown, shown
    header = next(line for line in shown.splitlines() if "stage" in line and "workers" in line)
    for column in ("queue", "in/s", "done/s", "done", "failed", "batch", "svc p90", "wait p90", "blocked", "waiting"):
        assert column in header, header
    row = next(line for line in shown.splitlines() if "a_handler_with_a_rather_long_name" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert len(cells) == 12 and cells[0].startswith("a_handler_with_a_rather_long_name"), row
    assert re.fullmatch(r"[\d,]+", cells[5]) and int(cells[5].replace(",", "")) >= 100, row  # done


def test_one_event_is_one_event_not_one_events(tmp_path: Path) -> None:
    """Counts of one read "1 events", "1 events failed" in the summary and on stderr."""
    from tests.integration.util import chain_yaml

    topo = tmp_path / "one.yaml"
    topo.write_text(
        "name: one\n" + chain_yaml(tmp_path / "out.jsonl", f"    handler: {TESTSTAGES}:fail_on\n    params: {{modulo: 1}}", count=1)
    )
    r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"), env=WIDE)
    assert r.returncode == 1, r.stderr
    assert "one: 1 event in " in r.stdout, r.stdout
    assert "sedamp: 1 event failed; see " in r.stderr, r.stderr
    assert not re.search(r"(?<![\d,.])1 events", r.stdout + r.stderr)  # "21 events/s" is fine


def test_plural() -> None:
    from sedamp.observe.words import plural

    assert [plural(n, "event") for n in (0, 1, 2, 1234)] == ["0 events", "1 event", "2 events", "1,234 events"]
    assert plural(1, "run directory", "run directories") == "1 run directory"
    assert plural(3, "run directory", "run directories") == "3 run directories"


def test_a_topology_reads_writes_and_keeps_its_runs_beside_it_from_any_directory(tmp_path: Path) -> None:
    """Inputs resolved against the topology's folder but outputs and the run directory
    against the current one: `sedamp run /elsewhere/wordcount.yaml` from D wrote D/out
    and D/.sedamp. Every relative path of a topology now resolves against its folder;
    a --workdir given on the command line against the current directory."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(TOPOLOGIES / "data" / "texts", project / "data" / "texts")
    shutil.copy(TOPOLOGIES / "wordcount.yaml", project / "wordcount.yaml")
    elsewhere.mkdir()
    defaults = {"OUT": ""}  # the topology's own default output, whatever the environment holds

    r = run_sedamp("run", str(project / "wordcount.yaml"), cwd=elsewhere, env={**defaults, **WIDE})
    assert r.returncode == 0, r.stderr
    counts = project / "out" / "wordcount" / "counts.tsv"
    assert counts.is_file() and counts.read_text().count("\t") > 10
    assert list(elsewhere.iterdir()) == []  # nothing here: no out/, no .sedamp/
    (run_dir,) = (project / ".sedamp" / "runs").iterdir()
    # the summary ends saying where the output and the run directory are (absolute: not under here)
    assert r.stdout.splitlines()[-2:] == [f"output: {counts}", f"run directory: {run_dir}"]

    # from the project's parent the same paths are shown relative to it
    r = run_sedamp("run", "project/wordcount.yaml", cwd=tmp_path, env={**defaults, **WIDE})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2] == "output: project/out/wordcount/counts.tsv"
    assert r.stdout.splitlines()[-1].startswith("run directory: project/.sedamp/runs/wordcount-")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".sedamp").exists()

    # --workdir is a path of the shell: relative to the current directory; --json says it all
    r = run_sedamp("run", str(project / "wordcount.yaml"), "--workdir", "w", "--json", cwd=elsewhere, env=defaults)
    assert r.returncode == 0, r.stderr
    s = summary_of(r)
    assert Path(s["run_dir"]).parent == elsewhere / "w" / "runs"
    assert s["outputs"] == [{"stage": "write", "path": str(counts)}]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["w"]
