"""What to do after each attempt of a request: the retry, rate-limit and budget policy.

Pure and socket-free: `RequestPolicy` is told what an attempt came to (a status with its
headers and body, or a transport failure) and answers with a decision (`Accept`, `Retry`,
`RenewAuth` or `Fail`); the client (`client.py`) is the transport that carries it out.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .errors import (
    Action,
    AuthError,
    BudgetExhausted,
    EntityUnavailable,
    PipedriveError,
    RequestFailed,
    TemporaryError,
    outcome_for,
)
from .redact import redact

if TYPE_CHECKING:
    from .client import HttpSettings


@dataclass(frozen=True)
class Accept:
    """The answer is a success: read its body (a body that is no JSON is a `failure`)."""


@dataclass(frozen=True)
class Retry:
    """Send the request again after `wait` seconds; `why` is what the metrics note."""

    wait: float
    why: str
    rate_limited: bool = False


@dataclass(frozen=True)
class RenewAuth:
    """Renew the credentials and send again; `otherwise` is the error when they cannot be."""

    otherwise: AuthError


@dataclass(frozen=True)
class Fail:
    """Give up with this error."""

    error: PipedriveError


Decision = Accept | Retry | RenewAuth | Fail


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """The wait a 429 asks for (`Retry-After` or `X-RateLimit-Reset`, in seconds or as an HTTP
    date; `now` as a Unix time), or None when it names none."""
    for header in ("retry-after", "x-ratelimit-reset"):
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            return max(0.0, when.timestamp() - now)
    return None


def says_budget(content: bytes) -> bool:
    """Does a 429's body say the daily budget (not the burst window) is spent?"""
    text = content[:2048].lower()
    return b"budget" in text or b"daily limit" in text


def not_json(content: bytes) -> str:
    """Why a successful answer cannot be read: its body is no JSON (an HTML page?)."""
    html = b"<html" in content[:512].lower()
    return "the response was not JSON" + (" (an HTML page)" if html else "")


def json_object(content: bytes) -> dict[str, Any] | None:
    """The body as a JSON object (None: no JSON, or not an object)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def error_detail(content: bytes) -> str:
    """ " (what Pipedrive said went wrong)" from an error body, redacted; "" when it says
    nothing readable."""
    body = json_object(content)
    if body is not None:
        error = body.get("error") or body.get("message")
        errors = body.get("errors")
        if not error and isinstance(errors, dict):  # /v1/webhooks: {"field": ["why"]}
            error = "; ".join(f"{k}: {v}" for k, v in errors.items())
        if isinstance(error, str) and error:
            return f" ({redact(error[:200])})"
    return ""


class RequestPolicy:
    """The decisions for one request (`what` names it in errors): counts its failed
    attempts, rate-limit waits and credential renewals."""

    def __init__(
        self,
        settings: HttpSettings,
        what: str,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.settings = settings
        self.what = what
        self.jitter = jitter
        self.failures = 0
        self.rate_limited = 0
        self.auth_renewed = False

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter (half to all of the step)."""
        settings = self.settings
        base = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
        return base * self.jitter(0.5, 1.0)

    def on_response(
        self, status: int, headers: Mapping[str, str], content: bytes, now: float
    ) -> Decision:
        """The decision for an answer with this status (`now`: Unix time, for HTTP dates)."""
        outcome = outcome_for(status)
        what = self.what
        if outcome.action is Action.OK:
            return Accept()
        if outcome.action is Action.RATE_LIMITED:
            return self._rate_limited(retry_after_seconds(headers, now), says_budget(content))
        if outcome.action is Action.AUTH:
            error = AuthError(f"{outcome.message}: {what}")
            if self.auth_renewed:
                return Fail(error)
            self.auth_renewed = True
            return RenewAuth(error)
        if outcome.action is Action.UNAVAILABLE:
            return Fail(
                EntityUnavailable(f"{outcome.message}: {what}{error_detail(content)}", status)
            )
        if outcome.action is Action.FAIL:
            return Fail(RequestFailed(f"{outcome.message}: {what}{error_detail(content)}", status))
        return self.on_failure(outcome.message)

    def on_failure(self, reason: str) -> Retry | Fail:
        """An attempt that failed in a way worth retrying (a dropped connection, a timeout, a
        5xx, a body that is no JSON): retry after a backoff, or give up."""
        self.failures += 1
        limit = self.settings.max_attempts
        if self.failures >= limit:
            return Fail(
                TemporaryError(f"{self.what}: gave up after {self.failures} attempts ({reason})")
            )
        return Retry(self.backoff(self.failures), f"{reason}; retry {self.failures} of {limit - 1}")

    def _rate_limited(self, asked: float | None, budget: bool) -> Retry | Fail:
        self.rate_limited += 1
        wait = self.backoff(self.rate_limited) if asked is None else asked
        if wait > self.settings.max_rate_limit_wait or budget:
            message = (
                f"{self.what}: the daily API token budget is exhausted"
                f" (Pipedrive asks to wait {wait:.0f}s)"
            )
            return Fail(BudgetExhausted(message, retry_after=wait))
        if self.rate_limited > self.settings.max_rate_limit_retries:
            return Fail(
                TemporaryError(f"{self.what}: still rate limited after {self.rate_limited} waits")
            )
        return Retry(wait, f"rate limited, waiting {wait:.0f}s", rate_limited=True)
