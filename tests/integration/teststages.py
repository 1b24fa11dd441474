"""Stages used by the integration tests (importable as tests.integration.teststages)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import sedamp


class Numbers:
    """Source: {"n": 0..count-1}, optionally pausing `delay_s` after each event."""

    def setup(self, count: int, delay_s: float = 0.0) -> None:
        self.count = int(count)
        self.delay_s = float(delay_s)

    def total(self) -> int:
        return self.count

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(self.count):
            yield {"n": i}
            if self.delay_s:
                time.sleep(self.delay_s)


def fail_on(event: dict[str, Any], modulo: int) -> dict[str, Any]:
    if event["n"] % modulo == 0:
        raise ValueError(f"n={event['n']} is a multiple of {modulo}")
    return event


def unserializable(event: dict[str, Any], modulo: int) -> dict[str, Any]:
    if event["n"] % modulo == 0:
        return {"n": event["n"], "handle": object()}
    return event


def pause(event: dict[str, Any], delay_s: float) -> dict[str, Any]:
    time.sleep(delay_s)
    return event


def fan_then_pause(event: dict[str, Any]) -> Any:
    """Handler (a generator): `k` outputs {"n", "i"}, then a pause of `pause_s` inside
    the handler, after the outputs past the first spill were sent."""
    for i in range(int(event.get("k", 1))):
        yield {"n": event.get("n", 0), "i": i}
    time.sleep(float(event.get("pause_s", 0)))


def split(event: dict[str, Any]) -> Any:
    return sedamp.Many([{"n": event["n"], "half": 0}, {"n": event["n"], "half": 1}])


def as_list(event: dict[str, Any]) -> list[int]:
    return [event["n"], event["n"]]  # a list is ONE event


def die_once(event: dict[str, Any], at: int, marker: str) -> dict[str, Any]:
    """SIGKILL this worker the first time event `at` is seen (once per marker file)."""
    if event["n"] == at:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return event
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return event


class LogsInSetup:
    """Handler: says at INFO and at DEBUG that it is set up (which `sedamp run -v` /
    `-vv` must show: it runs in a worker process, not the command line's)."""

    def setup(self) -> None:
        log = logging.getLogger("teststages")
        log.info("LogsInSetup: set up in pid %d", os.getpid())
        log.debug("LogsInSetup: debug detail")

    def handle(self, event: Any) -> Any:
        return event


class BadSetup:
    def setup(self) -> None:
        raise RuntimeError("no model file at /nonexistent/model.bin")

    def handle(self, event: Any) -> Any:
        return event


class Record:
    """Sink: writes every event it got as one JSON line, at teardown (atomically)."""

    def setup(self, out: str) -> None:
        self.out = Path(out)
        self.events: list[Any] = []

    def handle(self, event: Any) -> None:
        self.events.append(event)

    def teardown(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in self.events))
        os.replace(tmp, self.out)


def read_records(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def die_at_each(event: dict[str, Any], at: list[int], marker_dir: str) -> dict[str, Any]:
    """SIGKILL this worker the first time each event in `at` is seen."""
    if event["n"] in at:
        try:
            fd = os.open(os.path.join(marker_dir, str(event["n"])), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return event
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return event


def crash_on(event: dict[str, Any], at: int, how: str) -> dict[str, Any]:
    """Kill this worker every time event `at` is handled: a poison event."""
    if event["n"] == at:
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), {"kill": signal.SIGKILL, "segv": signal.SIGSEGV}[how])
    return event


def leave_processes(event: dict[str, Any], pid_dir: str) -> dict[str, Any]:
    """On event 0, start what a careless handler leaves behind: a subprocess it never
    waits for, a forked child that sleeps, and a subprocess in a session of its own;
    their pids go to `pid_dir`."""
    if event["n"] == 0:
        pids = [subprocess.Popen(["sleep", "300"]).pid]
        pids.append(subprocess.Popen(["sleep", "301"], start_new_session=True).pid)
        child = os.fork()
        if child == 0:
            time.sleep(300)
            os._exit(0)
        pids.append(child)
        for pid in pids:
            Path(pid_dir, str(pid)).write_text("")
    return event


def crash_every(event: dict[str, Any], modulo: int) -> dict[str, Any]:
    """Kill this worker every time an event whose n is `modulo - 1` past a multiple of
    `modulo` is handled: a few poison events spread through a job."""
    if event["n"] % modulo == modulo - 1:
        os._exit(7)
    return event


def flaky(event: dict[str, Any], modulo: int, failures: int, marker_dir: str) -> dict[str, Any]:
    """Fail the first `failures` attempts at each event whose n is a multiple of `modulo`."""
    if event["n"] % modulo == 0:
        path = os.path.join(marker_dir, str(event["n"]))
        with open(path, "ab") as f:
            f.write(b".")
        if os.path.getsize(path) <= failures:
            raise ConnectionError(f"attempt {os.path.getsize(path)} at n={event['n']} failed")
    return event


def hang_on(event: dict[str, Any], at: int) -> dict[str, Any]:
    if event["n"] == at:
        time.sleep(3600)
    return event


def with_pid(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "pid": os.getpid()}


_HOARD: list[bytearray] = []


def hoard(event: dict[str, Any], mb: float) -> dict[str, Any]:
    """Leak `mb` MiB per event (touched, so it counts in RSS)."""
    _HOARD.append(bytearray(b"x" * int(mb * 2**20)))
    return {**event, "pid": os.getpid()}


