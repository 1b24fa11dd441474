"""CURVE keys for TCP endpoints, and `sedamp keys`.

On ``ipc://`` sockets (the default) the run directory's mode (0700) is the protection.
When a topology uses TCP (``controller: {transport: tcp}``), every socket a run binds
is a CURVE server and every socket that connects is a CURVE client: traffic is
encrypted, and a ZAP handler in each binding process admits only the run's client key,
so a peer without it is refused during the handshake, before any frame is read.

A run has two key pairs: the server pair (the bound sockets of queues and the
controller) and the client pair (everything that connects). By default both are made
fresh for each run and handed to the run's processes with their configuration, never
written to disk. ``controller.keys: DIR`` uses pairs made by ``sedamp keys DIR``
instead, for peers that must know them in advance.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import zmq

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Keys:
    """Z85-encoded CURVE keys (40 characters each)."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @classmethod
    def generate(cls) -> Keys:
        sp, ss = zmq.curve_keypair()
        cp, cs = zmq.curve_keypair()
        return cls(sp.decode(), ss.decode(), cp.decode(), cs.decode())

    @classmethod
    def load(cls, directory: str | Path) -> Keys:
        """The pairs `sedamp keys DIR` wrote."""
        import zmq.auth  # (not at module level: every runtime process imports this module)

        d = Path(directory)
        pairs = []
        for name in ("server", "client"):
            path = d / f"{name}.key_secret"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: make the keys with `sedamp keys {d}`")
            if path.stat().st_mode & 0o077:
                raise PermissionError(f"{path} is readable by others: chmod 600 it (a secret key must be private)")
            public, secret = zmq.auth.load_certificate(path)
            if secret is None:
                raise ValueError(f"{path} holds no secret key")
            pairs += [public.decode(), secret.decode()]
        return cls(*pairs)


def make_keys(directory: str | Path) -> list[Path]:
    """Write a server and a client key pair into `directory` (created 0700); secret
    files are 0600. Refuses to overwrite existing keys."""
    import zmq.auth

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    targets = [d / f"{n}.{ext}" for n in ("server", "client") for ext in ("key", "key_secret")]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise FileExistsError(f"keys already exist: {', '.join(existing)}")
    old = os.umask(0o077)
    try:
        for name in ("server", "client"):
            zmq.auth.create_certificates(d, name)
    finally:
        os.umask(old)
    for t in targets:
        t.chmod(0o600 if t.name.endswith("_secret") else 0o644)
    return targets


class OnlyKey:
    """ZAP credentials provider: admit exactly one client public key."""

    def __init__(self, client_public: str) -> None:
        self.allowed = client_public.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.allowed
