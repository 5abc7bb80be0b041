"""HTTP plumbing of the fake: the threaded server, request records, fault rules, limits."""

from __future__ import annotations

import contextlib
import math
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .fake import FakePipedrive

FAULT_KINDS = ("status", "html", "malformed", "drop", "stall", "rate_limit", "body", "bom")

ERROR_INFO = "Please check developers.pipedrive.com"
UNAUTHORIZED_BODY = orjson.dumps(
    {
        "success": False,
        "error": "unauthorized access",
        "errorCode": 401,
        "error_info": ERROR_INFO,
    }
)
MAINTENANCE_HTML = (
    b"<!DOCTYPE html><html><head><title>Pipedrive</title></head>"
    b"<body><h1>We'll be back soon</h1><p>Pipedrive is under maintenance.</p></body></html>"
)


@dataclass
class FaultRule:
    """Make matching requests misbehave.

    path: regex searched in the request path (e.g. r"/api/v2/deals$", r"leads").
    kind: status | html | malformed | drop | stall | rate_limit | body | bom
      status      answer `status` (default 500) with `body` (default a JSON error; a body that
                  starts with "<" is sent as text/html)
      html        200 with an HTML page instead of JSON
      malformed   200 with the real JSON cut in half (or `body`, cut in half)
      drop        close the connection without answering
      stall       sleep `delay` seconds, then answer normally (client read timeouts)
      rate_limit  429 with Retry-After = `retry_after`
      body        200 with `body` as given (bytes/str sent raw, dict/list as JSON)
      bom         the real answer with a UTF-8 byte order mark before the JSON
    after: let the first `after` matching requests through untouched.
    times: how many matching requests to affect after that (None: all of them).
    """

    path: str = ".*"
    kind: str = "status"
    times: int | None = 1
    after: int = 0
    status: int | None = None
    body: Any = None
    delay: float = 0.0
    retry_after: float = 1
    content_type: str | None = None
    seen: int = field(default=0, init=False)  # matching requests so far
    fired: int = field(default=0, init=False)  # requests this rule affected

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        self._re = re.compile(self.path)

    def take(self, path: str) -> bool:
        """Count a request; True when this rule affects it."""
        if not self._re.search(path):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass
class RequestRecord:
    """One request as the fake saw it."""

    n: int
    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value of each parameter
    raw_query: str
    headers: dict[str, str]  # lower-cased names
    token_valid: bool  # a valid x-api-token header was sent
    token_in_url: bool  # the token (or any api_token parameter) appeared in the URL
    status: int | None = None  # None: no answer (dropped) or not answered yet
    fault: str | None = None
    cost: int = 0  # tokens charged against the daily budget
    started: float = 0.0  # time.monotonic()
    # the credential that authenticated the request ("api_token": x-api-token header or
    # api_token parameter; "bearer": an OAuth access token), or the one presented when it
    # failed; None: none was presented (and /oauth/token requests)
    auth: str | None = None
    body: bytes = b""  # the request body (POST /oauth/token's form)

    @property
    def api(self) -> str | None:
        if self.path.startswith("/api/v2/"):
            return "v2"
        if self.path.startswith("/v1/"):
            return "v1"
        return None

    @property
    def endpoint(self) -> str:
        """The path without its API prefix, e.g. "deals/archived"."""
        return self.path.removeprefix("/api/v2/").removeprefix("/v1/")


@dataclass
class Restriction:
    """A plan or permission restriction: matching paths answer `status` (402 or 403)."""

    path: str
    status: int = 402
    message: str | None = None

    def __post_init__(self) -> None:
        if self.status not in (402, 403):
            raise ValueError("a restriction answers 402 (plan) or 403 (permission)")
        self._re = re.compile(self.path)

    def matches(self, path: str) -> bool:
        return bool(self._re.search(path))

    def response(self) -> Response:
        if self.message is not None:
            message = self.message
        elif self.status == 402:
            message = "Payment required: this feature is not available on your company's plan"
        else:
            message = "Forbidden: you do not have permission to access this resource"
        return json_error(self.status, message)


@dataclass
class Response:
    status: int
    body: bytes | list[bytes] = b""  # a list is joined once, together with the headers
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False

    @property
    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else b"".join(self.body)


def json_error(status: int, message: str, code: str | None = None) -> Response:
    body: dict[str, Any] = {"success": False, "error": message}
    if code is not None:
        body["code"] = code
    body.update(errorCode=status, error_info=ERROR_INFO, data=None, additional_data=None)
    return Response(status, orjson.dumps(body))


def fault_body(value: Any) -> tuple[bytes, str]:
    if value is None:
        return b"", "application/json"
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        raw = value.encode()
    else:
        raw = orjson.dumps(value)
    ctype = "text/html; charset=utf-8" if raw.lstrip()[:1] == b"<" else "application/json"
    return raw, ctype


class RateWindow:
    """Burst limit per 2-second window (wall clock) and the x-ratelimit-* headers."""

    WINDOW = 2.0

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._start = time.monotonic()
        self._count = 0
        self._lock = threading.Lock()

    def hit(self) -> tuple[bool, list[tuple[str, str]], int]:
        """Count one request: (over the limit?, headers, seconds until the window resets)."""
        with self._lock:
            now = time.monotonic()
            if now - self._start >= self.WINDOW:
                self._start = now
                self._count = 0
            self._count += 1
            limit = self.limit if self.limit is not None else 1_000_000
            remaining = max(0, limit - self._count)
            reset = max(1, math.ceil(self._start + self.WINDOW - now))
            over = self.limit is not None and self._count > self.limit
        headers = [
            ("x-ratelimit-limit", str(limit)),
            ("x-ratelimit-remaining", str(remaining)),
            ("x-ratelimit-reset", str(reset)),
        ]
        return over, headers, reset

    def reset(self) -> None:
        with self._lock:
            self._start = time.monotonic()
            self._count = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakePipedrive

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def close_connections(self) -> None:
        """Hang up on every client (kept-alive connections would otherwise outlive stop())."""
        with self.connections_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return  # a client that went away (timeouts, dropped connections)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakePipedrive/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        fake = self.server.fake
        self.body = b""
        if self.command != "GET":
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.body = self.rfile.read(length)
        try:
            response = fake._handle(self)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500, say so loudly
            traceback.print_exc()
            response = json_error(500, f"fake server error: {exc!r}")
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(response)

    def _write(self, r: Response) -> None:
        reason = HTTPStatus(r.status).phrase if r.status in HTTPStatus._value2member_map_ else "X"
        lines = [f"HTTP/1.1 {r.status} {reason}", f"Content-Type: {r.content_type}"]
        lines += [f"{k}: {v}" for k, v in r.headers]
        chunks = [r.body] if isinstance(r.body, bytes) else r.body
        lines.append(f"Content-Length: {sum(len(c) for c in chunks)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(b"".join([head, *chunks]))
        except OSError:
            self.close_connection = True

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch


def make_server(fake: FakePipedrive, host: str, port: int) -> _Server:
    server = _Server((host, port), _Handler)
    server.fake = fake
    return server
