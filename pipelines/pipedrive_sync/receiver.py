"""The HTTP endpoint Pipedrive delivers webhooks to, and `/healthz`.

* `POST <path>` (the path of `--public-url`, `/` without one): HTTP Basic auth required (401
  otherwise), a body of at most 1 MiB (413) that is a webhooks v2 event (400 otherwise, one
  line saying why); the event is handed to `accept`, which answers only once it is journaled.
* `GET /healthz` (no auth): `health()`'s status and JSON (503 until the listener is ready).
* Anything else: 404, or 405 with a JSON body (logged as refused). No request ever gets a
  traceback; the server stays up.

A thread per request (the standard library's `ThreadingHTTPServer`); `stop()` closes the
socket first (new deliveries are refused, and Pipedrive retries them later), then waits a
moment for requests already inside to finish journaling.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

from sources.pipedrive.events import InvalidEvent

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB
HEALTH_PATH = "/healthz"
REQUEST_TIMEOUT = 5.0  # seconds a client may take to send its request


@dataclass(frozen=True)
class Answer:
    """What the receiver answers a delivery."""

    status: int
    body: dict[str, Any]


Accept = Callable[[bytes], Answer]  # a delivery's body → the answer (raises InvalidEvent)
Health = Callable[[], tuple[int, dict[str, Any]]]
Refused = Callable[[int, str, str], None]  # status, reason, client address


class Receiver:
    """The webhook endpoint on `host:port` (port 0: any free port, see `port`)."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        credentials: tuple[str, str],
        accept: Accept,
        health: Health,
        refused: Refused | None = None,
    ) -> None:
        self.path = path or "/"
        self._expected = _basic(*credentials)
        self.accept = accept
        self.health = health
        self.refused = refused or (lambda status, reason, client: None)
        self._inflight = 0
        self._idle = threading.Condition()
        self._server = _Server((host, port), _Handler)
        self._server.receiver = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="pipedrive-webhooks",
            daemon=True,
        )
        self._thread.start()

    def stop(self, wait: float = 3.0) -> None:
        """Stop accepting, then give requests under way up to `wait` seconds to finish."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        deadline = time.monotonic() + wait
        with self._idle:
            while self._inflight and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))

    def authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), self._expected)

    def enter(self) -> None:
        with self._idle:
            self._inflight += 1

    def leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hung up mid-request: nothing to report, never a traceback
        logger.debug("webhook request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "pipedrive-sync"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("webhook request: " + format, *args)

    @property
    def receiver(self) -> Receiver:
        return self.server.receiver

    def _target(self) -> str:
        return urlsplit(self.path).path or "/"

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        content = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def _refuse(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        self.close_connection = True
        self.receiver.refused(status, reason, self.client_address[0])
        self._send(status, {"error": reason}, headers)

    def do_GET(self) -> None:
        target = self._target()
        if target == HEALTH_PATH:
            status, body = self.receiver.health()
            self._send(status, body)
        elif target == self.receiver.path:
            self._not_allowed()
        else:
            self._send(404, {"error": "not found"})

    def _not_allowed(self) -> None:
        self._refuse(
            405, f"{self.command} is not accepted: webhook events are POSTed", {"Allow": "POST"}
        )

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def do_POST(self) -> None:
        if self._target() != self.receiver.path:
            self._refuse(404, f"no webhook endpoint at {self._target()}")
            return
        if not self.receiver.authorized(self.headers.get("Authorization")):
            self._refuse(
                401,
                "wrong or missing credentials",
                {"WWW-Authenticate": 'Basic realm="pipedrive-sync", charset="UTF-8"'},
            )
            return
        body = self._body()
        if body is None:
            return
        self.receiver.enter()
        try:
            answer = self.receiver.accept(body)
        except InvalidEvent as exc:
            self._refuse(400, str(exc))
            return
        except OSError as exc:  # the journal could not be written: Pipedrive retries later
            self.receiver.refused(
                503, f"the event could not be journaled ({exc})", self.client_address[0]
            )
            self._send(503, {"error": "the event could not be stored; retry later"})
            return
        finally:
            self.receiver.leave()
        self._send(answer.status, answer.body)

    def _body(self) -> bytes | None:
        """The request body, or None once the request was refused."""
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(400, "a Content-Length header is required")
            return None
        if length > MAX_BODY:
            self._refuse(413, f"the body is larger than {MAX_BODY} bytes")
            return None
        try:
            body = self.rfile.read(length)
        except (TimeoutError, OSError):
            self.close_connection = True
            return None
        if len(body) < length:
            self._refuse(400, "the body is shorter than its Content-Length")
            return None
        return body
