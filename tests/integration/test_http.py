"""The HTTP front end end to end: a real server started by `sedamp run`, real sockets."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.util import REPO, sedamp_cmd, stage_count, start_run

T = "tests.integration.teststages"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def topology(tmp: Path, port: int, host: str = "127.0.0.1", max_body: int = 1000) -> Path:
    path = tmp / "http.yaml"
    path.write_text(
        f"""name: http-test
stages:
  http:
    source: stages.http:HttpFrontend
    params:
      port: {port}
      host: {host}
      routes:
        - {{path: /echo, route: echo}}
        - {{path: /get, route: echo, method: GET}}
        - {{path: /paced, route: paced}}
        - {{path: /late, route: late, method: GET}}
        - {{path: /inline, route: inl, inline: "{T}:http_echo"}}
        - {{path: /slowinline, route: slowinl, inline: "{T}:http_sleep"}}
        - {{path: /boom, route: boom, method: GET}}
        - {{path: /sleep, route: sleep, method: GET}}
      limits:
        sleep: {{max_inflight: 2}}
        late: {{max_inflight: 8}}
        paced: {{rate: 0.001, burst: 1}}
      timeout_s: 1.5
      max_body_bytes: {max_body}
      header_timeout_s: 0.5
      keepalive_s: 2
      refusal_pace_ms: 1
      close_after_refusals: 5
    to:
      - {{stage: echo, when: {{route: echo}}}}
      - {{stage: paced, when: {{route: paced}}}}
      - {{stage: late, when: {{route: late}}}}
      - {{stage: inl, when: {{route: inl}}}}
      - {{stage: slowinl, when: {{route: slowinl}}}}
      - {{stage: boom, when: {{route: boom}}}}
      - {{stage: sleep, when: {{route: sleep}}}}
  echo: {{handler: stages.http:Call, params: {{func: "{T}:http_echo"}}, to: respond}}
  paced: {{handler: stages.http:Call, params: {{func: "{T}:http_echo"}}, to: respond}}
  inl: {{handler: stages.http:Call, params: {{func: "{T}:http_echo"}}, to: respond}}
  slowinl: {{handler: stages.http:Call, params: {{func: "{T}:http_sleep"}}, to: respond}}
  boom: {{handler: stages.http:Call, params: {{func: "{T}:http_boom"}}, to: respond}}
  sleep:
    handler: stages.http:Call
    params: {{func: "{T}:http_sleep"}}
    workers: 2
    batch: 1
    to: respond
  late:
    handler: stages.http:Call
    params: {{func: "{T}:http_sleep"}}
    workers: 2
    batch: 1
    to: respond
  respond: {{sink: stages.http:Respond, params: {{port: {port}}}}}
"""
    )
    return path


def read_response(f: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = f.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = f.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, headers, rest[:n]


def ask(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        return read_response(s)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = start_run(topology(tmp_path, port), tmp_path / "w")

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return proc.poll() is not None  # stop waiting if it died

    stages = ("echo", "boom", "sleep", "late", "paced", "inl", "slowinl", "respond")
    try:
        wait_until(up, 30, "the HTTP front end to listen")
        assert proc.poll() is None, "the run ended"
        # the pools start with the run: on a loaded machine, setting them all up can take
        # longer than the topology's timeout_s, which the tests rely on: wait until they are
        wait_until(lambda: all(stage_count(tmp_path / "w", s, "ready") >= 1 for s in stages), 60, "the pools")
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr


def test_routing_and_keep_alive(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(get("/echo?x=1"))
        status, headers, body = read_response(s)
        assert (status, body, headers["x-route"], headers["connection"]) == (200, b"/echo", "echo", "keep-alive")
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        assert read_response(s)[::2] == (200, b"hello")  # the same connection, a second request
        s.sendall(get("/nowhere"))
        assert read_response(s)[0] == 404
        s.sendall(b"POST /boom HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        status, headers, _ = read_response(s)
        assert status == 405 and headers["allow"] == "GET"
        s.sendall(get("/echo", "connection: close\r\n"))
        status, headers, _ = read_response(s)
        assert status == 200 and headers["connection"] == "close"
        assert s.recv(1) == b""  # and it did close


def test_a_failing_handler_is_a_500_naming_no_internals(server: int) -> None:
    status, _, body = ask(server, get("/boom"))
    assert status == 500 and body == b"internal error\n"


def test_a_late_answer_is_a_504(server: int) -> None:
    status, _, body = ask(server, get("/sleep?s=3"))
    assert status == 504 and b"1.5 s" in body


def test_a_request_past_its_deadline_is_not_handled(server: int, tmp_path: Path) -> None:
    """Four requests of 2 s on a route of two workers with timeout_s 1.5: the first two
    run and are answered 504; the two left queued are past their deadline when a worker
    takes them, and are dropped without running (nobody waits for their answer)."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: ask(server, get("/late?s=2"), 30)[0], range(4)))
    assert answers == [504] * 4
    wait_until(lambda: stage_count(tmp_path / "w", "late") == 4, 30, "the four requests to reach the handler")
    assert stage_count(tmp_path / "w", "late", "events_out") == 2


