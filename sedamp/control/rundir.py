"""Runs in the controller process: the run directory.

Every run gets a private directory (mode 0700) under ``<workdir>/runs/``, named after
its topology and start time. It holds ``run.json`` (how `sedamp status`, `scale` and
`top` find and reach the run: see `sedamp.control.client`), the dead-letter file, the
skip list of a resumed run and, when the path is short enough, the ipc sockets and the
workers' slots. What cannot be made or written raises StorageError.

Reads: nothing. Writes: the directory, its socket directory and ``run.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sedamp.errors import StorageError

# ipc:// paths must fit in a sockaddr_un (108 bytes on Linux, less elsewhere).
_MAX_IPC_PATH = 90
# The workdir of a run given none: this folder beside the topology file.
WORKDIR_NAME = ".sedamp"
# Ended run directories kept per topology (the newest): enough to compare the last
# runs' dead letters and metrics, few enough that a cron job's workdir stays small.
KEEP_RUNS = 20


def workdir_of(base_dir: Path, workdir: Path | None) -> Path:
    """Where a topology's runs and journals go, absolute: `workdir` as given (relative to
    the current directory), else WORKDIR_NAME in `base_dir`, the topology file's folder,
    so that a topology keeps its runs beside it whatever directory it is run from."""
    return Path(workdir if workdir is not None else Path(base_dir) / WORKDIR_NAME).absolute()


def make_run_dir(workdir: Path, name: str) -> Path:
    """A new private directory for one run of topology `name` (mode 0700). Raises
    StorageError when it cannot be made (a full or read-only disk)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = Path(workdir) / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        # unique even for runs of one topology started in the same second (mode 0700)
        return Path(tempfile.mkdtemp(prefix=f"{name}-{stamp}-", dir=runs)).resolve()
    except OSError as exc:
        raise StorageError.of("a run directory in", runs, exc, verb="make") from exc


def socket_dir(run_dir: Path) -> Path:
    """Where the run's ipc sockets live: inside the private run directory when its path
    is short enough, else a private temporary directory (mode 0700 either way)."""
    d = run_dir / "sock"
    short = len(str(d)) + len("/q999") <= _MAX_IPC_PATH
    try:
        if short:
            d.mkdir(mode=0o700)
            return d
        return Path(tempfile.mkdtemp(prefix="sedamp-"))
    except OSError as exc:
        where = d if short else Path(tempfile.gettempdir()) / "sedamp-*"
        raise StorageError.of("the socket directory", where, exc, verb="make") from exc


def write_run_file(
    run_dir: Path,
    *,
    name: str,
    command: str,
    topology: Path | None,
    started: float,
    period_s: float,
    ended: bool,
    endpoints: dict[str, str | None],
    curve_server_key: str | None,
) -> None:
    """run.json in the run directory (replaced atomically): how `sedamp status`,
    `scale` and `top` find and reach this run. `started` is wall-clock time.time();
    `endpoints` are where the control and queue sockets listen (public; keys are never
    written)."""
    info = {
        "name": name,
        "pid": os.getpid(),
        "command": command,
        "topology": str(topology) if topology else None,
        "started": started,
        "period_s": period_s,
        "ended": ended,
        "endpoints": endpoints,
        "curve_server_key": curve_server_key,
    }
    tmp = run_dir / "run.json.tmp"
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, run_dir / "run.json")
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StorageError.of("the run file", run_dir / "run.json", exc) from exc


def run_is_live(info: dict[str, Any]) -> bool:
    """Whether the run of this run.json is still going (its controller alive, not ended)."""
    if info.get("ended"):
        return False
    try:
        return _pid_exists(int(info["pid"]))
    except (KeyError, ValueError, TypeError):
        return False


def _pid_exists(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0 checks without sending anything; one of
    another user's that cannot be signalled exists too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """The run.json of `run_dir` with its path, or None if there is none to read."""
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):  # not a run file (a torn or foreign one): not a run
        return None
    info["run_dir"] = str(run_dir)
    return info


def prune_runs(workdir: Path, name: str | None, keep: int) -> list[Path]:
    """Remove the ended run directories of topology `name` (of every topology: None)
    but the newest `keep` of each; a run that is still going is never touched (its
    controller is alive and run.json does not say it ended). Returns what was removed."""
    by_topology: dict[str, list[tuple[float, Path]]] = {}
    runs = Path(workdir) / "runs"
    for d in runs.iterdir() if runs.is_dir() else []:
        info = read_run(d)
        if info is None or run_is_live(info) or (name is not None and info.get("name") != name):
            continue
        by_topology.setdefault(str(info.get("name")), []).append((float(info.get("started") or 0), d))
    removed = []
    for found in by_topology.values():
        for _, d in sorted(found, reverse=True)[keep:]:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
