"""The embedded weighted router: one stable URL per serving service, split across revisions by weight.

- `POST /v1/models/<model>:predict` goes to one revision, picked by weight (smooth weighted
  round robin: the split is what it says over any window, not on average) among
  the revisions that are ready; a revision that is not ready (or has 0%) gets nothing, and
  its share goes to the others, so stable requests never fail because a canary does.
- `POST /revisions/<revision>/v1/models/<model>:predict` reaches exactly that revision:
  the embedded equivalent of a Cloud Run tag URL (smoke tests, synthetic traffic).
- Every answer is recorded per revision with its status class and latency, and
  `figures(revision, since, until)` reads them for a canary analysis window. 4xx are
  client errors, kept apart (a bad request is never held against a canary); a revision
  that cannot be reached answers 502 and counts as its server error.
- Bodies are read up to the limit only: a longer one is a 413, an empty one a 400, both
  before any revision is chosen.

A raw ASGI app (no framework per request: the router's overhead is a budgeted figure),
forwarding over pooled keep-alive connections, each request one write (Upstream).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from . import RevisionFigures

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PREDICT = re.compile(r"^(?:/revisions/(?P<revision>[a-z][a-z0-9-]{0,62}))?(?P<path>/v1/models/[^/]+:predict)$")
PASSED_HEADERS = (b"content-type", b"ctflow-model-version", b"ctflow-revision")
SAMPLES_KEPT = 200_000  # per revision: about an hour at 50 requests/s, enough for any analysis window


@dataclass(frozen=True)
class Sample:
    at: float
    status: int
    latency_ms: float


class RevisionStats:
    """A revision's recent answers, oldest first (appended from the router's loop, read from the deployer)."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque(maxlen=SAMPLES_KEPT)
        self._lock = threading.Lock()

    def record(self, status: int, latency_ms: float) -> None:
        with self._lock:
            self._samples.append(Sample(time.time(), status, latency_ms))

    def figures(self, since: float, until: float) -> RevisionFigures:
        with self._lock:
            window = [s for s in self._samples if since <= s.at < until]
        judged = [s for s in window if not 400 <= s.status < 500]
        latencies = sorted(s.latency_ms for s in judged)
        return RevisionFigures(
            requests=len(judged),
            server_errors=sum(1 for s in judged if s.status >= 500),
            client_errors=len(window) - len(judged),
            p95_ms=percentile(latencies, 0.95),
        )


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return round(ordered[rank - 1], 3)