def test_a_cheap_route_is_served_inline_and_a_slow_one_goes_back_to_its_stages(server: int, tmp_path: Path) -> None:
    """/inline is served in the front end's process (its stage never sees a request);
    /slowinline's function takes 20 ms, over inline_max_ms: after the first request its
    route is served by its stages."""
    for _ in range(5):
        status, _, body = ask(server, get("/inline"))
        assert (status, body) == (200, b"/inline")
    for _ in range(3):
        status, _, body = ask(server, get("/slowinline?s=0.02"))
        assert (status, body) == (200, b"slept\n")
    assert ask(server, get("/echo"))[0] == 200
    work = tmp_path / "w"
    wait_until(lambda: stage_count(work, "echo") >= 1 and stage_count(work, "slowinl") == 2, 30, "the counts")
    assert stage_count(work, "inl") == 0


def test_a_client_that_ignores_refusals_is_paced_then_closed(server: int) -> None:
    """/paced admits one request (a token bucket of one, refilled every 1,000 s): a client
    that keeps asking on one connection is refused, paced, and closed at the fifth refusal."""
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(get("/paced"))
        assert read_response(s)[0] in (200, 504)  # admitted (504 only if the machine is very slow)
        for k in range(1, 6):
            s.sendall(get("/paced"))
            status, headers, _ = read_response(s)
            assert (status, headers["connection"]) == (503, "close" if k == 5 else "keep-alive")
        assert s.recv(1) == b""  # closed
    assert ask(server, get("/echo"))[0] == 200  # other clients are served


