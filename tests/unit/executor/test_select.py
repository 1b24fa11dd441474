"""`sedamp.executor.open_executor`: the one choice of where a run's workers go."""

from __future__ import annotations

import pytest

from sedamp.errors import ExecutorError, SedampError
from sedamp.executor import EXECUTORS, open_executor


class FakeLocal:
    """Stands in for the LocalExecutor a run boots first: records `close`."""

    remote = False

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_the_names_are_local_and_ray() -> None:
    assert EXECUTORS == ("local", "ray")


def test_local_is_the_executor_booted_already_and_ignores_an_address() -> None:
    local = FakeLocal()
    assert open_executor("local", "10.0.0.5:6379", local) is local  # type: ignore[arg-type]
    assert local.closed == 0


def test_ray_that_cannot_start_closes_the_local_executor() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (make test-ray installs it)")
    local = FakeLocal()
    with pytest.raises(ExecutorError, match=r"^the Ray address 'nowhere' is not HOST:PORT") as err:
        open_executor("ray", "nowhere", local)  # type: ignore[arg-type]
    assert isinstance(err.value, SedampError) and isinstance(err.value, RuntimeError)
    assert local.closed == 1
