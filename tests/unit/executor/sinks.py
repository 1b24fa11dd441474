"""A worker config the executor tests start: a sink of tests.integration.teststages
whose queue and controller are never there (the tests only start and end it)."""

from __future__ import annotations

import os
from pathlib import Path

from sedamp.runtime.configs import WorkerConfig


def sink_config(tmp_path: Path, index: int = 0) -> WorkerConfig:
    return WorkerConfig(
        stage="sink",
        kind="sink",
        index=index,
        ref="tests.integration.teststages:Record",
        params={"out": str(tmp_path / f"out{index}.jsonl")},
        input_endpoint=f"ipc://{tmp_path}/up",
        outputs=(),
        control_endpoint=f"ipc://{tmp_path}/ctl",
        batch=1,
        dead_letters=str(tmp_path / "dead.jsonl"),
        import_paths=(os.getcwd(),),
        period_s=0.1,
        parent_pid=os.getpid(),
    )