def bloat(event: dict[str, Any], modulo: int, size: int) -> dict[str, Any]:
    if event["n"] % modulo == 0:
        return {**event, "blob": b"\0" * size}
    return event


class Append:
    """Sink: appends each event as a JSON line at once (durable per event, so killing
    this sink's worker loses nothing it handled)."""

    def setup(self, out: str) -> None:
        self.fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def handle(self, event: Any) -> None:
        os.write(self.fd, (json.dumps(event) + "\n").encode())

    def teardown(self) -> None:
        os.close(self.fd)


class Total:
    """A stateful sink: sums n and writes the total at the end (finish)."""

    def setup(self, out: str) -> None:
        self.out = out
        self.total = 0

    def handle(self, event: Any) -> None:
        self.total += event["n"]

    def finish(self) -> None:
        Path(self.out).write_text(str(self.total))


def to_file(event: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"{event['n']:05d}.txt", "data": f"n={event['n']}\n"}


def parity(event: dict[str, Any]) -> dict[str, Any]:
    n = event["n"]
    return {"n": n, "route": "none" if n % 50 == 49 else ("even" if n % 2 == 0 else "odd")}


class Trickle:
    """Source: one event, then IDLE until `marker` exists (a sink makes it on seeing that
    event), then a second event. Without IDLE the first event would wait in the source
    for a full batch and the marker would never come."""

    def setup(self, marker: str, wait_s: float = 20.0) -> None:
        self.marker = marker
        self.wait_s = wait_s

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield {"n": 0}
        yield from _idle_until(self.marker, self.wait_s)
        yield {"n": 1, "saw_marker": os.path.exists(self.marker)}


def _idle_until(marker: str, wait_s: float):  # type: ignore[no-untyped-def]
    """IDLE every 10 ms until `marker` exists, for at most `wait_s`."""
    deadline = time.monotonic() + wait_s
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
        yield sedamp.IDLE


class Touch:
    """Sink: creates `marker` and appends each event to `out`."""

    def setup(self, marker: str, out: str) -> None:
        self.marker = marker
        self.out = out

    def handle(self, event: Any) -> None:
        Path(self.marker).touch()
        with open(self.out, "a") as f:
            f.write(json.dumps(event) + "\n")


class SlowFinish:
    """Handler: passes events on; its finish() takes `finish_s` and emits a count."""

    def setup(self, finish_s: float) -> None:
        self.finish_s = finish_s
        self.n = 0

    def handle(self, event: Any) -> Any:
        self.n += 1
        return event

    def finish(self) -> Any:
        time.sleep(self.finish_s)
        return {"n": -1, "count": self.n}


def http_echo(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": 200,
        "body": request["body"] or request["path"].encode(),
        "headers": {"x-route": request["route"]},
    }


def http_boom(request: dict[str, Any]) -> str:
    raise RuntimeError("secret internal detail /etc/passwd")


def http_sleep(request: dict[str, Any]) -> str:
    time.sleep(float(request["query"].partition("=")[2] or 0.3))
    return "slept\n"


def chatty(event: dict[str, Any]) -> dict[str, Any]:
    """Prints a line for each event (user code that writes to stdout)."""
    print(f"chatty saw {event['n']}", flush=True)
    return event


def pair_or_handle(event: dict[str, Any], modulo: int) -> dict[str, Any]:
    """A tuple in the event, or (every `modulo`-th) a value MessagePack cannot carry."""
    if event["n"] % modulo == 0:
        return {"n": event["n"], "handle": object()}
    return {"n": event["n"], "pair": (event["n"], -event["n"])}


def type_of_pair(event: dict[str, Any]) -> dict[str, Any]:
    return {"n": event["n"], "pair": event["pair"], "type": type(event["pair"]).__name__}


def slow_copy(event: dict[str, Any], root: str, delay_s: float) -> dict[str, Any]:
    """A thumbnail-like handler: a file listed by ListFiles, read and `delay_s` of work,
    becomes a file of the same name for WriteFiles."""
    time.sleep(delay_s)
    return {"name": os.path.relpath(event["path"], root), "data": Path(event["path"]).read_bytes()}


def slow_line(event: dict[str, Any], delay_s: float) -> dict[str, Any]:
    time.sleep(delay_s)
    return {"path": event["path"]}


class FailWhen(Trickle):
    """Source: one event, then IDLE until `marker` exists, then it raises."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield {"n": 0}
        yield from _idle_until(self.marker, self.wait_s)
        raise RuntimeError("the source broke")


class _SlowFinalizer:
    """An object whose finalizer makes `marker` and then takes 30 s."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __del__(self) -> None:
        Path(self.marker).touch()
        time.sleep(30)


def finalize_then_wait(event: dict[str, Any], marker: str, cleaned: str) -> dict[str, Any]:
    """Handler: runs a slow finalizer (as an import's lock callback or a `__del__` in a
    library may be running when the run stops), then waits 30 s; makes `cleaned` on
    the way out, however it leaves."""
    try:
        _SlowFinalizer(marker)  # dropped at once: its __del__ runs here
        time.sleep(30)
    finally:
        Path(cleaned).touch()
    return event


def hang_in_tool(event: dict[str, Any], at: int, pid_dir: str) -> dict[str, Any]:
    """On event `at`, run a tool that hangs (`sleep 300`) and wait for it, as a handler
    calling a stuck program does; the tool's pid goes to `pid_dir`."""
    if event["n"] == at:
        tool = subprocess.Popen(["sleep", "300"])
        Path(pid_dir, str(tool.pid)).write_text("")
        tool.wait()
    return event
