"""The HTTP side of the loopback API fakes: each request to `api.handle(method, path, query, raw)`, answered
as JSON; an ApiError becomes Google's JSON error format (the client library raises the matching exception)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class ApiError(Exception):
    """An error answer in Google's JSON error format."""

    STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or self.STATUS.get(code, "UNAVAILABLE" if code == 503 else "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


class JsonApiHandler(BaseHTTPRequestHandler):
    api: Any  # has handle(method, path, query, raw) -> dict

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._answer("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: ",".join(values) for key, values in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            status, payload = 200, self.api.handle(method, unquote(url.path), query, raw)
        except ApiError as exc:
            status, payload = exc.code, exc.body()
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass
