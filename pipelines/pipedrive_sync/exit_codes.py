"""Exit statuses, and the one table that maps a failure's cause to its status and message.

0   success
1   anything else: a bug, a response we do not understand, a load job the warehouse refused
75  temporary, safe to rerun: API budget spent, Pipedrive or the warehouse unreachable,
    another run in progress, the DuckDB file open elsewhere
77  the token was rejected (401), or may read none of the selected entities
78  configuration: a setting missing or invalid, an unknown or unusable destination, warehouse
    credentials rejected, a path that cannot be written, a warehouse of another company;
    nothing syncs until a person fixes it
130 interrupted (Ctrl-C); what earlier loads committed stays, the next run goes on from there
143 stopped by SIGTERM (systemd, docker stop), likewise

dlt wraps whatever fails inside it (PipelineStepFailed around a psycopg2 error, a failed load
job around a DuckDB error…), so a cause is looked for at any depth of the exception's chain.
The causes are tried in the order of `CAUSES`: the first that matches any exception of the
chain decides the status and writes the one-line message.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OK = 0
FAILURE = 1
TEMPORARY = 75
AUTH = 77
CONFIG = 78
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
TERMINATED = 143  # 128 + SIGTERM
SIGNALLED = (INTERRUPTED, TERMINATED)  # a run stopped as asked: no teardown, no traceback
INTERRUPTED_MESSAGE = (
    "interrupted: what earlier loads committed stays, the next run goes on from there"
)


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and how to fix it."""


class RunInProgress(Exception):
    """Another sync of the same pipeline holds the lock."""


class LoadFailed(Exception):
    """The warehouse refused a load; the message says which table, why, and what happens to
    the package (see `packages`)."""


@dataclass(frozen=True)
class Failure:
    code: int
    message: str
    expected: bool  # expected failures print one line, never a traceback


@dataclass(frozen=True)
class Scope:
    """What messages may name: the destination, and the setting each path comes from."""

    destination: str = ""
    paths: tuple[tuple[str, str], ...] = ()  # (absolute path, setting)

    @classmethod
    def of(cls, settings: Any) -> Scope:
        """The scope of a run's settings (a RunSettings)."""
        paths = [(str(settings.pipelines_dir.parent), "DLT_DATA_DIR")]
        if settings.destination == "duckdb":
            paths.insert(0, (str(settings.duckdb_path.expanduser()), "--duckdb-path"))
        store = getattr(settings.oauth, "token_store", None)
        if store:
            paths.append((str(store), "PIPEDRIVE_OAUTH_TOKEN_STORE"))
        return cls(settings.destination, tuple((os.path.abspath(p), s) for p, s in paths))

    def setting_for(self, path: str) -> str | None:
        """The setting whose path is `path`, lies under it, or starts with it (`x.duckdb.wal`)."""
        failing = os.path.abspath(path)
        for configured, setting in self.paths:
            if configured.startswith(failing + os.sep) or failing.startswith(configured):
                return setting
        return None


@dataclass(frozen=True)
class Context:
    """What a message is written from: the whole chain and the scope."""

    chain: list[BaseException]
    scope: Scope

    @property
    def step(self) -> str | None:
        from sources.pipedrive.dlt_adapter import failed_step

        return next((s for s in map(failed_step, self.chain) if s), None)

    @property
    def root(self) -> BaseException:
        """The innermost exception that says something (dlt's wrappers repeat it)."""
        for item in reversed(self.chain):
            if one_line(str(item)):
                return item
        return self.chain[-1]

    @property
    def destination(self) -> str:
        return self.scope.destination or "destination"


@dataclass(frozen=True)
class Cause:
    """One row of the table: which exception, which status, which message."""

    name: str
    code: int
    matches: Callable[[BaseException, Scope], bool]
    message: Callable[[BaseException, Context], str]
    expected: bool = True  # False: PIPEDRIVE_SYNC_DEBUG shows the traceback


def one_line(text: str) -> str:
    """`text` on one line, whole: line breaks and runs of spaces become single spaces."""
    return " ".join(text.split())


def _described(exc: BaseException) -> str:
    return (
        f"{type(exc).__name__}: {one_line(str(exc))}" if one_line(str(exc)) else type(exc).__name__
    )


# -- matchers --------------------------------------------------------------------------------
def _pipedrive_error(code: int) -> Callable[[BaseException, Scope], bool]:
    """The source's own errors, by the exit status each declares (AuthError 77, BaseUrlError
    and WrongCompany 78, TemporaryError 75, the others 1)."""

    def matches(exc: BaseException, scope: Scope) -> bool:
        from sources.pipedrive.http import PipedriveError

        return isinstance(exc, PipedriveError) and exc.exit_code == code

    return matches


def _is(*types: type[BaseException]) -> Callable[[BaseException, Scope], bool]:
    return lambda exc, scope: isinstance(exc, types)


def _dlt(*names: str) -> Callable[[BaseException, Scope], bool]:
    def matches(exc: BaseException, scope: Scope) -> bool:
        from sources.pipedrive.dlt_adapter import is_dlt

        return is_dlt(exc, *names)

    return matches


def _destination_unknown(exc: BaseException, scope: Scope) -> bool:
    from sources.pipedrive.dlt_adapter import DestinationUnknown, is_dlt

    return isinstance(exc, DestinationUnknown) or is_dlt(
        exc, "UnknownDestinationModule", "InvalidDestinationReference"
    )


def _extra_missing(exc: BaseException, scope: Scope) -> bool:
    from sources.pipedrive.dlt_adapter import DestinationExtraMissing, is_dlt

    return isinstance(exc, DestinationExtraMissing) or is_dlt(exc, "MissingDependencyException")


# modules whose exceptions come from the warehouse side (drivers, dlt's destination code)
_WAREHOUSE_MODULES = (
    "psycopg",
    "sqlalchemy",
    "sqlite3",
    "duckdb",
    "_duckdb",
    "snowflake",
    "google",
    "pyodbc",
    "pymssql",
    "pymysql",
    "clickhouse",
    "databricks",
    "adbc_driver",
    "redshift_connector",
    "pyathena",
    "botocore",
    "dlt.destinations",
    "dlt.common.destination",
    "dlt.load",
)
_CREDENTIALS_REJECTED = re.compile(
    r"password authentication failed|authentication failed|no password supplied"
    r'|role "[^"]*" does not exist|database "[^"]*" does not exist|no pg_hba\.conf entry'
    r"|incorrect username or password|login failed|access denied|invalid_grant",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(
    r"connection refused|could not connect|timeout expired|timed out"
    r"|server closed the connection unexpectedly|could not translate host name"
    r"|name or service not known|temporary failure in name resolution|network is unreachable"
    r"|no route to host|connection reset|the database system is (starting up|shutting down)"
    r"|too many (clients|connections)",
    re.IGNORECASE,
)


def _from_warehouse(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(_WAREHOUSE_MODULES)


def _credentials_rejected(exc: BaseException, scope: Scope) -> bool:
    return _from_warehouse(exc) and bool(_CREDENTIALS_REJECTED.search(str(exc)))


def _unreachable(exc: BaseException, scope: Scope) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):  # builtins: sockets of any client
        return True
    return _from_warehouse(exc) and bool(_UNREACHABLE.search(str(exc)))


_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_NOT_A_DIRECTORY = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR}
_DUCKDB_NOT_WRITABLE = re.compile(
    r"Permission denied|Read-only file system|Not a directory|Is a directory"
)


def _unwritable_path(exc: BaseException, scope: Scope) -> bool:
    if isinstance(exc, OSError) and exc.filename:
        if exc.errno in _NOT_WRITABLE:
            return True
        return exc.errno in _NOT_A_DIRECTORY and scope.setting_for(str(exc.filename)) is not None
    return _duckdb_io(exc) and bool(_DUCKDB_NOT_WRITABLE.search(str(exc)))


def _duckdb_io(exc: BaseException) -> bool:
    return type(exc).__name__ == "IOException" and "duckdb" in type(exc).__module__


def _duckdb_locked(exc: BaseException, scope: Scope) -> bool:
    """DuckDB allows one writing process: another one holding the file is a temporary state."""
    return _duckdb_io(exc) and "Could not set lock on file" in str(exc)


# -- messages --------------------------------------------------------------------------------
def _own_message(exc: BaseException, ctx: Context) -> str:
    return str(exc)


def _unknown_destination(exc: BaseException, ctx: Context) -> str:
    from sources.pipedrive.dlt_adapter import unknown_destination

    name = ctx.scope.destination or unknown_destination(exc)
    return (
        f"--destination {name}: dlt has no such destination (duckdb, postgres, motherduck,"
        " snowflake, bigquery, mssql, …; a named one needs destination.<name>.destination_type)"
    )


def _extra_message(exc: BaseException, ctx: Context) -> str:
    from sources.pipedrive.dlt_adapter import DestinationExtraMissing, missing_dependency

    if isinstance(exc, DestinationExtraMissing):
        kind = exc.destination_type
        package = "pipedrive-sync[postgres]" if kind == "postgres" else f"dlt[{kind}]"
        return (
            f"the {ctx.destination} destination needs packages that are not installed"
            f" ({exc}): pip install '{package}'"
        )
    return (
        f"the {ctx.destination} destination needs packages that are not installed:"
        f" {missing_dependency(exc)}"
    )


def _missing_settings(exc: BaseException, ctx: Context) -> str:
    from sources.pipedrive.dlt_adapter import missing_settings

    settings = ", ".join(missing_settings(exc)) or "a setting"
    return (
        f"configuration missing: {settings}; set it in the environment or in .dlt/secrets.toml"
        " (see README: Destinations)"
    )


