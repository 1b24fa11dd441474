"""HTTP load generator: closed loop (N clients with think time) or open loop (a fixed
arrival rate), bounded in requests and in time, loopback only.

    python scripts/loadgen.py --port 8080 --path /work --clients 64 --think-ms 20 --duration 10
    python scripts/loadgen.py --port 8080 --path /work --rate 300 --duration 10
    python scripts/loadgen.py --port 8080 --path /thumbnail --method POST --body-file photo.jpg --clients 8

Every request is HTTP/1.1 on a kept-alive connection. A closed-loop client sends a
request, waits for the answer, thinks (--think-ms, exponentially distributed as in the
SEDA paper's load generator), and sends the next; after a 503 with Retry-After it waits
that long instead, as a well-behaved client does (--ignore-retry-after: think and
retry at once, the worst case for the server). In open loop, requests start at the
given rate whatever happens to earlier ones, each on an idle connection or a new one.
With --warmup, the load runs that long first and only requests sent after it count, so
a server's controllers can settle at the new load before the measurement starts.

Reports throughput (answers per second), latency percentiles and maximum (of every
answer, and of the 200s alone), status counts, client timeouts and connection errors,
completions per client and Jain's fairness index over them ((sum x)^2 / (n * sum x^2)).
``--json`` prints the same as one JSON object (scripts/bench_http.py reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Results:
    started: float = 0.0  # the measurement starts here (after the warm-up)
    ended: float = 0.0
    latencies: list[float] = field(default_factory=list)  # every answer, seconds
    ok_latencies: list[float] = field(default_factory=list)  # 200s only
    statuses: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    errors: int = 0
    per_client: list[int] = field(default_factory=list)


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def jain(xs: list[int]) -> float | None:
    if not xs or not any(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        r, w = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(r, w)

    async def request(self, raw: bytes) -> tuple[int, bool, float]:
        """Send one request, read its answer; returns (status, connection kept, the
        Retry-After it carried in seconds, 0 if none)."""
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = 0
        keep = True
        retry_after = 0.0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and v.strip().lower() == "close":
                keep = False
            elif k == "retry-after":
                retry_after = float(v.strip() or 0)
        if length:
            await self.reader.readexactly(length)
        return status, keep, retry_after

    def close(self) -> None:
        self.writer.close()


def build_request(method: str, path: str, host: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _timed(conn: Conn, raw: bytes, timeout: float, res: Results) -> tuple[bool, bool, float]:
    """One request; returns (answered and measured, connection usable, Retry-After of a 503).

    Timeouts and connection errors count even during the warm-up: nothing unanswered hides."""
    t0 = time.monotonic()
    measured = t0 >= res.started  # answers to requests sent during the warm-up are not counted
    try:
        status, keep, retry_after = await asyncio.wait_for(conn.request(raw), timeout)
    except TimeoutError:
        res.timeouts += 1
        return False, False, 0.0
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        res.errors += 1
        return False, False, 0.0
    dt = time.monotonic() - t0
    if measured:
        res.latencies.append(dt)
        if status == 200:
            res.ok_latencies.append(dt)
        res.statuses[status] = res.statuses.get(status, 0) + 1
    return measured, keep, retry_after if status == 503 else 0.0


async def closed_loop(args: argparse.Namespace, raws: list[bytes], res: Results) -> None:
    deadline = res.started + args.duration
    budget = [args.requests]
    res.per_client = [0] * args.clients
    rng = random.Random(args.seed)

    async def client(i: int) -> None:
        conn: Conn | None = None
        k = i
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            if conn is None:
                try:
                    conn = await Conn.open(args.host, args.port)
                except OSError:
                    res.errors += 1
                    await asyncio.sleep(0.05)
                    continue
            counted, keep, retry_after = await _timed(conn, raws[k % len(raws)], args.timeout, res)
            k += 1
            if counted:
                res.per_client[i] += 1
            if not keep:
                conn.close()
                conn = None
            pause = 0.0
            if retry_after and not args.ignore_retry_after:
                pause = retry_after
            elif args.think_ms > 0:
                pause = rng.expovariate(1000.0 / args.think_ms)
            if time.monotonic() + pause >= deadline:
                break  # a pause past the end would only stretch the measured time
            await asyncio.sleep(pause)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client(i) for i in range(args.clients)))


async def open_loop(args: argparse.Namespace, raws: list[bytes], res: Results) -> None:
    idle: list[Conn] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(raw: bytes) -> None:
        conn = idle.pop() if idle else None
        if conn is None:
            try:
                conn = await Conn.open(args.host, args.port)
            except OSError:
                res.errors += 1
                return
        _, keep, _ = await _timed(conn, raw, args.timeout, res)
        if keep:
            idle.append(conn)
        else:
            conn.close()

    t0 = res.started - args.warmup
    n = 0
    while n < args.requests and time.monotonic() < res.started + args.duration:
        due = t0 + n / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(raws[n % len(raws)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)
    for c in idle:
        c.close()


def summary(res: Results, args: argparse.Namespace) -> dict[str, Any]:
    wall = res.ended - res.started
    answered = len(res.latencies)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "mode": "open" if args.rate else "closed",
        "clients": args.clients if not args.rate else None,
        "rate": args.rate or None,
        "wall_s": round(wall, 3),
        "answered": answered,
        "throughput": round(answered / wall, 1) if wall > 0 else 0.0,
        "ok_throughput": round(res.statuses.get(200, 0) / wall, 1) if wall > 0 else 0.0,
        "latency_ms": {q: ms(percentile(res.latencies, p)) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
        | {"max": ms(max(res.latencies, default=None) if res.latencies else None)},
        "ok_latency_ms": {
            q: ms(percentile(res.ok_latencies, p)) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }
        | {"max": ms(max(res.ok_latencies) if res.ok_latencies else None)},
        "statuses": {str(k): v for k, v in sorted(res.statuses.items())},
        "timeouts": res.timeouts,
        "errors": res.errors,
        "per_client": {
            "min": min(res.per_client, default=0),
            "max": max(res.per_client, default=0),
            "jain": None if not res.per_client else round(jain(res.per_client) or 0.0, 4),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", action="append", help="request path (repeat to cycle through several)")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--body-file", help="send this file as the body")
    ap.add_argument("--clients", type=int, default=16, help="closed loop: concurrent clients")
    ap.add_argument("--think-ms", type=float, default=20.0, help="closed loop: mean think time")
    ap.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)")
    ap.add_argument("--duration", type=float, default=10.0, help="stop starting requests after this many seconds")
    ap.add_argument(
        "--warmup", type=float, default=0.0, help="run this many seconds first without counting (let the server settle)"
    )
    ap.add_argument("--requests", type=int, default=1_000_000, help="stop after this many requests")
    ap.add_argument("--timeout", type=float, default=30.0, help="a request unanswered this long is a timeout")
    ap.add_argument("--ignore-retry-after", action="store_true", help="closed loop: retry a 503 after the think time")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        ap.error(f"--host {args.host}: this load generator only targets loopback addresses")
    body = open(args.body_file, "rb").read() if args.body_file else b""  # noqa: SIM115
    raws = [build_request(args.method, p, args.host, body) for p in (args.path or ["/"])]
    res = Results(started=time.monotonic() + args.warmup)
    asyncio.run(open_loop(args, raws, res) if args.rate else closed_loop(args, raws, res))
    res.ended = time.monotonic()
    out = summary(res, args)
    if args.json:
        print(json.dumps(out))
    else:
        lat, ok = out["latency_ms"], out["ok_latency_ms"]
        print(f"{out['mode']} loop: {out['answered']} answers in {out['wall_s']} s = {out['throughput']}/s "
              f"({out['ok_throughput']}/s of 200)")  # fmt: skip
        print(f"latency ms (all): p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']}")
        print(f"latency ms (200): p50 {ok['p50']} p90 {ok['p90']} p99 {ok['p99']} max {ok['max']}")
        print(f"statuses {out['statuses']}, timeouts {out['timeouts']}, errors {out['errors']}")
        pc = out["per_client"]
        if args.clients and not args.rate:
            print(f"per client: min {pc['min']} max {pc['max']}, Jain's fairness index {pc['jain']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
