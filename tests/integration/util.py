"""Helpers for tests that run sedamp for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"
TESTSTAGES = "tests.integration.teststages"


def sedamp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sedamp", *args]


def run_sedamp(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (a hang fails the test through the timeout)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        sedamp_cmd(*args), env=full_env, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout
    )


def chain_yaml(
    out: Path, middle: str, *, sink: str = "Record", count: int = 200, delay_s: float = 0.0, to: str = "sink",
    extra: str = "",
) -> str:  # fmt: skip
    """The stages of src (Numbers) -> mid (`middle`: its YAML lines) -> sink (a teststages
    sink writing `out`); `extra` follows the sink's lines (more sink keys, controller:)."""
    return f"""
stages:
  src:
    source: {TESTSTAGES}:Numbers
    params: {{count: {count}, delay_s: {delay_s}}}
    to: mid
  mid:
{middle}
    to: {to}
  sink:
    sink: {TESTSTAGES}:{sink}
    params: {{out: "{out}"}}
{extra}"""


def start_run(topo: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `sedamp run TOPO --json` in the background (output captured), with `env`
    added to the environment."""
    return subprocess.Popen(
        sedamp_cmd("run", str(topo), "--workdir", str(workdir), "--json", *extra),
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary printed by `sedamp run --json`."""
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON summary; stdout={proc.stdout!r} stderr={proc.stderr!r}") from exc


def stage_of(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["stages"] if s["name"] == name)


def stage_count(workdir: Path, stage: str, *path: str) -> int:
    """A counter of `stage` as the running controller reports it on its command socket:
    `path` into the stage's record, ``events_in`` (events handled) by default, or e.g.
    ``"queue", "leased"`` (events a worker holds: inside its handler). 0 until the run
    answers. For waiting on work to flow instead of sleeping:
    ``wait_until(lambda: stage_count(w, "mid") >= 50, 30, "events to flow")``."""
    from sedamp.control.client import command, find_run
    from sedamp.errors import SedampError

    try:
        reply = command(find_run(None, workdir), {"op": "status"}, timeout_s=2.0)
    except SedampError:
        return 0
    value = (reply.get("record") or {}).get("stages", {}).get(stage)
    for key in path or ("events_in",):
        value = value.get(key) if isinstance(value, dict) else None
    return int(value or 0)


def start_run_logged(topo: Path, workdir: Path, stderr_path: Path, *extra: str) -> subprocess.Popen[str]:
    """`start_run`, with stderr written to `stderr_path`, so a test can wait for a line
    the run prints (the run's stderr is then not captured by communicate())."""
    with open(stderr_path, "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            sedamp_cmd("run", str(topo), "--workdir", str(workdir), "--json", *extra),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def screen(raw: bytes) -> list[str]:
    """What a terminal shows after `raw`: the cursor moves and erasures a progress bar
    uses (CR, LF, CSI n A, CSI 2K), colours ignored; lines are not wrapped (the bar is
    drawn within COLUMNS, and the log lines above it may wrap without harm)."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", raw.decode(errors="replace")):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            col = 0
        elif token.startswith("\x1b["):
            if token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
            elif token == "\x1b[2K":
                rows[row] = []
            continue
        else:
            line = rows[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = token
            col += 1
        while len(rows) <= row:
            rows.append([])
    return ["".join(r).rstrip() for r in rows]