def _credentials_message(exc: BaseException, ctx: Context) -> str:
    name = ctx.destination
    return (
        f"the {name} warehouse rejected the credentials (DESTINATION__{name.upper()}__CREDENTIALS"
        f" or [destination.{name}] credentials): {one_line(str(exc))}"
    )


def _unwritable_message(exc: BaseException, ctx: Context) -> str:
    if isinstance(exc, OSError):
        path = str(exc.filename)
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            problem = f"cannot create {path}: it, or a directory above it, is a file"
        else:
            problem = f"cannot write {path}: {exc.strerror or exc}"
    else:
        path, problem = "", one_line(str(exc))
    setting = ctx.scope.setting_for(path) if path else None
    return f"{problem}; fix {setting}" if setting else f"{problem}; fix the path's setting"


def _duckdb_locked_message(exc: BaseException, ctx: Context) -> str:
    return (
        "the DuckDB file is open in another process (a `pipedrive-sync shell` or"
        " `query`, a DuckDB client…); nothing was synced, the next run catches up"
    )


def _unreachable_message(exc: BaseException, ctx: Context) -> str:
    return (
        f"the {ctx.destination} warehouse is unreachable ({one_line(str(ctx.root))});"
        " the next run tries again"
    )


def _failed_job_message(exc: BaseException, ctx: Context) -> str:
    from sources.pipedrive.dlt_adapter import failed_job

    job = failed_job(exc)
    assert job is not None
    return (
        f"dlt's {ctx.step or 'load'} step failed on table {job.table} (job {job.job_id}):"
        f" {one_line(job.message)}"
    )


def _unexpected_message(exc: BaseException, ctx: Context) -> str:
    step = ctx.step
    prefix = f"dlt's {step} step failed: " if step else ""
    return prefix + _described(ctx.root)


def _interrupted(exc: BaseException, ctx: Context) -> str:
    return INTERRUPTED_MESSAGE


CAUSES: tuple[Cause, ...] = (
    Cause("interrupted", INTERRUPTED, _is(KeyboardInterrupt), _interrupted),
    Cause("Pipedrive rejected the token", AUTH, _pipedrive_error(AUTH), _own_message),
    Cause(
        "PIPEDRIVE_BASE_URL is wrong, or the warehouse holds another company",
        CONFIG,
        _pipedrive_error(CONFIG),
        _own_message,
    ),
    Cause(
        "Pipedrive unavailable or the budget spent",
        TEMPORARY,
        _pipedrive_error(TEMPORARY),
        _own_message,
    ),
    Cause(
        "a Pipedrive response we do not understand",
        FAILURE,
        _pipedrive_error(FAILURE),
        _own_message,
        expected=False,
    ),
    Cause("a setting missing or invalid", CONFIG, _is(ConfigError), _own_message),
    Cause("another run in progress", TEMPORARY, _is(RunInProgress), _own_message),
    Cause("an unknown destination", CONFIG, _destination_unknown, _unknown_destination),
    Cause("the destination's extra is not installed", CONFIG, _extra_missing, _extra_message),
    Cause(
        "a destination setting missing",
        CONFIG,
        _dlt("ConfigFieldMissingException"),
        _missing_settings,
    ),
    Cause("a path that cannot be written", CONFIG, _unwritable_path, _unwritable_message),
    Cause(
        "the warehouse rejected the credentials",
        CONFIG,
        _credentials_rejected,
        _credentials_message,
    ),
    Cause("the DuckDB file is open elsewhere", TEMPORARY, _duckdb_locked, _duckdb_locked_message),
    Cause("the warehouse unreachable", TEMPORARY, _unreachable, _unreachable_message),
    Cause("a load the warehouse refused", FAILURE, _is(LoadFailed), _own_message, False),
    Cause(
        "a load job failed",
        FAILURE,
        _dlt("LoadClientJobFailed", "LoadClientJobTerminalRetry"),
        _failed_job_message,
        expected=False,
    ),
)
UNEXPECTED = Cause("unexpected", FAILURE, lambda exc, scope: True, _unexpected_message, False)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception behind it: what dlt wraps, causes, and contexts."""
    from sources.pipedrive.dlt_adapter import exception_chain

    return exception_chain(exc, contexts=True)


def classify(exc: BaseException, scope: Scope | None = None) -> Failure:
    """The exit code and one-line message for an exception escaping a command."""
    # imported here: the console script reads INTERRUPTED before dlt has loaded (see entry.py)
    from sources.pipedrive.http import redact

    scope = scope or Scope()
    chain = _chain(exc)
    cause, item = next(
        ((c, e) for c in CAUSES for e in chain if c.matches(e, scope)), (UNEXPECTED, exc)
    )
    message = cause.message(item, Context(chain, scope))
    return Failure(cause.code, redact(one_line(message)), expected=cause.expected)
