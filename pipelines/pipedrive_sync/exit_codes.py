"""Exit statuses and the one table that maps failures to them.

0   success
1   anything else (a bug, a bad request, an unexpected response)
75  temporary failure, safe to rerun (budget exhausted, Pipedrive unavailable, another run)
77  the token was rejected (401, or 403 on everything)
78  configuration missing or invalid (no token, bad flag value)
130 interrupted (Ctrl-C); what earlier loads committed stays, the next run goes on from there
"""

from __future__ import annotations

from dataclasses import dataclass

OK = 0
FAILURE = 1
TEMPORARY = 75
AUTH = 77
CONFIG = 78
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
INTERRUPTED_MESSAGE = (
    "interrupted: what earlier loads committed stays, the next run goes on from there"
)


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and how to fix it."""


class RunInProgress(Exception):
    """Another sync of the same pipeline holds the lock."""


@dataclass(frozen=True)
class Failure:
    code: int
    message: str
    expected: bool  # expected failures print one line, never a traceback


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        inner = getattr(current, "exception", None)  # dlt's PipelineStepFailed keeps it here
        current = (
            inner if isinstance(inner, BaseException) else current.__cause__ or current.__context__
        )
    return seen


def classify(exc: BaseException) -> Failure:
    """The exit code and one-line message for an exception escaping a run."""
    # imported here: the console script reads INTERRUPTED before dlt has loaded (see entry.py)
    from dlt.common.configuration.exceptions import ConfigFieldMissingException

    from sources.pipedrive.http import PipedriveError, redact

    for item in _chain(exc):
        if isinstance(item, KeyboardInterrupt):  # dlt turns Ctrl-C into SignalReceivedException
            return Failure(INTERRUPTED, INTERRUPTED_MESSAGE, expected=True)
        if isinstance(item, PipedriveError):
            return Failure(item.exit_code, redact(str(item)), expected=item.exit_code != FAILURE)
        if isinstance(item, ConfigError):
            return Failure(CONFIG, redact(str(item)), expected=True)
        if isinstance(item, RunInProgress):
            return Failure(TEMPORARY, str(item), expected=True)
        if isinstance(item, ConfigFieldMissingException):
            fields = ", ".join(item.fields) if getattr(item, "fields", None) else "a setting"
            return Failure(CONFIG, f"configuration missing: {fields}", expected=True)
        if _duckdb_locked(item):
            return Failure(
                TEMPORARY,
                "the DuckDB file is open in another process (a `pipedrive-sync shell` or"
                " `query`, a DuckDB client…); nothing was synced, the next run catches up",
                expected=True,
            )
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return Failure(FAILURE, redact(f"{type(exc).__name__}: {first_line}"), expected=False)


def _duckdb_locked(exc: BaseException) -> bool:
    """DuckDB allows one writing process: another one holding the file is a temporary state."""
    return type(exc).__name__ == "IOException" and "Could not set lock on file" in str(exc)
