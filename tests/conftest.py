"""Fixtures shared by every test.

Every process a test starts, directly or through `sedamp run` in a subprocess, inherits
SEDAMP_TEST_TAG. After each test, `no_leftover_processes` waits a few seconds for every
process carrying the tag (other than this one) to be gone; any that remain are killed
and the test fails, naming them. A hung test is failed by pytest-timeout, which dumps
every thread's traceback (see pyproject.toml)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq

TAG = os.environ.setdefault("SEDAMP_TEST_TAG", uuid.uuid4().hex)
REPO = Path(__file__).resolve().parent.parent
LEFTOVER_GRACE_S = 10.0


def tagged_processes() -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get("SEDAMP_TEST_TAG") == TAG:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


# Every socket a test makes gives up on a send or a receive after this long (zmq.Again)
# instead of blocking the test: a peer that never answers fails one test, at that line.
SOCKET_TIMEOUT_MS = 10_000


def socket_context() -> zmq.Context:  # type: ignore[type-arg]
    """A ZeroMQ context for a test's own sockets: each one it makes has send and receive
    timeouts (SOCKET_TIMEOUT_MS), so no blocking socket call in a test can hang."""
    ctx: zmq.Context = zmq.Context()  # type: ignore[type-arg]
    ctx.setsockopt(zmq.SNDTIMEO, SOCKET_TIMEOUT_MS)
    ctx.setsockopt(zmq.RCVTIMEO, SOCKET_TIMEOUT_MS)
    return ctx


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns a truthy value; fail with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = tagged_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if left:
        names = [f"{p.pid} {' '.join(p.cmdline()[:6])}" for p in left if p.is_running()]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if names:
            pytest.fail(f"processes left behind after the test: {names}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d
