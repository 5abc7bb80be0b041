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
    phase: str = "preparing"  # preparing | fetching | loading | finishing
    problem: str | None = None  # what is failing and being retried right now
    stopping: str | None = None  # why the run is stopping, once a signal asked it to


def stop_acknowledgement(signum: int) -> str:
    """What a person sees at once after Ctrl-C (or a service manager's SIGTERM)."""
    from sources.pipedrive.http.errors import SIGNAL_NAMES

    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    return f"{name} received: stopping after the current load (send it again to abort at once)"


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

    def stop_requested(self, message: str) -> None:
        """From the watcher thread, as soon as a signal asked the run to stop."""

    def retrying(self, problem: str) -> None:
        """From the watcher thread, when a new failure is being retried."""

    def notice(self, event: str, text: str, **numbers: Any) -> None:
        """A step of the run starts or ends (`RunContext.notify`), e.g. the history backfill
        with what it will cost."""

    def close(self) -> None:
        """Release the terminal (idempotent); called before anything goes to stderr."""


class QuietReporter(Reporter):
    """Nothing but errors; a stop request is still acknowledged to a person at a terminal."""

    def stop_requested(self, message: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"pipedrive-sync: {message}\n")
            sys.stderr.flush()


STATUS_STYLES = {"waiting": "dim", "stopped": "yellow", "skipped": "yellow", "partial": "yellow"}
ACTIVE = ("starting", "reading", "loading", "stopped", "skipped", "partial")


def _shown_status(entity: EntityProgress, phase: str) -> str:
    """The status as the run's phase makes it: entities read so far are loaded together."""
    if phase == "loading" and entity.status in ("starting", "reading", "done"):
        return "loading"
    return entity.status


