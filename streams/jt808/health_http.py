"""``/metrics`` and ``/healthz`` of the gateway, served on its own event loop (no extra thread).

``/healthz`` answers 200 ``{"status": "ok", ...}`` or 503 ``{"status": "degraded", "reasons": [...]}`` — not
accepting (connections or descriptors exhausted), reads paused (buffer full) or Kafka unreachable — so a
TCP load balancer can steer new terminals to another gateway.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

MAX_REQUEST = 8192


async def start_health_server(host: str, port: int, health: Callable[[], tuple[str, list[str]]],
                              details: Callable[[], dict] | None = None):
    """``details()``, when given, adds fields to every ``/healthz`` answer (the gateway: its front end)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
        if path.startswith(b"/healthz"):
            status, reasons = health()
            body = orjson.dumps({"status": status, "reasons": reasons, **(details() if details else {})})
            code, ctype = ("200 OK" if status == "ok" else "503 Service Unavailable"), "application/json"
        elif path.startswith(b"/metrics"):
            body, code, ctype = generate_latest(), "200 OK", CONTENT_TYPE_LATEST
        else:
            body, code, ctype = b"not found\n", "404 Not Found", "text/plain"
        writer.write(f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST)
