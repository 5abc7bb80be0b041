"""Showing a run while it happens: live table on a terminal, plain or JSON lines for cron.

A `Watcher` thread polls the run's `RunContext` (the source updates its per-entity reports as
pages arrive) and the HTTP client's metrics, and hands snapshots to a `Reporter`:

* `LiveReporter`  — a rich table redrawn in place (entity, status, pages, rows, rows/s), then
  the summary table. Chosen when stdout is a terminal.
* `PlainReporter` — timestamped lines (start, progress every `PROGRESS_SECONDS`, finish) and
  the summary table. Chosen when stdout is not a terminal (cron, a pipe, a log file).
* `JsonReporter`  — one JSON object per line (`--log-format json`): run_started,
  entity_progress, entity_finished, run_finished.
* `QuietReporter` — nothing (`--quiet`); errors still go to stderr.

Nothing here ever sees the API token: reporters get settings-derived `RunInfo`, counters and
already-redacted messages.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .summary import print_summary, summary_rows

if TYPE_CHECKING:
    from sources.pipedrive import RunContext
    from sources.pipedrive.http import RequestMetrics

    from .exit_codes import Failure
    from .result import RunResult
    from .settings import RunSettings

PROGRESS_SECONDS_ENV = "PIPEDRIVE_SYNC_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0  # plain / JSON progress lines during a long run
LIVE_REFRESH_SECONDS = 0.25


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def progress_interval() -> float:
    """Seconds between progress lines in plain and JSON logs (env PIPEDRIVE_SYNC_PROGRESS_SECONDS)."""
    raw = os.environ.get(PROGRESS_SECONDS_ENV)
    if not raw:
        return DEFAULT_PROGRESS_SECONDS
    try:
        return max(0.1, float(raw))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS


@dataclass(frozen=True)
class RunInfo:
    """What a run writes where; safe to print (no credentials)."""

    destination: str
    dataset: str
    entities: tuple[str, ...]
    duckdb_path: str | None = None

    @classmethod
    def from_settings(cls, settings: RunSettings, entities: tuple[str, ...]) -> RunInfo:
        path = str(settings.duckdb_path) if settings.destination == "duckdb" else None
        return cls(settings.destination, settings.dataset, entities, path)

    @property
    def target(self) -> str:
        where = self.duckdb_path if self.duckdb_path else self.destination
        return f"{where} (dataset {self.dataset})"


@dataclass
class EntityProgress:
    """One entity's counters as last seen by the watcher."""

    name: str
    pages: int = 0
    rows: int = 0
    status: str = "waiting"  # waiting | reading | stopped | skipped | partial | <final status>
    message: str = ""
    last_change: float | None = None  # monotonic time the counters last moved

    def rate(self, started: float) -> float | None:
        """Rows per second from the run's start to the last page seen (from the 2nd page on)."""
        if self.pages < 2 or self.last_change is None:
            return None
        return self.rows / max(self.last_change - started, 1e-3)


@dataclass
class Snapshot:
    entities: list[EntityProgress]
    requests: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0
    started: float = field(default_factory=time.monotonic)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: int) -> str:
    return f"{value:,}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


class Reporter:
    """Receives a run's events; the base class ignores them all (--quiet)."""

    def run_started(self, info: RunInfo) -> None:
        """Before the first request."""

    def progress(self, snapshot: Snapshot) -> None:
        """From the watcher thread, every LIVE_REFRESH_SECONDS while the run goes."""

    def run_finished(self, result: RunResult, snapshot: Snapshot) -> None:
        """After the run returned (whatever its exit code)."""

    def run_failed(self, failure: Failure, snapshot: Snapshot) -> None:
        """After the run raised; the CLI prints the one-line error itself."""

    def close(self) -> None:
        """Release the terminal (idempotent); called before anything goes to stderr."""


QuietReporter = Reporter


def progress_table(snapshot: Snapshot, title: str | None = None) -> Table:
    table = Table(title=title, show_edge=False, pad_edge=False, title_justify="left")
    table.add_column("entity")
    table.add_column("status")
    for column in ("pages", "rows", "rows/s"):
        table.add_column(column, justify="right")
    for entity in snapshot.entities:
        style = {"waiting": "dim", "stopped": "yellow", "skipped": "yellow", "partial": "yellow"}
        table.add_row(
            entity.name,
            Text(entity.status, style=style.get(entity.status, "")),
            _int(entity.pages),
            _int(entity.rows),
            _rate(entity.rate(snapshot.started)),
        )
    return table