class Router:
    def __init__(self, *, max_body_bytes: int = 2 * 1024 * 1024, timeout_seconds: float = 30.0) -> None:
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._backends: dict[str, str] = {}  # revision -> its server's base URL
        self._weights: dict[str, int] = {}
        self._ready: set[str] = set()
        self._credit: dict[str, int] = {}  # smooth weighted round robin's running credit per revision
        self.stats: dict[str, RevisionStats] = {}
        self._pools: dict[tuple[str, int], Upstream] = {}

    # ---- what the embedded serving backend changes ------------------------------------------

    def add(self, revision: str, base_url: str) -> None:
        with self._lock:
            self._backends[revision] = base_url.rstrip("/")
            self.stats.setdefault(revision, RevisionStats())

    def remove(self, revision: str) -> None:
        with self._lock:
            self._backends.pop(revision, None)
            self._weights.pop(revision, None)
            self._ready.discard(revision)

    def set_ready(self, revision: str, ready: bool) -> None:
        with self._lock:
            (self._ready.add if ready else self._ready.discard)(revision)

    def set_weights(self, weights: dict[str, int]) -> None:
        with self._lock:
            self._weights = {rev: pct for rev, pct in weights.items() if pct > 0}
            self._credit = {}

    def weights(self) -> dict[str, int]:
        with self._lock:
            return dict(self._weights)

    def figures(self, revision: str, since: float, until: float) -> RevisionFigures:
        stats = self.stats.get(revision)
        return stats.figures(since, until) if stats else RevisionFigures(0, 0, 0, None)

    def pick(self) -> str | None:
        """A ready revision by weight; None when no revision with traffic is ready.

        Smooth weighted round robin (nginx's): over any run of requests each revision's share is within one
        request of its weight, so a 10% canary gets 10% of a window's requests, not 10% on average.
        """
        with self._lock:
            live = {rev: pct for rev, pct in self._weights.items() if rev in self._ready and rev in self._backends}
            if not live:
                return None
            total = sum(live.values())
            for rev, pct in live.items():
                self._credit[rev] = self._credit.get(rev, 0) + pct
            chosen = max(live, key=lambda rev: self._credit[rev])
            self._credit[chosen] -= total
            return chosen

    # ---- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method == "GET":
            await _answer(send, 200, {"status": "ok", "weights": self.weights(), "ready": sorted(self._ready)})
            return
        match = PREDICT.match(path)
        if match is None or method != "POST":
            await _answer(send, 404, {"error": "POST /v1/models/<model>:predict is the only route"})
            return
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            await _answer(send, 413, {"error": f"the body is larger than {self.max_body_bytes} bytes"})
            return
        if not body.strip():
            await _answer(send, 400, {"error": 'the body is empty; send {"instances": [...]}'})
            return
        revision = match["revision"] or self.pick()
        base = self._backends.get(revision) if revision else None
        if revision is None or base is None:
            await _answer(send, 503, {"error": "no revision of this service is ready"})
            return
        await self._forward(send, revision, base + match["path"], body)

    async def _forward(self, send: Send, revision: str, url: str, body: bytes) -> None:
        started = time.perf_counter()
        try:
            status, headers, content = await self._upstream(url).post(url, body, self.timeout_seconds)
        except (TimeoutError, OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            status, headers = 502, [(b"content-type", b"application/json")]
            content = json.dumps({"error": f"revision {revision} did not answer: {type(exc).__name__}"}).encode()
        latency_ms = (time.perf_counter() - started) * 1000
        self.stats[revision].record(status, latency_ms)
        if not any(name == b"ctflow-revision" for name, _ in headers):  # a model that failed sets no headers
            headers.append((b"ctflow-revision", revision.encode()))
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _upstream(self, url: str) -> Upstream:
        """The connection pool to a revision's server, one per server and event loop."""
        key = (url.split("/", 3)[2], id(asyncio.get_running_loop()))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Upstream(key[0])
        return pool

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for pool in self._pools.values():
                    pool.close()
                self._pools.clear()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Upstream:
    """Keep-alive HTTP/1.1 connections to one revision's server (TorchServe), each request written in one send.

    httpx wrote a request's head and body in two sends: with Nagle's algorithm on one side and
    delayed ACKs on the other, each forwarded prediction waited ~40 ms. Here a request is one
    buffer on a TCP_NODELAY socket, answers are read by Content-Length (or chunked), and a
    connection the server closed while idle is replaced once before the request counts as failed.
    """

    def __init__(self, netloc: str) -> None:
        host, _, port = netloc.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, url: str, body: bytes, timeout: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path = "/" + url.split("/", 3)[3]
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        for attempt in (0, 1):
            reused = bool(self._idle)
            reader, writer = self._idle.pop() if reused else await self._connect()
            try:
                writer.write(head + body)
                answer = await asyncio.wait_for(_read_answer(reader), timeout)
            except (OSError, EOFError, asyncio.IncompleteReadError):
                writer.close()
                if reused and attempt == 0:
                    continue  # closed while idle: once more on a fresh connection
                raise
            except BaseException:
                writer.close()
                raise
            status, headers, content, keep = answer
            if keep:
                self._idle.append((reader, writer))
            else:
                writer.close()
            return status, headers, content
        raise EOFError("no answer")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        import socket

        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """(status, the headers passed on, body, whether the connection stays open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, keep = 0, False, True
    passed: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.lower() != b"close"
        if name in PASSED_HEADERS:
            passed.append((name, value))
    if not chunked:
        return status, passed, await reader.readexactly(length), keep
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, passed, b"".join(parts), keep
        parts.append(chunk[:-2])


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The body, or None as soon as it is longer than `limit` (the rest is never read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
