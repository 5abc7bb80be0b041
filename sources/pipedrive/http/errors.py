"""Every HTTP outcome mapped to one action and one message, in one table.

`RequestPolicy` (`policy.py`) looks up the response status here and decides what follows;
nothing else in the project interprets status codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    OK = "ok"
    RETRY = "retry"  # transient: back off and try again (bounded)
    RATE_LIMITED = "rate_limited"  # wait as the server says, then retry; a huge wait = budget gone
    AUTH = "auth"  # the credentials are wrong: stop the run (exit 77)
    UNAVAILABLE = "unavailable"  # this entity is not on the plan / not permitted: skip it
    FAIL = "fail"  # a bug or bad request: fail the run with the message


@dataclass(frozen=True)
class Outcome:
    action: Action
    message: str


STATUS_TABLE: dict[int, Outcome] = {
    200: Outcome(Action.OK, "ok"),
    400: Outcome(Action.FAIL, "Pipedrive rejected the request as invalid"),
    401: Outcome(Action.AUTH, "Pipedrive rejected the API token (401 unauthorized)"),
    402: Outcome(Action.UNAVAILABLE, "this feature is not included in the Pipedrive plan (402)"),
    403: Outcome(Action.UNAVAILABLE, "the token is not permitted to read this (403 forbidden)"),
    404: Outcome(Action.UNAVAILABLE, "Pipedrive has no such endpoint for this account (404)"),
    405: Outcome(Action.FAIL, "method not allowed (405)"),
    408: Outcome(Action.RETRY, "request timeout (408)"),
    409: Outcome(Action.RETRY, "conflict (409)"),
    410: Outcome(Action.UNAVAILABLE, "this endpoint is gone (410)"),
    422: Outcome(Action.FAIL, "Pipedrive could not process the request (422)"),
    429: Outcome(Action.RATE_LIMITED, "rate limit reached (429)"),
    500: Outcome(Action.RETRY, "Pipedrive internal error (500)"),
    502: Outcome(Action.RETRY, "bad gateway (502)"),
    503: Outcome(Action.RETRY, "Pipedrive unavailable (503)"),
    504: Outcome(Action.RETRY, "gateway timeout (504)"),
}


def outcome_for(status: int) -> Outcome:
    """The action for any status, including ones not listed (by class)."""
    if status in STATUS_TABLE:
        return STATUS_TABLE[status]
    if 200 <= status < 300:
        return Outcome(Action.OK, "ok")
    if status >= 500:
        return Outcome(Action.RETRY, f"Pipedrive server error ({status})")
    return Outcome(Action.FAIL, f"unexpected HTTP status {status}")


class PipedriveError(Exception):
    """Base for every error the HTTP layer raises; messages are one line and secret-free."""

    exit_code = 1


class AuthError(PipedriveError):
    exit_code = 77


class BaseUrlError(PipedriveError):
    """The API root is wrong: not TLS where https:// was given, or 404 for everything."""

    exit_code = 78


def base_url_not_found(base_url: str) -> str:
    """The message for an API root that answers 404 to every request."""
    return (
        f"PIPEDRIVE_BASE_URL {base_url} answers 404 (not found) to every request: check the URL"
        " (the API root: https://api.pipedrive.com or https://<company>.pipedrive.com)"
    )


class TemporaryError(PipedriveError):
    """Safe to rerun later: retries ran out, Pipedrive is down, or the budget is spent."""

    exit_code = 75


class BudgetExhausted(TemporaryError):
    """The company's daily API token budget is used up."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RunStopped(TemporaryError):
    """Another part of the run hit a stop condition (e.g. the budget); no new requests."""


SIGNAL_NAMES = {2: "SIGINT (Ctrl-C)", 15: "SIGTERM"}


class StopRequested(TemporaryError):
    """A person or a service manager asked the run to stop (SIGINT, SIGTERM): exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        super().__init__(f"interrupted by {name}")


class EntityUnavailable(PipedriveError):
    """The plan or the token's permissions do not cover this endpoint (402/403/404)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BadResponse(PipedriveError):
    """Pipedrive answered with something that is not the documented envelope."""


class RequestFailed(PipedriveError):
    """A non-retryable failure status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
