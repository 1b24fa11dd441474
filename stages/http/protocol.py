"""HTTP/1.1 on one connection, for the front end (`stages.http.frontend.HttpFrontend`):
read a request, check it, hand it to the front end's ``dispatch``, write the answer;
keep-alive, ``Expect: 100-continue``, HEAD, the absolute form of the target, and the
pacing of clients that ignore Retry-After.

What it needs of the front end ``fe``: ``connections``, ``max_connections``,
``answering`` (counted here: requests read whose answer is not written yet),
``closing``, ``header_timeout_s``, ``keepalive_s``, ``max_body``, ``pace_s``,
``close_after``, ``refusals_per_s``, ``pacing`` (a set: the waits of refusals, which
`end_pacing` ends when the front end stops), ``counts`` (answers by status) and ``async
dispatch(method, target, headers, body, client) -> (status, headers, body)``.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MAX_HEADER_BYTES", "REASONS", "BadRequest", "connection", "end_pacing", "keep_alive", "parse_head", "refusal_wait",
    "write",
]  # fmt: skip

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip
MAX_HEADER_BYTES = 16 * 1024
# Refusals are paced per connection: the k-th refusal in a row on a connection is written
# only refusal_pace_ms x k after its request was read (at most MAX_PACE_S), and nothing
# more is read from it meanwhile, so a client that ignores Retry-After is slowed by TCP
# itself and refusing costs the front end little CPU at any offered rate; after
# close_after_refusals in a row the connection is closed. The wait is before the refusal,
# not after it: a client that waits for each answer sends its next request only then, so
# a request is read as soon as it is sent and, if admitted, its latency is its service
# alone (waiting after the refusal had the next request sit unread for the pause, which
# an admitted one then carried in its latency: a p90 of 534-759 ms under overload where
# the pipeline itself held 150 ms).
MAX_PACE_S = 1.0
# All connections together: while more refusals wait than the front end may write in a
# second (refusals_per_s), each repeated refusal (a connection refused again in a row:
# its client did not wait out Retry-After) waits its turn, up to MAX_SHARED_PACE_S, so
# the refusals written per second, and the requests read behind them, stay near
# refusals_per_s at any number of connections (one refusal costs the front end ~0.3-0.5
# ms of CPU: at 512 connections of wrk, 524 refusals a second took 0.19 of a core from
# the workers). A connection's first refusal keeps its own short pace: a client that
# honours Retry-After learns of the overload at once.
MAX_SHARED_PACE_S = 5.0


def refusal_wait(pace_s: float, refusals: int, waiting: int, per_s: float) -> float:
    """Seconds a refusal waits before it is written: its connection's own pace (with
    `refusals` in a row before it, at most MAX_PACE_S), or, for a repeated refusal when
    `waiting` refusals (this one included) are more than `per_s` writes a second allow,
    its turn among them (at most MAX_SHARED_PACE_S; `per_s` 0: no such bound)."""
    own = min(MAX_PACE_S, pace_s * (refusals + 1))
    shared = waiting / per_s if per_s > 0 and refusals > 0 else 0.0
    return min(MAX_SHARED_PACE_S, max(own, shared))


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def connection(fe: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one client connection until it closes, is closed, or the front end stops."""
    fe.connections += 1
    peer = writer.get_extra_info("peername")
    client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
    try:
        if fe.connections > fe.max_connections:
            await write(fe, writer, 503, {"retry-after": "1"}, b"too many connections\n", close=True)
            return
        first = True
        refusals = 0  # in a row, on this connection
        while not fe.closing:
            keep, refused = await one(fe, reader, writer, client, first, refusals)
            first = False
            if not keep:
                break
            refusals = refusals + 1 if refused else 0
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        fe.connections -= 1
        writer.close()


