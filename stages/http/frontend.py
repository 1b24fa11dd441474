"""The HTTP front end's three stages (`HttpFrontend`, `Call`, `Respond`): see the
package docstring (``stages.http``) for how they fit together."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import os
import queue
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgpack
import zmq

import sedamp
from sedamp.observe.words import plural
from sedamp.runtime import wire
from sedamp.runtime.stage import load_ref
from stages.http import protocol
from stages.http.admission import Admission, RouteLimits
from stages.http.protocol import MAX_HEADER_BYTES

__all__ = ["Call", "HttpFrontend", "Respond", "reply_endpoint", "response"]

log = logging.getLogger("sedamp.http")

# The largest body one request event can carry: the event limit, less room for the
# request's other fields (its headers are at most MAX_HEADER_BYTES). A larger body is
# refused with 413 before it is read, whatever max_body_bytes says.
BODY_CEILING = wire.MAX_EVENT_BYTES - 4 * MAX_HEADER_BYTES
# Set by the runtime in every process of a local run: it makes the reply socket the run's own.
RUN_TOKEN_VAR = "SEDAMP_RUN"
IDLE_WAIT_S = 0.1  # how long an idle front end waits for a request before saying IDLE
# of a response event: [seconds its handler took, the pid of the worker] (`Call` sets it)
SERVICE_FIELD = "service"
REPORT_S = 5.0  # how often each route's admission is logged (INFO)


def reply_endpoint(port: int) -> str:
    """Where the front end on `port` takes responses: a socket in a directory only this
    user can enter, named for the port and the run (so that another service, even on
    the same port, can never take this one's replies); the front end removes it at exit."""
    d = Path(tempfile.gettempdir()) / f"sedamp-http-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = d.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{d} must be owned by this user with mode 0700")
    run = os.environ.get(RUN_TOKEN_VAR, "")
    return f"ipc://{d}/{int(port)}{'-' + run if run else ''}.sock"