def test_large_malformed_and_slow_requests(server: int) -> None:
    assert ask(server, b"POST /echo HTTP/1.1\r\ncontent-length: 5000\r\n\r\n")[0] == 413
    assert ask(server, b"GARBAGE\r\n\r\n")[0] == 400
    assert ask(server, b"GET /echo HTTP/9.9\r\n\r\n")[0] == 505
    assert ask(server, b"GET /echo HTTP/1.1\r\nbad header\r\n\r\n")[0] == 400
    assert ask(server, b"POST /echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n")[0] == 411
    assert ask(server, b"GET /echo HTTP/1.1\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n")[0] == 431
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nhost")  # and then nothing more
        assert read_response(s)[0] == 408
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc")  # a body that stops
        assert read_response(s)[0] == 408
    assert ask(server, get("/echo"))[0] == 200  # the server is fine


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl, verbose (the exchange is on stderr), failing the test rather than hanging."""
    return subprocess.run(["curl", "-sS", "-v", *args], capture_output=True, text=True, timeout=20)


def test_http11_as_curl_speaks_it(server: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server}"
    body = tmp_path / "body"
    body.write_bytes(b"x" * 800)
    # Expect: 100-continue is answered (curl would otherwise wait 30 s, past the timeout)
    r = curl("-H", "Expect: 100-continue", "--expect100-timeout", "30", "--data-binary", f"@{body}", f"{url}/echo")
    assert r.returncode == 0 and r.stdout == "x" * 800, r.stderr
    assert "< HTTP/1.1 100 Continue" in r.stderr
    # ... and a body over the limit is refused before it is sent
    body.write_bytes(b"x" * 5000)
    r = curl("--expect100-timeout", "30", "-H", "Expect: 100-continue", "--data-binary", f"@{body}", f"{url}/echo")
    assert "< HTTP/1.1 413" in r.stderr and "100 Continue" not in r.stderr, r.stderr
    r = curl("-H", "Expect: teapot", f"{url}/echo")
    assert "< HTTP/1.1 417" in r.stderr
    # HEAD works where GET does: the head, with the body's length, and no body
    r = curl("-I", f"{url}/get")
    assert "< HTTP/1.1 200" in r.stderr and "< content-length: 4" in r.stderr and "x-route: echo" in r.stdout
    # the absolute form of the request target (what a client sends to a proxy)
    r = curl("--request-target", f"{url}/echo?x=1", f"{url}/")
    assert r.returncode == 0 and r.stdout == "/echo", r.stderr


def test_a_reply_channel_belongs_to_its_run(tmp_path: Path) -> None:
    """Two services on one port (two addresses) each get their own replies, a body larger
    than an event can carry is refused up front whatever max_body_bytes says, and no
    reply socket is left behind."""
    port = free_port()
    runs = []
    for host in ("127.0.0.1", "127.0.0.2"):
        d = tmp_path / host
        d.mkdir()
        runs.append(start_run(topology(d, port, host=host, max_body=64 << 20), d / "w"))
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            wait_until(lambda h=host: _listening(port, h), 30, f"the front end on {host}")
            url = f"http://{host}:{port}/echo"
            wait_until(lambda u=url: curl(u).stdout == "/echo", 60, f"{host} to answer")  # pools started
        for _ in range(20):
            for host in ("127.0.0.1", "127.0.0.2"):
                r = curl(f"http://{host}:{port}/echo?from={host}", "-H", f"x-host: {host}")
                assert r.returncode == 0 and r.stdout == "/echo", r.stderr
        big = tmp_path / "big"
        big.write_bytes(b"x" * (17 << 20))
        r = curl("--expect100-timeout", "30", "--data-binary", f"@{big}", f"http://127.0.0.1:{port}/echo")
        assert "< HTTP/1.1 413" in r.stderr and "100 Continue" not in r.stderr, r.stderr[-2000:]
    finally:
        for proc in runs:
            proc.send_signal(signal.SIGINT)
        for proc in runs:
            _, stderr = proc.communicate(timeout=30)
            assert proc.returncode == 130, stderr
    sockets = Path(tempfile.gettempdir()) / f"sedamp-http-{os.getuid()}"
    assert not list(sockets.glob(f"{port}*.sock"))
    dead = [p for h in ("127.0.0.1", "127.0.0.2") for p in (tmp_path / h / "w").rglob("dead-letters.jsonl")]
    assert not [p for p in dead if p.stat().st_size], "nothing was dead-lettered"


def test_overload_gets_explicit_answers_and_nothing_hangs(server: int) -> None:
    """Far more concurrent requests than the route admits: each one is answered, 200 or
    503 with Retry-After, and none is left hanging."""

    def one(_: int) -> tuple[int, dict[str, str]]:
        status, headers, _ = ask(server, get("/sleep?s=0.2"), timeout=30)
        return status, headers

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(48)))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1
    assert all(h.get("retry-after") == "1" for s, h in results if s == 503)
    # the cheap route was never refused meanwhile
    assert ask(server, get("/echo"))[0] == 200


def test_ctrl_c_answers_what_is_in_flight(tmp_path: Path) -> None:
    port = free_port()
    proc = start_run(topology(tmp_path, port), tmp_path / "w")
    try:
        wait_until(lambda: _listening(port), 30, "the front end")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            fut = pool.submit(ask, port, get("/sleep?s=1"), 30)
            wait_until(lambda: stage_count(tmp_path / "w", "sleep", "queue", "leased") > 0, 30, "the request inside its handler")
            proc.send_signal(signal.SIGINT)
            status, _, body = fut.result()
        assert (status, body) == (200, b"slept\n")
    finally:
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr


def test_ctrl_c_answers_requests_the_front_end_took_but_never_sent(tmp_path: Path) -> None:
    """A full queue holds the front end back, so requests it admitted wait in it, never
    read by the run. On Ctrl-C they are refused at once (503, Retry-After) while what the
    stage holds is finished: no request waits out timeout_s for a 504, and the run does
    not miss its drain deadline waiting for them (it did, under wrk at 512 connections)."""
    port = free_port()
    topo = tmp_path / "full.yaml"
    topo.write_text(
        f"""name: full
