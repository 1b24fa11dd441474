"""stages.http.frontend's pure parts: the reply endpoint and the request head parser."""

from __future__ import annotations

import contextlib
import queue
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import sedamp
from sedamp.runtime import wire
from stages.http import frontend, protocol


def test_each_run_has_its_own_reply_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(frontend.RUN_TOKEN_VAR, "run-a")
    a = frontend.reply_endpoint(8080)
    monkeypatch.setenv(frontend.RUN_TOKEN_VAR, "run-b")
    b = frontend.reply_endpoint(8080)
    assert a != b and a.endswith("/8080-run-a.sock")


def test_a_body_is_never_larger_than_an_event_can_carry() -> None:
    assert frontend.BODY_CEILING + 4 * protocol.MAX_HEADER_BYTES <= wire.MAX_EVENT_BYTES


@pytest.mark.parametrize(
    ("target", "path"),
    [("/a?b=1", "/a?b=1"), ("http://example.com:8080/a?b=1", "/a?b=1"), ("http://example.com", "/")],
)
def test_the_origin_and_absolute_forms_are_read(target: str, path: str) -> None:
    head = f"GET {target} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
    assert protocol.parse_head(head)[1] == path


@contextlib.contextmanager
def serving(**params: Any) -> Iterator[tuple[frontend.HttpFrontend, int]]:
    """A front end on a free port, set up with `params`, torn down after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fe = frontend.HttpFrontend()
    fe.setup(port=port, **params)
    try:
        yield fe, port
    finally:
        fe.teardown()


def ask(c: socket.socket, request: bytes) -> tuple[bytes, float]:
    """Send `request` and read the start of its answer: (status line, seconds taken)."""
    t0 = time.monotonic()
    c.sendall(request)
    head = c.recv(4096)
    return head[:12], time.monotonic() - t0


def test_a_504_is_a_latency_sample_for_the_p90_controller() -> None:
    """A request answered 504 took at least timeout_s: the route's p90 controller must
    see that, or a route whose requests all time out looks fast to it."""
    params = {"routes": [{"path": "/", "route": "r"}], "limits": {"r": {"target_p90_ms": 50}}, "timeout_s": 0.2}
    with serving(**params) as (fe, port), socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert ask(c, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")[0] == b"HTTP/1.1 504"  # nothing handles it
        controller = fe.admission["r"].controller
        assert controller is not None and controller.samples == [pytest.approx(0.2)]


def test_the_handlers_service_time_comes_back_to_admission_with_its_response() -> None:
    """`Call` says how long its function took and in which process, `Respond` hands that
    back with the response, and the route's admission learns its pool and service time
    from it (real sockets)."""
    import os

    call = frontend.Call()
    call.setup(func="stages.http_demo:hello")
    params = {"routes": [{"path": "/", "route": "r"}], "limits": {"r": {"target_p90_ms": 250}}, "timeout_s": 5}
    with serving(**params) as (fe, port), socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        respond = frontend.Respond()
        respond.setup(port=port)
        try:
            c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            request = fe._events.get(timeout=10)
            answer = call.handle(request)
            assert answer is not None and answer["status"] == 200
            took, pid = answer["service"]
            assert 0 <= took < 1 and pid == os.getpid()
            time.sleep(0.05)  # the answer takes longer than the service it reports
            respond.handle_batch([{**answer, "service": [0.0125, 4242]}])
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            respond.teardown()
        admission = fe.admission["r"]
        assert [s for _, s in admission.completions] == [0.0125] and list(admission.workers) == [4242]


def test_a_reply_without_a_service_time_is_still_read() -> None:
    """A sink of another version sends four fields; a service that is not [seconds, pid]
    is taken as unknown."""
    assert frontend._reply_of([1, 200, {}, b"x"]) == (1, 200, {}, b"x", None)
    assert frontend._reply_of([1, 200, {}, b"x", [0.5, 12]]) == (1, 200, {}, b"x", (0.5, 12))
    for bad in (0.5, [True, 12], [0.5, "w"], [-1.0, 12], [float("nan"), 12], None):
        assert frontend._reply_of([1, 200, {}, b"x", bad])[4] is None, bad


INLINE = {"path": "/r", "route": "r", "method": "GET", "inline": "stages.http_demo:hello"}
REQUEST = b"GET /r HTTP/1.1\r\nhost: x\r\n\r\n"


def test_a_refusal_waits_before_it_is_written_not_the_request_after_it() -> None:
    """A client that waits for each answer sends its next request only once the refusal
    arrives: the pause of a refused connection is in the 503, so the next request is
    read at once and, if admitted, answered without it. Before, the 503 went out at once
    and the next request sat unread for the pause, which its 200 then carried."""
    params = {"routes": [INLINE], "limits": {"r": {"rate": 4, "burst": 1}}, "refusal_pace_ms": 400}
    with serving(**params) as (_, port), socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert ask(c, REQUEST)[0] == b"HTTP/1.1 200"  # the bucket's one token
        status, took = ask(c, REQUEST)  # none left (one every 0.25 s): refused
        assert status == b"HTTP/1.1 503" and took >= 0.35, took
        status, took = ask(c, REQUEST)  # a token came meanwhile: admitted, read at once
        assert status == b"HTTP/1.1 200" and took < 0.2, took


def test_a_refusal_that_closes_its_connection_is_not_held() -> None:
    """A client that closes after each request (Connection: close, HTTP/1.0) is not slowed
    by holding its connection: the pause is for connections that go on."""
    params = {"routes": [INLINE], "limits": {"r": {"rate": 0.001, "burst": 1}}, "refusal_pace_ms": 400}
    with serving(**params) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert ask(c, REQUEST)[0] == b"HTTP/1.1 200"  # the bucket's one token
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            status, took = ask(c, REQUEST.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
            assert status == b"HTTP/1.1 503" and took < 0.2, took


def test_a_refusal_waits_its_own_pace_or_its_turn_among_many() -> None:
    wait = protocol.refusal_wait
    assert wait(0.5, 0, 1, 100) == 0.5 and wait(0.5, 1, 1, 100) == 1.0  # its own pace, k x 0.5 s
    assert wait(0.5, 5, 1, 100) == protocol.MAX_PACE_S  # at most 1 s of its own
    assert wait(0.5, 1, 250, 100) == 2.5  # refused again, 250 waiting, 100 written a second: its turn
    assert wait(0.5, 1, 10_000, 100) == protocol.MAX_SHARED_PACE_S
    assert wait(0.5, 1, 10_000, 0) == 1.0  # no shared bound
    assert wait(0.5, 0, 10_000, 100) == 0.5  # a first refusal keeps its own pace: news of the overload at once


def test_refusals_to_many_connections_are_written_at_the_front_end_s_pace() -> None:
    """wrk at 512 connections, none honouring Retry-After: each connection's refusal
    came back after at most 1 s, so the front end read and refused 524 requests a
    second, 0.19 of a core taken from the workers. With more refusals waiting than
    max_refusals_per_s, a connection refused again waits its turn: here 30 at 20 a
    second take 1.5 s. Its first refusal comes at its own pace (1 ms here)."""
    params = {
        "routes": [INLINE], "limits": {"r": {"rate": 0.001, "burst": 1}}, "refusal_pace_ms": 1, "max_refusals_per_s": 20,
    }  # fmt: skip
    with serving(**params) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert ask(c, REQUEST)[0] == b"HTTP/1.1 200"  # the bucket's one token
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(30)]
        try:
            t0 = time.monotonic()
            for c in conns:
                c.sendall(REQUEST)
            first = [c.recv(4096)[:12] for c in conns]
            took_first = time.monotonic() - t0
            t0 = time.monotonic()
            for c in conns:  # at once again, Retry-After ignored
                c.sendall(REQUEST)
            again = [c.recv(4096)[:12] for c in conns]
            took = time.monotonic() - t0
        finally:
            for c in conns:
                c.close()
    assert first == again == [b"HTTP/1.1 503"] * 30
    assert took_first < 1.0, took_first  # first refusals: each at its own pace, not in turn
    assert took >= 1.2, took  # 30 / 20 a second, less the first ones' turns


def test_a_stop_writes_the_refusals_waiting_their_turn_at_once() -> None:
    """A refusal may wait up to 5 s for its turn; a stop (Ctrl-C, the end of the run)
    answers it at once instead of waiting it out."""
    params = {"routes": [INLINE], "limits": {"r": {"rate": 0.001, "burst": 1}}, "max_refusals_per_s": 0.2}
    with serving(**params) as (fe, port), socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert ask(c, REQUEST)[0] == b"HTTP/1.1 200"  # the bucket's one token
        c.sendall(REQUEST)  # refused: its turn comes in 5 s (one refusal every 5 s)
        time.sleep(0.3)
        t0 = time.monotonic()
        fe.teardown()  # (serving's own teardown then finds it stopped)
        took = time.monotonic() - t0
        assert c.recv(4096)[:12] == b"HTTP/1.1 503"
    assert took < 3.0, took


class Arrivals:
    """The front end's request queue, fed by a schedule on a clock of its own: `get`
    with a timeout moves the clock to the next arrival, or by the whole timeout."""

    def __init__(self, every_s: float, n: int) -> None:
        self.now = 0.0
        self.times = [i * every_s for i in range(n)]

    def get(self, timeout: float) -> int:
        if self.times and self.times[0] <= self.now + timeout:
            self.now = max(self.now, self.times[0])
            self.times.pop(0)
            return 1
        self.now += timeout
        raise queue.Empty

    def get_nowait(self) -> int:
        return self.get(0.0)


def test_a_request_read_waits_at_most_idle_ms_for_others_to_go_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests arriving every ~4 ms, idle_ms ~16: the wait for more was counted afresh
    after each request, so the batch grew as long as they kept coming and the first
    request waited for all of them (p50 of /work at 4 connections: 7 ms in the front
    end). Now a batch ends idle_ms after its first request. (Steps of 2**-8 s keep the
    clock's sums exact.)"""
    step = 2**-8
    arrivals = Arrivals(every_s=step, n=40)
    monkeypatch.setattr(frontend.time, "monotonic", lambda: arrivals.now)
    fe = frontend.HttpFrontend()
    fe.idle_s = 4 * step
    fe._events = arrivals  # type: ignore[assignment]
    batches, current = [], 0
    for ev in fe:
        if ev is sedamp.IDLE:
            batches.append(current)
            current = 0
            if not arrivals.times:
                break
        else:
            current += 1
    assert batches == [5] * 8, batches  # read at 0 to 4 steps, sent at 4 steps
    fe.idle_s = 0.0  # the default: what is waiting, and no more
    arrivals.times, arrivals.now = [0.0, 0.0, step], 0.0
    it = iter(fe)
    assert [next(it), next(it), next(it)] == [1, 1, sedamp.IDLE]
