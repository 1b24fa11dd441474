"""Where runtime processes run: the executor protocol (`base`), this machine (`local`),
a Ray cluster (`ray`), and `open_executor`, the one place a run's executor is chosen.
Runs in the controller process; Ray is imported only when a run asks for it."""

from __future__ import annotations

from sedamp.executor.base import Executor
from sedamp.executor.local import LocalExecutor

__all__ = ["EXECUTORS", "open_executor"]

# The names `controller.executor`, `sedamp run --executor` and `sedamp.run(executor=)` take.
EXECUTORS = ("local", "ray")


def open_executor(kind: str, address: str | None, local: LocalExecutor) -> Executor:
    """The executor of a run: `local` itself, or for ``kind == "ray"`` workers as actors
    on the Ray cluster at `address` (None: RAY_ADDRESS, else the cluster on this
    machine) with the queues and sources on `local`. `address` is ignored otherwise.

    Raises `sedamp.errors.ExecutorError` when Ray is missing or no cluster answers,
    having closed `local`: on any failure the caller has nothing left to close."""
    if kind != "ray":
        return local
    from sedamp.executor.ray import RayExecutor

    try:
        return RayExecutor(address, local=local)
    except BaseException:
        local.close()
        raise
