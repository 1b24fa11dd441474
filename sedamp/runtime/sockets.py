"""How every process of a run builds its ZeroMQ sockets: one `Sockets` per process
holds its context and, on tcp:// runs, the run's CURVE keys and the ZAP authenticator
that checks peers. The keys are passed in, never kept in a module global, so two runs
in one process (tests, the Python API) cannot see each other's keys. ipc:// sockets
never authenticate: the run directory's mode (0700) guards them."""

from __future__ import annotations

import logging
from typing import Any

import zmq

from sedamp.runtime.security import Keys, OnlyKey

ZAP_DOMAIN = "sedamp"
# HWMs are a safety net only: the protocol's credits and leases bound what is in
# flight, so they are set far above it (a low HWM would block before the credits do).
SAFETY_HWM_MESSAGES = 100_000


class Sockets:
    """A process's ZeroMQ context and the CURVE keys its tcp:// sockets use (None: no
    CURVE). `close()` stops the authenticator and terminates the context."""

    def __init__(self, curve: Keys | dict[str, str] | None = None, ctx: zmq.Context[Any] | None = None) -> None:
        self.ctx: zmq.Context[Any] = ctx if ctx is not None else zmq.Context()
        self.curve = Keys(**curve) if isinstance(curve, dict) else curve
        self._auth: Any = None  # the ZAP ThreadAuthenticator, started by the first CURVE server

    def dealer(self, identity: str, endpoint: str) -> zmq.Socket[Any]:
        """A DEALER with a stable routing id."""
        s = self.ctx.socket(zmq.DEALER)
        if endpoint.startswith("tcp://"):
            if endpoint.startswith("tcp://["):  # an IPv6 address
                s.setsockopt(zmq.IPV6, 1)
            if self.curve is not None:
                s.curve_serverkey = self.curve.server_public.encode()
                s.curve_publickey = self.curve.client_public.encode()
                s.curve_secretkey = self.curve.client_secret.encode()
        s.setsockopt(zmq.IDENTITY, identity.encode())
        _common_options(s)
        s.connect(endpoint)
        return s

    def router(self, endpoint: str) -> zmq.Socket[Any]:
        """A ROUTER that raises on sends to unknown peers (never drops silently) and lets a
        reconnecting peer with the same routing id take over its old connection."""
        s = self.ctx.socket(zmq.ROUTER)
        if endpoint.startswith("tcp://"):
            if endpoint.startswith("tcp://["):  # an IPv6 address
                s.setsockopt(zmq.IPV6, 1)
            if self.curve is not None:
                self._secure_server(s, self.curve)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.ROUTER_HANDOVER, 1)
        _common_options(s)
        s.bind(endpoint)
        return s

    def _secure_server(self, s: zmq.Socket[Any], curve: Keys) -> None:
        if self._auth is None:
            from zmq.auth.thread import ThreadAuthenticator  # only tcp runs pay for its import (asyncio)

            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("sedamp.auth"))
            self._auth.start()
            self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=OnlyKey(curve.client_public))
        s.curve_server = True
        s.curve_publickey = curve.server_public.encode()
        s.curve_secretkey = curve.server_secret.encode()
        s.zap_domain = ZAP_DOMAIN.encode()

    def stop_auth(self) -> None:
        """Stop the authenticator (before ctx.term(), which would wait for it)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def close(self) -> None:
        """Stop the authenticator, then terminate the context (every socket closed first)."""
        self.stop_auth()
        self.ctx.term()


def _common_options(s: zmq.Socket[Any]) -> None:
    s.setsockopt(zmq.SNDHWM, SAFETY_HWM_MESSAGES)
    s.setsockopt(zmq.RCVHWM, SAFETY_HWM_MESSAGES)
    s.setsockopt(zmq.LINGER, 0)


def bound_endpoint(s: zmq.Socket[Any], advertise: str | None = None) -> str:
    """Where peers connect to `s`: its last bound endpoint (a tcp port chosen by the OS
    for ``:*``), with the host replaced by `advertise` if given."""
    raw = s.getsockopt(zmq.LAST_ENDPOINT)
    ep = raw.decode() if isinstance(raw, bytes) else str(raw)
    if advertise and ep.startswith("tcp://"):
        port = ep.rsplit(":", 1)[1]
        host = f"[{advertise}]" if ":" in advertise else advertise
        ep = f"tcp://{host}:{port}"
    return ep


def drain(sock: zmq.Socket[Any], limit: int = 1000) -> list[list[Any]]:
    """Receive up to `limit` messages that are already waiting, without blocking.

    A message's first frame (a routing id, or a header) comes as bytes; the frames after
    it (headers behind a routing id, event bodies, the buffers beside events) as
    `zmq.Frame`, which hold the received bytes without copying them: a large array is
    then read in place (`sedamp.runtime.payload`), and a queue passes bodies and
    buffers on as they came."""
    out: list[list[Any]] = []
    more = zmq.RCVMORE
    try:
        while len(out) < limit:
            parts: list[Any] = [sock.recv(zmq.NOBLOCK)]
            while sock.getsockopt(more):
                parts.append(sock.recv(copy=False))
            out.append(parts)
    except zmq.Again:
        pass
    return out