class LiveReporter(Reporter):
    """A table redrawn in place on a terminal, replaced by the summary at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._lock = threading.Lock()

    def run_started(self, info: RunInfo) -> None:
        self.console.print(f"Syncing Pipedrive → {info.target}")
        self._live = Live(
            console=self.console, auto_refresh=False, transient=True, redirect_stdout=False
        )
        self._live.start()

    def _render(self, snapshot: Snapshot) -> Group:
        footer = Text(
            f"{_int(snapshot.requests)} requests · {_int(snapshot.tokens)} tokens · "
            f"{snapshot.retries} retries · {snapshot.elapsed:.1f}s",
            style="dim",
        )
        return Group(progress_table(snapshot), footer)

    def progress(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self._live is not None:
                self._live.update(self._render(snapshot), refresh=True)

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    def run_finished(self, result: RunResult, snapshot: Snapshot) -> None:
        self.close()
        print_summary(result, self.console)

    def run_failed(self, failure: Failure, snapshot: Snapshot) -> None:
        self.close()


class PlainReporter(Reporter):
    """Timestamped lines for log files: start, periodic progress, the summary, the finish."""

    def __init__(self, console: Console, interval: float | None = None) -> None:
        self.console = console
        self.interval = progress_interval() if interval is None else interval
        self._last_emit = time.monotonic()
        self._last_rows: dict[str, int] = {}

    def _line(self, text: str) -> None:
        self.console.print(f"{_now()} {text}", markup=False, highlight=False, soft_wrap=True)

    def run_started(self, info: RunInfo) -> None:
        self._line(f"sync started → {info.target}: {', '.join(info.entities)}")

    def progress(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if now - self._last_emit < self.interval:
            return
        self._last_emit = now
        for entity in snapshot.entities:
            if entity.rows == self._last_rows.get(entity.name) or not entity.pages:
                continue
            self._last_rows[entity.name] = entity.rows
            self._line(
                f"{entity.name}: {entity.status}, {_int(entity.pages)} pages, "
                f"{_int(entity.rows)} rows ({_rate(entity.rate(snapshot.started))} rows/s)"
            )

    def run_finished(self, result: RunResult, snapshot: Snapshot) -> None:
        print_summary(result, self.console)
        self._line(
            f"sync finished: exit {result.code}, {_int(sum(r.rows for r in result.reports))} rows,"
            f" {result.metrics.requests} requests, {result.metrics.tokens} tokens"
            f" in {result.seconds:.1f}s"
        )

    def run_failed(self, failure: Failure, snapshot: Snapshot) -> None:
        self._line(f"sync failed: exit {failure.code} after {snapshot.elapsed:.1f}s")


class JsonReporter(Reporter):
    """One JSON object per line on stdout, for log shippers."""

    def __init__(self, out: TextIO | None = None, interval: float | None = None) -> None:
        self.out = out
        self.interval = progress_interval() if interval is None else interval
        self._last_emit = time.monotonic()
        self._last_rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": _now(), "event": event, **fields}
        out = self.out or sys.stdout
        with self._lock:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()

    def run_started(self, info: RunInfo) -> None:
        self.emit(
            "run_started",
            destination=info.destination,
            dataset=info.dataset,
            duckdb_path=info.duckdb_path,
            entities=list(info.entities),
        )

    def progress(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if now - self._last_emit < self.interval:
            return
        self._last_emit = now
        for entity in snapshot.entities:
            if entity.rows == self._last_rows.get(entity.name) or not entity.pages:
                continue
            self._last_rows[entity.name] = entity.rows
            rate = entity.rate(snapshot.started)
            self.emit(
                "entity_progress",
                entity=entity.name,
                status=entity.status,
                pages=entity.pages,
                rows=entity.rows,
                rows_per_second=None if rate is None else round(rate, 1),
                run_requests=snapshot.requests,
                run_tokens=snapshot.tokens,
            )

    def run_finished(self, result: RunResult, snapshot: Snapshot) -> None:
        pages = {r.name: r.pages for r in result.reports}
        for row in summary_rows(result):
            self.emit(
                "entity_finished",
                entity=row["entity"],
                status=row["status"],
                rows=row["rows"],
                pages=pages.get(str(row["entity"]), 0),
                requests=row["requests"],
                tokens=row["tokens"],
                flagged_deleted=row["vanished"],
                message=row["message"] or None,
            )
        metrics = result.metrics
        self.emit(
            "run_finished",
            exit_code=result.code,
            message=result.message or None,
            rows=sum(r.rows for r in result.reports),
            requests=metrics.requests,
            tokens=metrics.tokens,
            retries=metrics.retries,
            rate_limited=metrics.rate_limited,
            loads=result.chunks,
            labels_rewritten=result.labels_rewritten,
            seconds=round(result.seconds, 3),
        )

    def run_failed(self, failure: Failure, snapshot: Snapshot) -> None:
        self.emit(
            "run_finished",
            exit_code=failure.code,
            message=failure.message,
            requests=snapshot.requests,
            tokens=snapshot.tokens,
            seconds=round(snapshot.elapsed, 3),
        )


def make_reporter(log_format: LogFormat, quiet: bool, console: Console) -> Reporter:
    """--quiet > --log-format json > live on a terminal > plain lines."""
    if quiet:
        return QuietReporter()
    if log_format is LogFormat.json:
        return JsonReporter()
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveReporter(console)
    return PlainReporter(console)


class Watcher:
    """Polls a RunContext from a daemon thread and feeds snapshots to a reporter."""

    def __init__(
        self,
        ctx: RunContext,
        entities: tuple[str, ...],
        reporter: Reporter,
        interval: float = LIVE_REFRESH_SECONDS,
    ) -> None:
        self.ctx = ctx
        self.reporter = reporter
        self.interval = interval
        self.started = time.monotonic()
        self._entities = {name: EntityProgress(name) for name in entities}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipedrive-progress", daemon=True)

    def __enter__(self) -> Watcher:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.reporter.progress(self.snapshot())

    def snapshot(self) -> Snapshot:
        """The current counters (safe to call from any thread)."""
        now = time.monotonic()
        for name, report in list(self.ctx.reports.items()):
            entity = self._entities.setdefault(name, EntityProgress(name))
            if (report.rows, report.pages) != (entity.rows, entity.pages):
                entity.last_change = now
            entity.rows, entity.pages = report.rows, report.pages
            entity.message = report.message
            if report.status != "ok":
                entity.status = report.status
            elif report.finished:
                entity.status = "done"
            else:
                entity.status = "reading" if report.pages else "starting"
        metrics: RequestMetrics = self.ctx.client.metrics
        stats = list(metrics.by_label.values())  # one C-level copy: safe while threads add labels
        return Snapshot(
            entities=[EntityProgress(**vars(e)) for e in self._entities.values()],
            requests=sum(s.requests for s in stats),
            tokens=sum(s.tokens for s in stats),
            retries=metrics.retries,
            rate_limited=metrics.rate_limited,
            elapsed=now - self.started,
            started=self.started,
        )