def progress_table(
    snapshot: Snapshot, title: str | None = None, max_rows: int | None = None
) -> tuple[Table, str]:
    """The entity table, at most `max_rows` entity rows (done and waiting ones are folded into
    the returned note first), and that note ("" when nothing was folded)."""
    table = Table(title=title, show_edge=False, pad_edge=False, title_justify="left")
    table.add_column("entity", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("pages", "rows", "rows/s"):
        table.add_column(column, justify="right", no_wrap=True)
    rows = [(e, _shown_status(e, snapshot.phase)) for e in snapshot.entities]
    shown, note = _fold(rows, max_rows)
    for entity, status in shown:
        table.add_row(
            entity.name,
            Text(status, style=STATUS_STYLES.get(status, "")),
            _int(entity.pages),
            _int(entity.rows),
            _rate(entity.rate(snapshot.started)),
        )
    return table, note


def _fold(
    rows: list[tuple[EntityProgress, str]], max_rows: int | None
) -> tuple[list[tuple[EntityProgress, str]], str]:
    """Keep the table within `max_rows`: fold done entities, then waiting ones, into a note."""
    if max_rows is None or len(rows) <= max_rows:
        return rows, ""
    notes = []
    for folded in ("done", "waiting"):
        group = [(e, s) for e, s in rows if s == folded]
        if not group:
            continue
        rows = [(e, s) for e, s in rows if s != folded]
        extra = f" ({_int(sum(e.rows for e, _ in group))} rows)" if folded == "done" else ""
        notes.append(f"{len(group)} {folded}{extra}")
        if len(rows) <= max_rows - 1:  # the note takes a line
            break
    keep = max(1, max_rows - 1)
    if len(rows) > keep:
        notes.append(f"{len(rows) - keep} more")
    return rows[:keep], "+ " + ", ".join(notes)


LIVE_FIXED_LINES = 7  # the title above the view, table header and rule, note, footer, two hints


def _footer_line(text: str, style: str) -> Text:
    """One line under the live table, cut to the terminal's width."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


class LiveReporter(Reporter):
    """A table redrawn in place on a terminal, replaced by the summary at the end.

    It always fits the terminal (an 80x24 one holds it with every default entity): a view
    taller than the screen cannot be redrawn in place and leaves old frames in the scrollback.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._lock = threading.Lock()
        self._stopping: str | None = None

    def run_started(self, info: RunInfo) -> None:
        self.console.print(f"Syncing Pipedrive → {info.target}", markup=False, overflow="ellipsis")
        self._live = Live(
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            vertical_overflow="crop",
        )
        self._live.start()

    def _render(self, snapshot: Snapshot) -> Group:
        max_rows = max(3, self.console.height - LIVE_FIXED_LINES)
        table, note = progress_table(snapshot, max_rows=max_rows)
        lines: list[Any] = [table]
        if note:
            lines.append(_footer_line(note, "dim"))
        lines.append(
            _footer_line(
                f"{snapshot.phase} · {_int(snapshot.requests)} requests ·"
                f" {_int(snapshot.tokens)} tokens · {snapshot.retries} retries ·"
                f" {snapshot.elapsed:.1f}s",
                "dim",
            )
        )
        if snapshot.problem:
            lines.append(_footer_line(f"retrying: {snapshot.problem}", "yellow"))
        if snapshot.stopping:
            lines.append(_footer_line(snapshot.stopping, "bold yellow"))
        return Group(*lines)

    def progress(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self._live is not None:
                self._live.update(self._render(snapshot), refresh=True)

    def stop_requested(self, message: str) -> None:
        # above the live view (it stays on the screen once the view is gone), and in its footer
        self.console.print(message, style="yellow", markup=False, highlight=False)

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    def notice(self, event: str, text: str, **numbers: Any) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)  # above the table

    def run_finished(self, result: RunResult, snapshot: Snapshot) -> None:
        self.close()
        print_summary(result, self.console)

    def run_failed(self, failure: Failure, snapshot: Snapshot) -> None:
        self.close()


class _ProgressThrottle:
    """Which entities a periodic progress line names: at most once per interval, only the moved."""

    def __init__(self, interval: float | None) -> None:
        self.interval = progress_interval() if interval is None else interval
        self._last_emit = time.monotonic()
        self._last_rows: dict[str, int] = {}

    def due(self, snapshot: Snapshot) -> list[EntityProgress]:
        """The entities whose rows moved since their last line; none until the interval passed."""
        now = time.monotonic()
        if now - self._last_emit < self.interval:
            return []
        self._last_emit = now
        moved = []
        for entity in snapshot.entities:
            if entity.rows == self._last_rows.get(entity.name) or not entity.pages:
                continue
            self._last_rows[entity.name] = entity.rows
            moved.append(entity)
        return moved


class PlainReporter(Reporter):
    """Timestamped lines for log files: start, periodic progress, the summary, the finish."""

    def __init__(self, console: Console, interval: float | None = None) -> None:
        self.console = console
        self._throttle = _ProgressThrottle(interval)

    def _line(self, text: str) -> None:
        self.console.print(f"{_now()} {text}", markup=False, highlight=False, soft_wrap=True)

    def run_started(self, info: RunInfo) -> None:
        self._line(f"sync started → {info.target}: {', '.join(info.entities)}")

    def progress(self, snapshot: Snapshot) -> None:
        for entity in self._throttle.due(snapshot):
            self._line(
                f"{entity.name}: {entity.status}, {_int(entity.pages)} pages, "
                f"{_int(entity.rows)} rows ({_rate(entity.rate(snapshot.started))} rows/s)"
            )

    def notice(self, event: str, text: str, **numbers: Any) -> None:
        self._line(text)

    def run_finished(self, result: RunResult, snapshot: Snapshot) -> None:
        print_summary(result, self.console)
        self._line(
            f"sync finished: exit {result.code}, {_int(sum(r.rows for r in result.reports))} rows,"
            f" {result.metrics.requests} requests, {result.metrics.tokens} tokens"
            f" in {result.seconds:.1f}s"
        )

    def run_failed(self, failure: Failure, snapshot: Snapshot) -> None:
        self._line(f"sync failed: exit {failure.code} after {snapshot.elapsed:.1f}s")

    def stop_requested(self, message: str) -> None:
        self._line(message)

    def retrying(self, problem: str) -> None:
        self._line(f"retrying: {problem}")


class JsonReporter(Reporter):
    """One JSON object per line on stdout, for log shippers."""

    def __init__(self, out: TextIO | None = None, interval: float | None = None) -> None:
        self.out = out
        self._throttle = _ProgressThrottle(interval)
        self._lock = threading.Lock()

    def notice(self, event: str, text: str, **numbers: Any) -> None:
        self.emit(event, message=text, **numbers)

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
        for entity in self._throttle.due(snapshot):
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
            warnings=result.warnings or None,
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

    def stop_requested(self, message: str) -> None:
        self.emit("stop_requested", message=message)

    def retrying(self, problem: str) -> None:
        self.emit("retrying", problem=problem)


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
        acknowledged = False
        problem: str | None = None
        while not self._stop.wait(self.interval):
            snapshot = self.snapshot()
            if snapshot.stopping and not acknowledged:
                acknowledged = True
                self.reporter.stop_requested(snapshot.stopping)
            if snapshot.problem and snapshot.problem != problem:
                self.reporter.retrying(snapshot.problem)
            problem = snapshot.problem
            self.reporter.progress(snapshot)

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
        stop = self.ctx.stop_requested
        return Snapshot(
            entities=[EntityProgress(**vars(e)) for e in self._entities.values()],
            requests=sum(s.requests for s in stats),
            tokens=sum(s.tokens for s in stats),
            retries=metrics.retries,
            rate_limited=metrics.rate_limited,
            elapsed=now - self.started,
            started=self.started,
            phase=self.ctx.phase,
            problem=metrics.problem,
            stopping=stop_acknowledgement(stop.signum) if stop is not None else None,
        )