stages:
  http:
    source: stages.http:HttpFrontend
    params:
      port: {port}
      routes: [{{path: /sleep, route: sleep, method: GET}}]
      limits: {{sleep: {{max_inflight: 16}}}}
      timeout_s: 8
    to: sleep
  sleep:
    handler: stages.http:Call
    params: {{func: "{T}:http_sleep"}}
    workers: 1
    batch: 1
    queue: {{capacity: 2}}
    to: respond
  respond: {{sink: stages.http:Respond, params: {{port: {port}}}}}
"""
    )
    proc = start_run(topo, tmp_path / "w")
    try:
        wait_until(lambda: _listening(port), 30, "the front end")
        wait_until(lambda: stage_count(tmp_path / "w", "sleep", "ready") >= 1, 60, "the pool")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            queue = lambda key: stage_count(tmp_path / "w", "sleep", "queue", key)  # noqa: E731
            # The worker is held 3 s by the first request: long enough, on a loaded
            # machine too, for what follows to be set up and interrupted within it (with
            # 1 s, a slow machine let the first end first: the run then read the rest).
            first = [pool.submit(ask, port, get("/sleep?s=3"), 30)]
            wait_until(lambda: queue("leased") >= 1, 30, "the worker holding the first")
            first += [pool.submit(ask, port, get("/sleep?s=0.1"), 30) for _ in range(2)]
            wait_until(lambda: queue("leased") >= 2 and queue("credit") == 0, 30, "the worker holding two, no credit")
            time.sleep(0.2)  # the third is held in the front end: what comes next waits in it, unread
            second = [pool.submit(ask, port, get("/sleep?s=0.1"), 30) for _ in range(4)]
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            statuses = [f.result()[0] if f.exception() is None else repr(f.exception()) for f in first + second]
            answered_in = time.monotonic() - t0
        _, stderr = proc.communicate(timeout=30)
        ended_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    assert "did not drain" not in stderr, stderr
    assert 504 not in statuses and statuses.count(200) >= 1 and statuses.count(503) >= 1, (statuses, stderr)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[:3] == [200, 200, 200], statuses  # what the run had read is finished
    assert answered_in < 6 and ended_in < 7, (answered_in, ended_in)


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_load_generator_against_the_server(server: int) -> None:
    import json as _json

    for mode in (["--clients", "4", "--think-ms", "5"], ["--rate", "50"]):
        r = subprocess.run(
            [
                sys.executable,
                "scripts/loadgen.py",
                "--port",
                str(server),
                "--path",
                "/echo",
                "--duration",
                "1",
                "--json",
                *mode,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        out = _json.loads(r.stdout)
        assert out["answered"] > 10 and out["statuses"] == {"200": out["answered"]}
        assert out["timeouts"] == 0 and out["errors"] == 0
        assert out["latency_ms"]["p50"] <= out["latency_ms"]["p99"] <= out["latency_ms"]["max"]
        if "--clients" in mode:
            assert out["per_client"]["min"] > 0 and 0.5 < out["per_client"]["jain"] <= 1.0


def test_the_load_generators_warm_up_is_not_counted(server: int) -> None:
    """Open loop at 40/s: a 1 s warm-up, then 1 s measured. About 40 requests count, not 80."""
    import json as _json

    r = subprocess.run(
        [sys.executable, "scripts/loadgen.py", "--port", str(server), "--path", "/echo", "--rate", "40",
         "--warmup", "1", "--duration", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = _json.loads(r.stdout)
    assert 36 <= out["answered"] <= 46, out
    assert out["statuses"] == {"200": out["answered"]} and out["timeouts"] == out["errors"] == 0


def test_loadgen_statistics() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("loadgen", REPO / "scripts" / "loadgen.py")
    assert spec is not None and spec.loader is not None
    lg = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = lg  # dataclasses look their module up there
    spec.loader.exec_module(lg)
    assert lg.jain([5, 5, 5, 5]) == 1.0
    assert abs(lg.jain([10, 0, 0, 0]) - 0.25) < 1e-9  # one client of four got everything
    assert lg.percentile(list(range(1, 101)), 0.9) == 90
    assert lg.percentile([], 0.5) is None
    r = subprocess.run(
        [sys.executable, "scripts/loadgen.py", "--host", "10.1.2.3", "--port", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "only targets loopback" in r.stderr


def test_the_http_service_example(tmp_path: Path) -> None:
    """topologies/http-service.yaml: each endpoint answers, then Ctrl-C ends the run."""
    import io
    import os

    from PIL import Image

    from tests.integration.util import TOPOLOGIES

    port = free_port()
    proc = subprocess.Popen(
        sedamp_cmd("run", str(TOPOLOGIES / "http-service.yaml"), "--workdir", str(tmp_path / "w"), "--json"),
        cwd=REPO,
        env={**os.environ, "PORT": str(port), "HTTP_DEMO_WORK_ITERATIONS": "1000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _listening(port) or proc.poll() is not None, 60, "the example to listen")
        assert proc.poll() is None
        assert ask(port, get("/hello"))[::2] == (200, b"hello\n")
        status, headers, body = ask(port, get("/work"))
        assert status == 200 and headers["content-type"] == "application/json" and b"result" in body
        image = io.BytesIO()
        Image.new("RGB", (640, 480), (10, 200, 30)).save(image, "PNG")
        png = image.getvalue()
        status, headers, body = ask(port, b"POST /thumbnail HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % len(png) + png)
        assert status == 200 and headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(body))
        assert thumb.size == (128, 96) and thumb.getpixel((64, 48))[1] > 150  # green, scaled to fit
        assert ask(port, b"POST /thumbnail HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc")[0] == 400
        assert ask(port, get("/thumbnail"))[0] == 405
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr


def test_the_run_says_where_it_listens_and_what_it_served(tmp_path: Path) -> None:
    """Nothing said where the service listened (with port 0, nothing could tell), nor,
    at the end, what it had served."""
    import json
    import re

    work, err_path, metrics = tmp_path / "w", tmp_path / "stderr.txt", tmp_path / "m.jsonl"
    with open(err_path, "w") as err:  # the run keeps its own copy of the descriptor
        proc = subprocess.Popen(
            sedamp_cmd("run", str(topology(tmp_path, 0)), "--workdir", str(work), "--metrics", str(metrics)),
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        line = wait_until(
            lambda: re.search(r"sedamp: listening on (http://127\.0\.0\.1:(\d+)) \(stage http\)\n", err_path.read_text())
            or proc.poll() is not None,
            30,
            "the line saying where the front end listens",
        )
        assert proc.poll() is None, err_path.read_text()
        url, port = line.group(1), int(line.group(2))
        assert port != 0
        wait_until(lambda: all(stage_count(work, s, "ready") >= 1 for s in ("echo", "boom", "respond")), 60, "the pools")
        assert [ask(port, get(path))[0] for path in ("/get", "/get", "/nope", "/boom")] == [200, 200, 404, 500]
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    stderr = err_path.read_text()
    assert proc.returncode == 130, stderr
    assert stderr.count("listening on") == 1
    assert "http: answered 4 requests (200: 2, 404: 1, 500: 1)" in stdout.splitlines()
    final = json.loads(metrics.read_text().splitlines()[-1])
    assert final["stages"]["http"]["stats"] == {"listening": url, "answered": {"200": 2, "404": 1, "500": 1}}
