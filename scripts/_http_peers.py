"""The designs sedamp's HTTP front end is compared with, serving the same handler code
(``stages.http_demo``): a WSGI app for gunicorn's prefork sync workers (the Apache-style
design: one request per process at a time), and a single-process asyncio server that
runs the handler inline (the event-driven design).

    gunicorn -w 2 -k sync -b 127.0.0.1:8081 scripts._http_peers:wsgi
    python scripts/_http_peers.py asyncio --port 8082
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages import http_demo  # noqa: E402
from stages.http.protocol import parse_head as _parse_head  # noqa: E402

ROUTES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "/hello": http_demo.hello,
    "/work": http_demo.work,
    "/thumbnail": http_demo.thumbnail,
}


def _render(result: Any) -> tuple[int, str, bytes]:
    if isinstance(result, dict) and ("status" in result or "body" in result):
        status = int(result.get("status", 200))
        ctype = (result.get("headers") or {}).get("content-type", "")
        body = result.get("body", b"")
    else:
        status, ctype, body = 200, "", result
    if isinstance(body, str):
        return status, ctype or "text/plain; charset=utf-8", body.encode()
    if isinstance(body, bytes | bytearray):
        return status, ctype or "application/octet-stream", bytes(body)
    return status, "application/json", json.dumps(body).encode()


def handle(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
    func = ROUTES.get(path)
    if func is None:
        return 404, "text/plain", b"not found\n"
    try:
        return _render(func({"method": method, "path": path, "query": query, "body": body, "headers": {}}))
    except Exception:
        return 500, "text/plain", b"internal error\n"


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    status, ctype, out = handle(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""), body)
    start_response(f"{status} X", [("content-type", ctype), ("content-length", str(len(out)))])
    return [out]


async def _conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, version, headers = _parse_head(head)
            n = int(headers.get("content-length", "0"))
            body = await reader.readexactly(n) if n else b""
            path, _, query = target.partition("?")
            status, ctype, out = handle(method, path, query, body)  # inline: the loop waits
            close = headers.get("connection", "").lower() == "close"
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(out)}\r\n"
                f"connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                + out
            )
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _serve(port: int) -> None:
    server = await asyncio.start_server(_conn, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("design", choices=["asyncio"])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        asyncio.run(_serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
