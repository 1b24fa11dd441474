"""TCP transport with CURVE: same results as ipc, and a peer without the run's client
key is refused during the handshake while the run goes on."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import zmq

from sedamp.runtime import wire
from sedamp.runtime.security import Keys
from tests.conftest import socket_context, wait_until
from tests.integration.teststages import read_records
from tests.integration.util import TOPOLOGIES, chain_yaml, run_sedamp, start_run, summary_of

T = "tests.integration.teststages"


def chain(tmp: Path, controller: str, count: int = 2000, delay_s: float = 0.0) -> Path:
    path = tmp / "t.yaml"
    middle = f"    handler: {T}:split\n    workers: 2"
    extra = f"    workers: 2\ncontroller:\n{controller}\n"
    path.write_text(
        "name: t"
        + chain_yaml(
            tmp / "out.jsonl",
            middle,
            sink="Append",
            count=count,
            delay_s=delay_s,
            to="{stage: sink, key: n}",
            extra=extra,
        )
    )
    return path


def test_tcp_with_curve_gives_the_same_output_as_ipc(tmp_path: Path) -> None:
    results = {}
    for transport in ("ipc", "tcp"):
        d = tmp_path / transport
        d.mkdir()
        topo = chain(d, f"  transport: {transport}")
        r = run_sedamp("run", str(topo), "--workdir", str(d / "w"), "--json")
        assert r.returncode == 0, r.stderr
        assert summary_of(r)["events"] == 2000
        results[transport] = sorted(json.dumps(e, sort_keys=True) for e in read_records(d / "out.jsonl"))
    assert results["tcp"] == results["ipc"] and len(results["ipc"]) == 4000


def _no_reply(sock: zmq.Socket[Any], timeout_ms: int = 1500) -> bool:
    """True if a request from `sock` gets no answer. A DEALER whose handshake was refused
    has no connection to send on, so its send may time out (SNDTIMEO): that is a refusal
    too, and must never block the test."""
    try:
        sock.send_multipart(wire.hello(wire.PRODUCER, -1, 4))
    except zmq.Again:
        return True
    return not sock.poll(timeout_ms)


def test_a_peer_without_the_client_key_is_refused(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    r = run_sedamp("keys", str(keys_dir))
    assert r.returncode == 0, r.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys_dir.iterdir()}
    assert modes == {"server.key": 0o644, "client.key": 0o644, "server.key_secret": 0o600, "client.key_secret": 0o600}
    assert run_sedamp("keys", str(keys_dir)).returncode == 1  # never overwrites
    keys = Keys.load(keys_dir)

    # ~16 s: alive through every check, which may take 13 s (each refused peer's send may
    # block for its SNDTIMEO of 5 s, then 1.5 s of silence); at ~8 s the run ended before
    # the last check once, on a loaded machine
    topo = chain(tmp_path, f"  transport: tcp\n  keys: {keys_dir}", count=8000, delay_s=0.002)
    work = tmp_path / "w"
    proc = start_run(topo, work)
    ctx: zmq.Context[Any] = socket_context()
    socks = []
    try:

        def queue_endpoint() -> str | None:
            for f in work.glob("runs/*/run.json"):
                info = json.loads(f.read_text())
                ep = info.get("endpoints", {}).get("mid")
                if ep and not ep.endswith("*"):
                    return str(ep)
            return None

        ep = wait_until(queue_endpoint, 30, "the queue's tcp endpoint in run.json")
        assert ep.startswith("tcp://127.0.0.1:")

        def peer(**curve: bytes) -> zmq.Socket[Any]:
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.sndtimeo = 5000  # a send with no connected peer blocks: bound it
            s.rcvtimeo = 5000
            for k, v in curve.items():
                setattr(s, k, v)
            s.connect(ep)
            socks.append(s)
            return s

        plain = peer()  # no CURVE at all
        stranger_pub, stranger_sec = zmq.curve_keypair()  # knows the server key, not the client key
        stranger = peer(
            curve_serverkey=keys.server_public.encode(), curve_publickey=stranger_pub, curve_secretkey=stranger_sec
        )
        member = peer(
            curve_serverkey=keys.server_public.encode(),
            curve_publickey=keys.client_public.encode(),
            curve_secretkey=keys.client_secret.encode(),
        )

        def answered() -> bool:
            member.send_multipart(wire.hello(wire.PRODUCER, -1, 4))
            return bool(member.poll(5000)) and wire.parse(member.recv_multipart()).kind == wire.CREDIT

        # the run's client key is answered before and after the strangers are not: the
        # queue was up all along, so their silence is a refusal
        assert answered()
        assert _no_reply(plain)
        assert _no_reply(stranger)
        assert answered()
        member.send_multipart(wire.simple(wire.EOS))  # leave without sending anything
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["events"] == 8000
    assert len(read_records(tmp_path / "out.jsonl")) == 16000


def test_keys_with_a_readable_secret_are_refused(tmp_path: Path) -> None:
    import pytest

    from sedamp.runtime.security import make_keys

    make_keys(tmp_path / "k")
    (tmp_path / "k" / "client.key_secret").chmod(0o644)
    with pytest.raises(PermissionError, match="readable by others"):
        Keys.load(tmp_path / "k")


def test_tcp_on_ipv6_loopback(tmp_path: Path) -> None:
    import socket

    import pytest

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    topo = chain(tmp_path, '  transport: tcp\n  host: "::1"', count=300)
    r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"), "--json")
    assert r.returncode == 0, r.stderr
    assert len(read_records(tmp_path / "out.jsonl")) == 600


def test_a_module_planted_in_the_current_directory_never_runs(tmp_path: Path) -> None:
    """A `stages/` package in the directory where someone runs sedamp must not shadow the
    installed one: installed packages come first, the topology's directory and the
    current one after them, for `python -m sedamp`, the children and validation alike."""
    planted = tmp_path / "stages"
    planted.mkdir()
    marker = tmp_path / "PLANTED_CODE_RAN"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    for name in ("__init__.py", "burn.py"):
        (planted / name).write_text(code)
    env = {"COUNT": "10", "OUT": str(tmp_path / "out.json")}
    tiny = str(TOPOLOGIES / "tiny.yaml")
    for args in (("validate", tiny), ("run", tiny, "-q", "--workdir", str(tmp_path / "w"))):
        r = run_sedamp(*args, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert not marker.exists()
    assert json.loads((tmp_path / "out.json").read_text()) == {"count": 10, "checksum": 45}
