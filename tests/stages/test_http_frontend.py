"""stages.http.frontend's pure parts: the reply endpoint and the request head parser."""

from __future__ import annotations

import pytest

from sedamp.runtime import wire
from stages.http import frontend


def test_each_run_has_its_own_reply_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(frontend.RUN_TOKEN_VAR, "run-a")
    a = frontend.reply_endpoint(8080)
    monkeypatch.setenv(frontend.RUN_TOKEN_VAR, "run-b")
    b = frontend.reply_endpoint(8080)
    assert a != b and a.endswith("/8080-run-a.sock")


def test_a_body_is_never_larger_than_an_event_can_carry() -> None:
    assert frontend.BODY_CEILING + 4 * frontend.MAX_HEADER_BYTES <= wire.MAX_EVENT_BYTES


@pytest.mark.parametrize(
    ("target", "path"),
    [("/a?b=1", "/a?b=1"), ("http://example.com:8080/a?b=1", "/a?b=1"), ("http://example.com", "/")],
)
def test_the_origin_and_absolute_forms_are_read(target: str, path: str) -> None:
    head = f"GET {target} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
    assert frontend._parse_head(head)[1] == path