async def one(
    fe: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str, first: bool, refusals: int = 0
) -> tuple[bool, bool]:
    """Serve one request: whether to keep the connection, and whether admission refused
    it (after `refusals` refusals in a row already)."""
    wait = fe.header_timeout_s if first else fe.keepalive_s
    try:
        async with asyncio.timeout(wait):  # not wait_for: that makes a task per request
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        if first:
            await write(fe, writer, 408, {}, b"request not received in time\n", close=True)
        return False, False
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            await write(fe, writer, 400, {}, b"incomplete request\n", close=True)
        return False, False
    except asyncio.LimitOverrunError:
        await write(fe, writer, 431, {}, b"request headers too large\n", close=True)
        return False, False
    try:
        method, target, version, headers = parse_head(head)
    except BadRequest as exc:
        await write(fe, writer, exc.status, {}, f"{exc}\n".encode(), close=True)
        return False, False
    keep = keep_alive(version, headers)
    if "transfer-encoding" in headers:
        await write(fe, writer, 411, {}, b"send a content-length, not a chunked body\n", close=True)
        return False, False
    try:
        length = int(headers.get("content-length", "0"))
        if length < 0:
            raise ValueError
    except ValueError:
        await write(fe, writer, 400, {}, b"bad content-length\n", close=True)
        return False, False
    if length > fe.max_body:
        await write(fe, writer, 413, {}, f"body over {fe.max_body} bytes\n".encode(), close=True)
        return False, False
    expect = headers.get("expect")
    if expect is not None:
        if expect.lower() != "100-continue":
            await write(fe, writer, 417, {}, b"the only expectation served is 100-continue\n", close=True)
            return False, False
        if length:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
    try:
        body = b""
        if length:
            async with asyncio.timeout(fe.header_timeout_s):
                body = await reader.readexactly(length)
    except TimeoutError:
        await write(fe, writer, 408, {}, b"body not received in time\n", close=True)
        return False, False
    fe.answering += 1  # from here to the answer written: the front end's stop waits for it
    try:
        return await answer(fe, writer, (method, target, headers, body, client), keep, refusals)
    finally:
        fe.answering -= 1


async def answer(
    fe: Any,
    writer: asyncio.StreamWriter,
    request: tuple[str, str, dict[str, str], bytes, str],
    keep: bool,
    refusals: int,
) -> tuple[bool, bool]:
    """Dispatch a request and write its answer: whether to keep the connection, and
    whether admission refused it."""
    status, rheaders, rbody = await fe.dispatch(*request)
    refused = status == 503
    if refused and refusals + 1 >= fe.close_after:
        keep = False  # a client that keeps ignoring Retry-After
    if refused and keep and not fe.closing:  # a connection that ends here is not held for it
        await _pace(fe, refusals)
    await write(fe, writer, status, rheaders, rbody, close=not keep or fe.closing, head=request[0] == "HEAD")
    return keep, refused


async def _pace(fe: Any, refusals: int) -> None:
    """Wait out a refusal's pace (`refusal_wait`), or until the front end stops."""
    loop = asyncio.get_running_loop()
    wake = loop.create_future()
    fe.pacing.add(wake)
    handle = loop.call_later(refusal_wait(fe.pace_s, refusals, len(fe.pacing), fe.refusals_per_s), _wake, wake)
    try:
        await wake
    finally:
        handle.cancel()
        fe.pacing.discard(wake)


def _wake(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def end_pacing(fe: Any) -> None:
    """Write every paced refusal now (the front end stops)."""
    for wake in list(fe.pacing):
        _wake(wake)


async def write(
    fe: Any,
    writer: asyncio.StreamWriter,
    status: int,
    headers: dict[str, str],
    body: bytes,
    close: bool,
    head: bool = False,
) -> None:
    """Write a response; to HEAD, its head only (with the length the body would have)."""
    fe.counts[status] = fe.counts.get(status, 0) + 1
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    hdrs = {k.lower(): v for k, v in headers.items()}
    hdrs.setdefault("content-type", "text/plain; charset=utf-8")
    hdrs["content-length"] = str(len(body))
    hdrs["connection"] = "close" if close else "keep-alive"
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
    await writer.drain()


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise BadRequest(400, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400 if not version.startswith("HTTP/") else 505, f"unsupported version {version[:16]!r}")
    if target.startswith(("http://", "https://")):  # absolute form (RFC 9112, 3.2.2)
        url = urlsplit(target)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    if not target.startswith("/"):
        raise BadRequest(400, "the target must be a path or an absolute URL")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    return method, target, version, headers


def keep_alive(version: str, headers: dict[str, str]) -> bool:
    conn = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return conn == "keep-alive"
    return conn != "close"
