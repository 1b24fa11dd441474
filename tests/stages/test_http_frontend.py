"""stages.http.frontend's pure parts: the reply endpoint and the request head parser."""

from __future__ import annotations

import pytest

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


def test_a_504_is_a_latency_sample_for_the_p90_controller() -> None:
    """A request answered 504 took at least timeout_s: the route's p90 controller must
    see that, or a route whose requests all time out looks fast to it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fe = frontend.HttpFrontend()
    fe.setup(port=port, routes=[{"path": "/", "route": "r"}], limits={"r": {"target_p90_ms": 50}}, timeout_s=0.2)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # nothing handles it: 504 after 0.2 s
            assert c.recv(100).startswith(b"HTTP/1.1 504")
        controller = fe.admission["r"].controller
        assert controller is not None and controller.samples == [pytest.approx(0.2)]
    finally:
        fe.teardown()