def response(
    request: dict[str, Any], body: Any = b"", status: int = 200, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The response event for `request` (for handlers that build it themselves)."""
    out_headers = dict(headers or {})
    if isinstance(body, str):
        body = body.encode()
        out_headers.setdefault("content-type", "text/plain; charset=utf-8")
    elif not isinstance(body, bytes | bytearray):
        body = json.dumps(body).encode()
        out_headers.setdefault("content-type", "application/json")
    return {"id": request["id"], "status": int(status), "headers": out_headers, "body": bytes(body)}


def call(name: str, func: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The response event of ``func(request)``; an exception is a 500 naming no internals
    (logged with its traceback)."""
    try:
        result = func(request)
    except Exception:
        log.error("%s failed on %s %s:\n%s", name, request.get("method"), request.get("path"), traceback.format_exc())
        return response(request, "internal error\n", 500)
    if isinstance(result, dict) and "status" in result and "id" in result:
        return result
    if isinstance(result, dict) and ("status" in result or "body" in result):
        return response(request, result.get("body", b""), result.get("status", 200), result.get("headers"))
    return response(request, result)


class Call:
    """Handler: the response of ``func(request)``; a failure is a 500 naming no internals.
    The response carries how long `func` took and in which process (``service``: [seconds,
    pid]), which `Respond` hands back with it: the front end's admission learns the
    route's pool and service time from it.

    `func` ("module:function", from the topology file) is imported in ``setup``, so a
    module that prepares itself on import (e.g. calibrates) does so before the first
    request. A request already past its deadline (the front end has answered it 504) is
    dropped without calling `func`: no one waits for its answer. The stage's events in
    less its events out is how many were dropped; each worker logs its count at the end."""

    def setup(self, func: str) -> None:
        self.name = func
        self.func = load_ref(func)
        self.expired = 0
        self.pid = os.getpid()  # the worker's: setup runs in it

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        deadline = request.get("deadline")
        if isinstance(deadline, int | float) and time.time() > deadline:
            self.expired += 1
            return None
        t0 = time.monotonic()
        out = call(self.name, self.func, request)
        # how long the handler took, and where: the front end's admission learns from it
        return {**out, SERVICE_FIELD: [time.monotonic() - t0, self.pid]}

    def teardown(self) -> None:
        if self.expired:
            log.warning(
                "http: %s: %s past their deadline and not handled",
                self.name,
                plural(self.expired, "request was", "requests were"),
            )


class Respond:
    """Sink: sends each response event back to the front end on `port`."""

    def setup(self, port: int) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(reply_endpoint(port))

    def handle_batch(self, events: list[dict[str, Any]]) -> list[None]:
        """One message per batch: ``[[id, status, headers, body, service], ...]``
        (service: [seconds, pid] from `Call`, None when the handler did not say)."""
        self.sock.send(
            msgpack.packb(
                [
                    [
                        e["id"],
                        int(e.get("status", 200)),
                        e.get("headers") or {},
                        e.get("body", b""),
                        _as_service(e.get(SERVICE_FIELD)),
                    ]
                    for e in events
                ],
                use_bin_type=True,
            )
        )
        return [None] * len(events)

    def teardown(self) -> None:
        self.sock.close()
        self.ctx.term()


def _as_service(value: Any) -> tuple[float, int] | None:
    """A response's (seconds, pid), or None for a value that does not read as one."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    took, pid = value
    if not isinstance(took, int | float) or isinstance(took, bool) or not took >= 0:
        return None
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return float(took), pid


def _admissions(routes: list[dict[str, Any]], limits: dict[str, dict[str, Any]]) -> dict[str, Admission]:
    """Each route's admission, from its limits (target_p90_ms given in ms)."""
    out: dict[str, Admission] = {}
    for name in {r["route"] for r in routes}:
        spec = dict(limits.get(name, {}))
        if "target_p90_ms" in spec:
            spec["target_p90_s"] = float(spec.pop("target_p90_ms")) / 1000
        out[name] = Admission(RouteLimits(**spec), time.monotonic)
    return out


def _time_out(fut: asyncio.Future[Any]) -> None:
    """A request's answer did not come within timeout_s: its dispatch answers 504."""
    if not fut.done():
        fut.set_exception(TimeoutError())


class HttpFrontend:
    """Source: an HTTP/1.1 server whose requests are the events (see the module doc).

    Params
        port, host: where to listen (host 127.0.0.1 unless given). Port 0 takes a free
            port (its Respond sinks say port 0 too); ``sedamp run`` prints where it
            listens (``listening on http://127.0.0.1:PORT``) and, in its summary, how
            many requests were answered with each status (``stats()``).
        routes: a list of ``{path, route, method: GET|POST|...|"*", prefix: bool}``; the
            first match wins.
        limits: per route, ``{max_inflight, rate, burst, target_p90_ms, classes}``
            (``stages.http.admission.RouteLimits``).
        classes: a list of ``{header, value, class}`` or ``{path_prefix, class}`` rules;
            the first match gives the request's class (0 the highest); unmatched requests
            get `default_class`.
        timeout_s: a request unanswered this long gets 504.
        max_body_bytes, header_timeout_s (time to send a request), keepalive_s (idle time
        between requests), max_connections.
        idle_ms: how long a request read may wait for others to go downstream with it
            (default 0: at once, with those read meanwhile: batches grow with the load).
        inline_max_ms: a route with ``inline: "module:function"`` is served by that
            function in the front end's own process (no hop: for cheap routes) while its
            mean time per request stays under inline_max_ms (default 1); past it, the route
            goes back to its stages (so it must keep them), and the log says so once.
        refusal_pace_ms, close_after_refusals: the k-th refusal in a row on a connection
            is written refusal_pace_ms x k after its request was read (at most 1 s),
            and nothing more is read from it meanwhile; after close_after_refusals in
            a row it is closed (defaults 500 and 20).
        max_refusals_per_s: refusals written per second, all connections together:
            while more wait, a connection refused again in a row waits its turn (up
            to 5 s) (default 100; 0: no bound).

    On Ctrl-C every request it took is answered before the run ends (`drain_on_interrupt`):
    those the run had read by their handlers, those still waiting here (the queue
    downstream was full) with 503 and Retry-After at once.
    """

    # its events are requests a client waits for: an interrupt answers every one of them
    drain_on_interrupt = True

    def setup(
        self,
        port: int = 8080,
        host: str = "127.0.0.1",
        routes: list[dict[str, Any]] | None = None,
        limits: dict[str, dict[str, Any]] | None = None,
        classes: list[dict[str, Any]] | None = None,
        default_class: int = 0,
        timeout_s: float = 10.0,
        max_body_bytes: int = 1 << 20,
        header_timeout_s: float = 10.0,
        keepalive_s: float = 5.0,
        max_connections: int = 1024,
        idle_ms: float = 0.0,
        refusal_pace_ms: float = 500.0,
        close_after_refusals: int = 20,
        inline_max_ms: float = 1.0,
        max_refusals_per_s: float = 100.0,
    ) -> None:
        self.port = int(port)
        self.host = host
        self.url = f"http://{host}:{port}"  # the port bound, once listening (port 0: the system's pick)
        self.routes = [dict(r) for r in (routes or [{"path": "/", "route": "default", "prefix": True}])]
        for r in self.routes:
            if "path" not in r or "route" not in r:
                raise ValueError(f"HttpFrontend: a route needs path and route, got {r}")
            r.setdefault("method", "*")
        self.classes = list(classes or [])
        self.default_class = int(default_class)
        self.timeout_s = float(timeout_s)
        self.max_body = min(int(max_body_bytes), BODY_CEILING)
        self.header_timeout_s = float(header_timeout_s)
        self.keepalive_s = float(keepalive_s)
        self.max_connections = int(max_connections)
        self.idle_s = float(idle_ms) / 1000
        self.pace_s = float(refusal_pace_ms) / 1000
        self.close_after = max(1, int(close_after_refusals))
        self.refusals_per_s = max(0.0, float(max_refusals_per_s))
        self.pacing: set[asyncio.Future[Any]] = set()  # refusals waiting out their pace
        self.inline_max_s = float(inline_max_ms) / 1000
        # route -> [name, function, mean seconds per call (EWMA, None until measured)]
        self.inline: dict[str, list[Any]] = {
            r["route"]: [r["inline"], load_ref(r["inline"]), None] for r in self.routes if r.get("inline")
        }
        self.admission = _admissions(self.routes, limits or {})
        self.counts: dict[int, int] = {}
        self._events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._ids = itertools.count()
        self._pending: dict[int, tuple[asyncio.Future[Any], str, float]] = {}
        self.connections = 0
        self.answering = 0  # requests read whose answer is not written yet
        self.closing = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"HttpFrontend cannot listen on {host}:{port}: {self._error}") from self._error

    def total(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        """Where it listens (the port the system gave, for port 0) and its answers so far
        by status, for `sedamp run` to show (``listening on URL``, and in the summary)."""
        answered = self.counts.copy()  # one C call: safe against the server thread's updates
        return {"listening": self.url, "answered": {str(k): v for k, v in sorted(answered.items())}}

    def __iter__(self) -> Iterator[Any]:
        # A request goes downstream with those waiting behind it (IDLE ends the batch),
        # at most idle_ms after it was read. With nothing coming, IDLE every IDLE_WAIT_S:
        # a request is still taken at once, and the process does not spin.
        deadline: float | None = None  # of the batch being read
        while True:
            wait = IDLE_WAIT_S if deadline is None else deadline - time.monotonic()
            try:
                event = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
            except queue.Empty:
                deadline = None
                yield sedamp.IDLE
            else:
                if deadline is None:
                    deadline = time.monotonic() + self.idle_s
                yield event

    # ------------------------------------------------------------ the server thread

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        # the port first: a second service on a port in use must fail before it binds anything
        self._server = await asyncio.start_server(
            functools.partial(protocol.connection, self),
            self.host,
            self.port,
            limit=MAX_HEADER_BYTES,
            reuse_address=True,
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{port}"
        # replies are read when the socket's descriptor says so, every one waiting at
        # once, with no future per message as zmq.asyncio made
        self._zctx = zmq.Context()
        self._pull = self._zctx.socket(zmq.PULL)
        self._reply = reply_endpoint(self.port)
        self._pull.bind(self._reply)
        self._loop.add_reader(self._pull.fileno(), _receive, self)
        _receive(self)  # what came before the reader was added
        self._reporter = asyncio.ensure_future(self._report())

    async def _report(self) -> None:
        """Every REPORT_S, log (at INFO: `sedamp run -v`) what each route's admission did."""
        last: dict[str, tuple[int, dict[str, int]]] = {}
        while True:
            await asyncio.sleep(REPORT_S)
            for route, adm in sorted(self.admission.items()):
                admitted0, refused0 = last.get(route, (0, {}))
                refused = {k: v - refused0.get(k, 0) for k, v in adm.refused.items() if v - refused0.get(k, 0)}
                last[route] = (adm.admitted, dict(adm.refused))
                if adm.admitted == admitted0 and not refused:
                    continue
                p90 = adm.controller.p90_s if adm.controller is not None else None
                log.info(
                    "http: route %s in the last %g s: admitted %d, refused %s; in flight %d; rate %s; p90 %s",
                    route,
                    REPORT_S,
                    adm.admitted - admitted0,
                    refused or 0,
                    adm.inflight,
                    f"{adm.bucket.rate:.1f}/s" if math.isfinite(adm.bucket.rate) else "unlimited",
                    f"{p90 * 1000:.0f} ms" if p90 is not None else "-",
                )

    async def dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes, client: str
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        path = unquote(parts.path) or "/"
        if self.closing:
            return 503, {"retry-after": "1"}, b"shutting down\n"
        allowed = []
        route = None
        for r in self.routes:
            hit = path.startswith(r["path"]) if r.get("prefix") else path == r["path"]
            if not hit:
                continue
            if r["method"] in ("*", method) or (method == "HEAD" and r["method"] == "GET"):
                route = r["route"]
                break
            allowed.append(r["method"])
        if route is None:
            if allowed:
                return 405, {"allow": ", ".join(sorted(set(allowed)))}, b"method not allowed\n"
            return 404, {}, b"not found\n"
        klass = self._class_of(path, headers)
        why = self.admission[route].admit(klass, client)
        if why is not None:
            return 503, {"retry-after": "1"}, f"overloaded: {why}\n".encode()
        rid = next(self._ids)
        t0 = time.monotonic()
        event = {
            "id": rid,
            "route": route,
            "method": method,
            "path": path,
            "query": parts.query,
            "headers": headers,
            "body": body,
            "client": client,
            "class": klass,
            "deadline": time.time() + self.timeout_s,
        }
        if route in self.inline:
            return self._inline(route, event, t0)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = (fut, route, t0)
        self._events.put(event)
        timer = self._loop.call_later(self.timeout_s, _time_out, fut)
        try:
            result: tuple[int, dict[str, str], bytes] = await fut
            return result
        except TimeoutError:
            if self._pending.pop(rid, None) is not None:
                # it took at least timeout_s: a sample for the p90 controller, not a silence
                self.admission[route].done(self.timeout_s, admitted_at=t0)
            return 504, {}, f"no answer within {self.timeout_s:g} s\n".encode()
        finally:
            timer.cancel()

    def _inline(self, route: str, event: dict[str, Any], t0: float) -> tuple[int, dict[str, str], bytes]:
        """Serve a cheap route here, timing it; a route found not to be cheap after all
        goes back to its stages from the next request on."""
        entry = self.inline[route]
        out = call(entry[0], entry[1], event)
        took = time.monotonic() - t0
        entry[2] = took if entry[2] is None else 0.9 * entry[2] + 0.1 * took
        if entry[2] > self.inline_max_s:
            del self.inline[route]
            log.warning(
                "http: route %s takes %.2f ms per request inline, over inline_max_ms (%g): it is served by "
                "its stages from now on",
                route,
                entry[2] * 1000,
                self.inline_max_s * 1000,
            )
        self.admission[route].done(took, admitted_at=t0)
        status, headers, body = int(out.get("status", 200)), out.get("headers") or {}, out.get("body", b"")
        return status, dict(headers), bytes(body)

    def _class_of(self, path: str, headers: dict[str, str]) -> int:
        for rule in self.classes:
            if "header" in rule and headers.get(str(rule["header"]).lower()) == rule.get("value"):
                return int(rule["class"])
            if "path_prefix" in rule and path.startswith(rule["path_prefix"]):
                return int(rule["class"])
        return self.default_class

    # ------------------------------------------------------------ the end

    def teardown(self) -> None:
        """Stop taking requests, answer what is in flight (the pipeline is draining) for
        up to timeout_s, then close."""
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            self.closing = True
            self._server.close()
            _refuse_unread(self)
            protocol.end_pacing(self)
            deadline = time.monotonic() + self.timeout_s
            while (self._pending or self.answering) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # every answer set, then written
            self._loop.remove_reader(self._pull.fileno())
            self._reporter.cancel()
            self._pull.close(0)
            self._zctx.term()
            Path(self._reply.removeprefix("ipc://")).unlink(missing_ok=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(self.timeout_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        log.info("http: answered %s", dict(sorted(self.counts.items())))


def _refuse_unread(fe: HttpFrontend) -> None:
    """Answer 503 to the requests taken but never read by the run (they waited here
    while the queue downstream was full when it stopped): they would wait out
    timeout_s for an answer that cannot come, and hold the run's drain with them.
    Runs in the server thread, after `closing` is set (nothing is added any more)."""
    while True:
        try:
            event = fe._events.get_nowait()
        except queue.Empty:
            return
        entry = fe._pending.pop(event["id"], None)
        if entry is None:
            continue
        fut, route, t0 = entry
        fe.admission[route].done(time.monotonic() - t0, admitted_at=t0)
        if not fut.done():
            fut.set_result((503, {"retry-after": "1"}, b"shutting down\n"))


def _receive(fe: HttpFrontend) -> None:
    """Hand every reply waiting on the front end's socket to the request it answers."""
    while int(fe._pull.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # the descriptor is edge-triggered: drain
        raw = fe._pull.recv(zmq.NOBLOCK)
        try:
            responses = [_reply_of(r) for r in msgpack.unpackb(raw, raw=False)]
        except Exception:
            log.error("http: a malformed batch of responses was dropped")
            continue
        now = time.monotonic()
        for rid, status, headers, body, service in responses:
            entry = fe._pending.pop(rid, None)
            if entry is None:
                continue  # it was answered 504 already
            fut, route, t0 = entry
            fe.admission[route].done(now - t0, admitted_at=t0, service=service)
            if not fut.done():
                fut.set_result((status, headers, body))


def _reply_of(r: list[Any]) -> tuple[Any, int, dict[str, str], bytes, tuple[float, int] | None]:
    """One reply of a batch from `Respond`: ``[id, status, headers, body]`` and, from a
    sink of this version, the handler's ``[seconds, pid]`` (or None)."""
    rid, st, hd, bd = r[:4]
    return rid, int(st), dict(hd), bytes(bd), _as_service(r[4]) if len(r) > 4 else None
