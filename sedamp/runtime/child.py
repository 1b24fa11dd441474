"""Entry point of every local runtime process: ``python -m sedamp.runtime.child ROLE NAME``.

Reads ``{"role": ..., "config": {...}}`` as JSON on stdin and calls the role's entry
function. The extra argv words only make ``ps`` readable."""

from __future__ import annotations

import json
import sys
from typing import Any


def config_of(role: str, data: dict[str, Any]) -> tuple[Any, Any]:
    from sedamp.runtime.configs import OutputConfig, QueueConfig, SourceConfig, WorkerConfig

    if role == "queue":
        from sedamp.runtime.queue import run_queue

        return run_queue, QueueConfig(**data)

    data["outputs"] = tuple(OutputConfig(**o) for o in data["outputs"])
    data["import_paths"] = tuple(data["import_paths"])
    if "chain_rest" in data:
        data["chain_rest"] = tuple(data["chain_rest"])
    if role == "worker":
        from sedamp.runtime.worker import run_worker

        return run_worker, WorkerConfig(**data)
    if role == "source":
        from sedamp.runtime.source import run_source

        return run_source, SourceConfig(**data)
    raise SystemExit(f"sedamp.runtime.child: unknown role {role!r}")


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    entry, cfg = config_of(spec["role"], spec["config"])
    entry(cfg)


if __name__ == "__main__":
    main()
