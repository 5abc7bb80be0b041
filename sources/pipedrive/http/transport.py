"""Carrying one request's attempts: sessions, the rate limiter, whole-body reads and waits
that end when the run stops. Shared by the API client and the OAuth token refresh, so both
follow the same `RequestPolicy` (what each attempt leads to)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from .errors import BaseUrlError, RunStopped
from .policy import Decision, RequestPolicy, Retry
from .ratelimit import RateLimiter


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retries and rate-limit behaviour; all configurable (see config/config.toml)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 6  # per request, for 5xx, bad bodies, dropped connections and stalls
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    max_rate_limit_retries: int = 30  # 429s are waited out, but not forever
    max_rate_limit_wait: float = 120.0  # a longer wait than this means the daily budget is spent
    ratelimit_reserve: int = 1
    page_limit: int = 500
    prefetch: int = 4  # pages fetched ahead while the previous one is processed; lists in flight
    decode_threads: int = 2  # pages parsed at once (the parse releases the GIL)


@dataclass
class EndpointStats:
    requests: int = 0
    tokens: int = 0
    rows: int = 0


@dataclass
class RequestMetrics:
    """Counters for the run summary; shared by every thread."""

    by_label: dict[str, EndpointStats] = field(default_factory=dict)
    retries: int = 0
    rate_limited: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # label → what is being retried
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, label: str, tokens: int, rows: int = 0) -> None:
        with self._lock:
            stats = self.by_label.setdefault(label, EndpointStats())
            stats.requests += 1
            stats.tokens += tokens
            stats.rows += rows

    def add_rows(self, label: str, rows: int) -> None:
        with self._lock:
            self.by_label.setdefault(label, EndpointStats()).rows += rows

    def note_retry(self, rate_limited: bool = False, label: str = "", why: str = "") -> None:
        """Count a retry; `why` (one line, no secrets) is what is failing, for progress views."""
        with self._lock:
            if rate_limited:
                self.rate_limited += 1
            else:
                self.retries += 1
            if why:
                self.problems[label] = why

    def note_answered(self, label: str) -> None:
        """A request of `label` succeeded: whatever failed for it before is over."""
        if label in self.problems:
            with self._lock:
                self.problems.pop(label, None)

    @property
    def problem(self) -> str | None:
        """The latest failure still being retried, if any (safe to call from any thread)."""
        problems = list(self.problems.items())
        return f"{problems[-1][0]}: {problems[-1][1]}" if problems else None

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.by_label.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.by_label.values())


def _read_body(response: requests.Response) -> None:
    """Read the whole body in one call: requests reads 10 KB chunks, which for a 2 MB page
    costs more CPU than the socket reads themselves."""
    try:
        response._content = response.raw.read(decode_content=True)
    except urllib3.exceptions.HTTPError as exc:
        response.close()  # a half-read connection is not reused
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            raise requests.Timeout(str(exc)) from None
        raise requests.ConnectionError(type(exc).__name__) from None
    response.raw.release_conn()


# TLS failures that repeat on every attempt: the URL (or the machine's CA bundle) is wrong
_TLS_MISMATCH = (
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
)


def _tls_misconfigured(exc: requests.exceptions.SSLError) -> str | None:
    """What is wrong with the API root when TLS fails for a reason no retry can change."""
    text = str(exc)
    reason = re.search(r"\[SSL: ([A-Z_]+)\]", text)
    code = reason.group(1) if reason else ""
    if code in _TLS_MISMATCH:
        return (
            f"does not answer over TLS ({code}): write http:// for a plain-HTTP server,"
            " or check the URL"
        )
    if code == "CERTIFICATE_VERIFY_FAILED":
        return (
            "presents a TLS certificate this machine does not trust: check the URL, or set"
            " REQUESTS_CA_BUNDLE to your CA bundle"
        )
    return None


@dataclass
class Attempt:
    """What one attempt came to: the answer (None when none came) and the policy's decision."""

    response: requests.Response | None
    decision: Decision


class Transport:
    """Sends attempts through the shared rate limiter and carries out the waits between them."""

    def __init__(
        self,
        settings: HttpSettings,
        limiter: RateLimiter,
        metrics: RequestMetrics,
        stop_event: threading.Event,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics
        self.stop_event = stop_event
        self._local = threading.local()

    def session(self) -> requests.Session:
        """This thread's session (connections are kept per thread)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Accept"] = "application/json"
            session.headers["User-Agent"] = "pipedrive-sync"
            self._local.session = session
        return session

    def attempt(
        self, policy: RequestPolicy, method: str, url: str, url_setting: str, **request: Any
    ) -> Attempt:
        """Send once (`request`: keyword arguments for `requests`) and ask `policy` what the
        outcome leads to. `url_setting` names the setting to fix when TLS can never work."""
        if self.stop_event.is_set():
            raise RunStopped(f"{policy.what}: not sent, the run is stopping")
        sent = self._send(method, url, url_setting, request)
        if isinstance(sent, str):
            return Attempt(None, policy.on_failure(sent))
        return Attempt(
            sent, policy.on_response(sent.status_code, sent.headers, sent.content, time.time())
        )

    def _send(
        self, method: str, url: str, url_setting: str, request: Mapping[str, Any]
    ) -> requests.Response | str:
        """One attempt through the rate limiter: the response with its body read, or why
        none came."""
        window = self.limiter.before_request()
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            response = self.session().request(method, url, timeout=timeout, stream=True, **request)
            _read_body(response)
        except requests.Timeout:
            self.limiter.after_response(None, window)
            return "timed out"
        except requests.exceptions.SSLError as exc:
            self.limiter.after_response(None, window)
            wrong = _tls_misconfigured(exc)
            if wrong:
                raise BaseUrlError(f"{url_setting} {wrong}") from None
            return "connection failed (SSLError)"
        except requests.RequestException as exc:
            self.limiter.after_response(None, window)
            return f"connection failed ({type(exc).__name__})"
        except BaseException:
            self.limiter.after_response(None, window)  # never counted in flight for ever
            raise
        self.limiter.after_response(response.headers, window)
        return response

    def wait(self, retry: Retry, label: str) -> None:
        """Count the retry and wait before it; a 429's wait holds back every thread."""
        self.metrics.note_retry(rate_limited=retry.rate_limited, label=label, why=retry.why)
        if retry.rate_limited:
            self.limiter.wait(retry.wait)
        else:
            self.sleep(retry.wait)

    def sleep(self, seconds: float) -> None:
        """Wait, unless the run stops first."""
        if self.stop_event.wait(seconds):
            raise RunStopped("the run is stopping; no further requests")
