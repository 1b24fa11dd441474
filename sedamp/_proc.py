"""Helpers every runtime child process uses at start: tie its life to its parent,
leave Ctrl-C to the controller, and build its ZeroMQ sockets the same way. Pure of
process roles: each role module calls these from its entry function."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Any

import zmq

from sedamp.security import Keys, OnlyKey

_PR_SET_PDEATHSIG = 1

# How often a child checks that its parent (the controller) is still alive when the
# kernel cannot tell it (non-Linux). Short enough that an orphan is gone within a second.
PARENT_CHECK_PERIOD_S = 0.5


def become_child(parent_pid: int) -> None:
    """Call first in a child: ignore SIGINT (the controller coordinates Ctrl-C, which the
    terminal sends to the whole process group) and die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_NAME = 15


def set_name(name: str) -> None:
    """Name this process as `ps -o comm`, `top` and psutil show it (15 bytes on Linux);
    forked children would otherwise all look like their launcher."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover
            pass


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid


# The run's CURVE keys, set once per process (`use_curve`): sockets on tcp:// endpoints
# then authenticate (see sedamp.security). ipc:// sockets never do.
_curve: Keys | None = None
ZAP_DOMAIN = "sedamp"
_authenticators: dict[int, Any] = {}  # id(context) -> its ZAP ThreadAuthenticator


def use_curve(keys: Keys | dict[str, str] | None) -> None:
    global _curve
    _curve = Keys(**keys) if isinstance(keys, dict) else keys


def _secure_server(ctx: zmq.Context[Any], s: zmq.Socket[Any]) -> None:
    assert _curve is not None
    if id(ctx) not in _authenticators:
        from zmq.auth.thread import ThreadAuthenticator  # only tcp runs pay for its import (asyncio)

        auth = ThreadAuthenticator(ctx, log=logging.getLogger("sedamp.auth"))
        auth.start()
        auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=OnlyKey(_curve.client_public))
        _authenticators[id(ctx)] = auth
    s.curve_server = True
    s.curve_publickey = _curve.server_public.encode()
    s.curve_secretkey = _curve.server_secret.encode()
    s.zap_domain = ZAP_DOMAIN.encode()


def _secure_client(s: zmq.Socket[Any]) -> None:
    assert _curve is not None
    s.curve_serverkey = _curve.server_public.encode()
    s.curve_publickey = _curve.client_public.encode()
    s.curve_secretkey = _curve.client_secret.encode()


def stop_auth(ctx: zmq.Context[Any]) -> None:
    """Stop this context's authenticator (before ctx.term(), which would wait for it)."""
    auth = _authenticators.pop(id(ctx), None)
    if auth is not None:
        auth.stop()


def dealer(ctx: zmq.Context[Any], identity: str, endpoint: str) -> zmq.Socket[Any]:
    """A DEALER with a stable routing id. HWMs are a safety net only: the protocol's
    credits and leases bound what is in flight, so they are set far above it."""
    s = ctx.socket(zmq.DEALER)
    if endpoint.startswith("tcp://"):
        if endpoint.startswith("tcp://["):  # an IPv6 address
            s.setsockopt(zmq.IPV6, 1)
        if _curve is not None:
            _secure_client(s)
    s.setsockopt(zmq.IDENTITY, identity.encode())
    s.setsockopt(zmq.SNDHWM, 100_000)
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def router(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """A ROUTER that raises on sends to unknown peers (never drops silently) and lets a
    reconnecting peer with the same routing id take over its old connection."""
    s = ctx.socket(zmq.ROUTER)
    if endpoint.startswith("tcp://"):
        if endpoint.startswith("tcp://["):  # an IPv6 address
            s.setsockopt(zmq.IPV6, 1)
        if _curve is not None:
            _secure_server(ctx, s)
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    s.setsockopt(zmq.ROUTER_HANDOVER, 1)
    s.setsockopt(zmq.SNDHWM, 100_000)
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(endpoint)
    return s


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


def drain(sock: zmq.Socket[Any], limit: int = 1000) -> list[list[bytes]]:
    """Receive up to `limit` messages that are already waiting, without blocking."""
    out: list[list[bytes]] = []
    try:
        while len(out) < limit:
            out.append(sock.recv_multipart(zmq.NOBLOCK, copy=True))
    except zmq.Again:
        pass
    return out
