"""`pipedrive-sync listen`: Pipedrive's webhooks v2 applied within seconds, polls as a net.

Lifecycle (one worker thread; the main thread only waits for SIGTERM / Ctrl-C):

1. whose credentials (`/v1/users/me`); the warehouse held for the listener's life (`run`s on
   it exit 75; for DuckDB the file itself is attached only while a batch or poll writes, so
   `query`, `status`, `shell` and other DuckDB clients get in between);
2. the journal replayed (`journal`), the receiver started (`receiver`, `/healthz` 503);
3. with `--public-url`: the webhooks registered (`sources.pipedrive.webhooks`);
4. a catch-up incremental run, then ready (`/healthz` 200);
5. events applied in batches (`event_batch`). Events are gathered for as long as the latency
   target allows (`webhook_latency_seconds` minus what the slower recent batches took): the
   more records a batch reads, the fewer API tokens per record (up to 100 ids per request);
   100 waiting events start a batch at once, and before the oldest is due only whole
   hundreds are applied. The normal incremental run every `--poll-minutes` (reconciling ids
   on its daily cadence);
6. on SIGTERM / Ctrl-C: the receiver closes, what is journaled is applied, exit 0 — within
   10 s (what could not be applied by then stays journaled for the next start).
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from rich.console import Console

from sources.pipedrive import RunContext, select_entities
from sources.pipedrive.account import fetch_company
from sources.pipedrive.events import (
    ENTITY_OBJECTS,
    InvalidEvent,
    WebhookEvent,
    parse_event,
    plan_events,
)
from sources.pipedrive.http import PipedriveClient, register_secret
from sources.pipedrive.identity import Company
from sources.pipedrive.webhooks import Registrations, Wanted, register_webhooks

from . import exit_codes
from .connect import Holder, Target, hold_duckdb, hold_postgres, location_of, open_target
from .event_batch import BatchResult, apply_batch
from .journal import Entry, Journal
from .progress import JsonReporter, LogFormat, PlainReporter, Reporter, RunInfo, Watcher
from .receiver import Answer, Receiver
from .runner import _use_oauth_api_domain, make_context, make_pipeline, run_sync
from .settings import SECTION, RunSettings, _config, _env_or_config

USER_ENV, PASSWORD_ENV = "PIPEDRIVE_WEBHOOK_USER", "PIPEDRIVE_WEBHOOK_PASSWORD"
DEFAULT_LATENCY_SECONDS = 4.5  # event → visible, what batching aims for
FIRST_BATCH_GUESS = 1.0  # seconds a batch takes, until one was measured
RECENT_BATCHES = 10  # the batch durations the estimate looks at
FULL_BATCH = 100  # events that start a batch at once (one `ids` request holds 100 records)
MAX_BATCH = 5_000  # events in one batch at most
ATTACH_WAIT = 1.0  # seconds a batch waits for a reader to let go of the DuckDB file, per try
BUSY_RETRY = 0.5  # then it tries again this much later
# after writing, the DuckDB file is left alone this long, so that readers waiting for it
# (they retry every 50 ms) get in even when batches follow each other
READER_GAP = 0.25
STOP_SECONDS = 9.5  # from SIGTERM to exit, whatever is still under way
MAX_BACKOFF = 60.0


def events_to_apply(pending: int, due: bool) -> int:
    """How many of the oldest pending events to apply now: all once the oldest is due; before
    that only whole requests' worth (100 records per 10 tokens), the rest gathering on."""
    if due:
        return pending
    return pending - pending % FULL_BATCH


class BatchDurations:
    """How long the next batch will take: the 80th percentile of the recent ones. A high
    quantile rather than a mean, so that the events gathered longest still become visible
    within the latency target on a machine whose batches vary; one slow outlier (the first
    batch's imports, a checkpoint) is not enough to shorten every gathering after it."""

    def __init__(self, first_guess: float = FIRST_BATCH_GUESS) -> None:
        self._recent: deque[float] = deque(maxlen=RECENT_BATCHES)
        self._first_guess = first_guess

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)

    @property
    def estimate(self) -> float:
        if not self._recent:
            return self._first_guess
        ordered = sorted(self._recent)
        return ordered[math.ceil(0.8 * len(ordered)) - 1]


@dataclass
class ListenSettings:
    """The listener's own settings (the warehouse and the sync come from `RunSettings`)."""

    user: str
    password: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8787
    public_url: str | None = None
    poll_interval: timedelta = timedelta(minutes=60)
    latency_seconds: float = DEFAULT_LATENCY_SECONDS

    @property
    def path(self) -> str:
        """Where events are POSTed: the path of the public URL, `/` without one."""
        return (urlsplit(self.public_url).path or "/") if self.public_url else "/"


def resolve_listen(
    host: str = "127.0.0.1",
    port: int = 8787,
    public_url: str | None = None,
    poll_minutes: float = 60.0,
) -> ListenSettings:
    """ListenSettings from flags, env and dlt secrets; ConfigError (exit 78) says what is wrong."""
    user = _env_or_config(USER_ENV, "webhook.user", secret=True)
    password = _env_or_config(PASSWORD_ENV, "webhook.password", secret=True)
    if not user or not password:
        raise exit_codes.ConfigError(
            f"no webhook credentials: set {USER_ENV} and {PASSWORD_ENV} (or"
            f" {SECTION}.webhook.user and .password in .dlt/secrets.toml); the receiver never"
            " runs without HTTP Basic auth"
        )
    if ":" in str(user):
        raise exit_codes.ConfigError(f"{USER_ENV} must not contain ':' (HTTP Basic auth)")
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise exit_codes.ConfigError(
                f"--public-url {public_url!r} is not an http(s) URL with a host"
            )
    if not 0 <= port <= 65535:
        raise exit_codes.ConfigError(f"--port {port} is not a TCP port")
    if poll_minutes <= 0:
        raise exit_codes.ConfigError(f"--poll-minutes must be positive, got {poll_minutes:g}")
    latency = _config("webhook_latency_seconds", DEFAULT_LATENCY_SECONDS)
    try:
        latency_seconds = float(latency)
    except (TypeError, ValueError):
        raise exit_codes.ConfigError(
            f"webhook_latency_seconds must be a number of seconds, got {latency!r}"
        ) from None
    register_secret(str(password))
    return ListenSettings(
        user=str(user),
        password=str(password),
        host=host,
        port=port,
        public_url=public_url,
        poll_interval=timedelta(minutes=poll_minutes),
        latency_seconds=max(0.0, latency_seconds),
    )


def journal_path(settings: RunSettings) -> Path:
    """The journal lives in the warehouse's local working directory (see `connect`)."""
    local = Target(None, location_of(settings), settings.dataset).local_dir
    return settings.pipelines_dir / "pipedrive-sync" / local / "listen" / "journal.jsonl"


# -- logs -------------------------------------------------------------------------------------
class ListenLog:
    """The listener's lines: plain timestamped text, or JSON objects (`--log-format json`)."""

    def __init__(
        self, log_format: LogFormat, quiet: bool, console: Console, out: TextIO | None = None
    ) -> None:
        self.quiet = quiet
        self.console = console
        self.json = JsonReporter(out) if log_format is LogFormat.json else None
        self.polls: Reporter = (
            Reporter() if quiet else self.json or PlainReporter(console, interval=30.0)
        )

    def emit(self, event: str, text: str, **fields: Any) -> None:
        if self.quiet:
            return
        if self.json is not None:
            self.json.emit(event, **fields)
        else:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)


@dataclass
class Status:
    """What `/healthz` reports."""

    state: str = "starting"  # starting | ready | stopping
    last_poll: datetime | None = None
    last_batch: datetime | None = None
    last_event_time: float | None = None  # meta.timestamp of the newest applied event
    applied: int = 0  # events applied since the start
    polls: int = 0  # runs completed since the start (the catch-up included)
    webhooks: list[int] = field(default_factory=list)


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float | int):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat().replace("+00:00", "Z")


# -- the listener -------------------------------------------------------------------------------
class Listener:
    """Receiver, journal, batches and polls of one warehouse (see the module docstring)."""

    def __init__(self, settings: RunSettings, listen: ListenSettings, log: ListenLog) -> None:
        self.settings = replace(settings, lock_wait=min(settings.lock_wait, ATTACH_WAIT))
        self.scope = exit_codes.Scope.of(settings)
        self.listen = listen
        self.log = log
        self.entities = tuple(e.name for e in select_entities(settings.entities))
        self.synced = frozenset(self.entities)
        self.status = Status()
        self.port: int | None = None  # the bound port, once listening
        self.listening = threading.Event()  # the receiver is up (`port` is known)
        self.ready = threading.Event()  # caught up: events are applied as they come
        self._progress = threading.Condition()  # notified after every batch and poll
        self._stop = threading.Event()
        self.stop_deadline: float | None = None
        self._journal: Journal | None = None
        self._client: PipedriveClient | None = None
        self._interruptible = False  # the work under way (a poll) may be cut short on stop
        self._company: Company | None = None
        self._holder: Holder | None = None
        self._stored: Any = None
        self._pipeline_name = ""
        self._next_poll = 0.0
        self._retry_at = 0.0
        self._failures = 0
        self._busy_since: float | None = None
        self._batch_durations = BatchDurations()
        self._readers_turn = 0.0  # no batch before this (monotonic): readers' turn
        self._registered = listen.public_url is None
        self._caught_up = False

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop accepting, apply what is journaled, return (from a signal handler too)."""
        if self._stop.is_set():
            return
        self.stop_deadline = time.monotonic() + STOP_SECONDS
        self._stop.set()
        self.status.state = "stopping"
        client = self._client
        if client is not None and self._interruptible:
            client.stop_event.set()  # a poll stops fetching and loads what it has
        if self._journal is not None:
            self._journal.wake()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_applied(self, timeout: float = 60.0) -> bool:
        """Block until every journaled event is applied (for tests and benchmarks)."""

        def done() -> bool:
            return self._journal is not None and not self._journal.pending()

        with self._progress:
            return self._progress.wait_for(done, timeout)

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def run(self) -> int:
        """The listener's life; returns the exit status (raises what `classify` maps)."""
        base = make_context(self.settings)
        self._client = base.client
        self._interruptible = True
        _use_oauth_api_domain(base, self.settings)
        self._company = fetch_company(base.client)
        self._holder = Holder.this_run(self.settings.dataset, self._company, "listen")
        with self._held():
            self._journal = Journal(journal_path(self.settings))
            replayed, torn = self._journal.replayed, self._journal.dropped_lines
            if replayed or torn:
                dropped = f"; {torn} torn line(s) dropped (writes cut short, never acknowledged)"
                self.log.emit(
                    "journal_replayed",
                    f"journal: {replayed} events received before the last stop are applied"
                    f" after the catch-up{dropped if torn else ''}",
                    events=replayed,
                    torn_lines=torn,
                )
            receiver = self._receiver()
            receiver.start()
            self._started(receiver)
            try:
                self._lifecycle()
            except BaseException:
                receiver.stop()
                self._journal.close()
                raise
            receiver.stop()
            self._drain()
            self._journal.close()
        self.log.emit("listen_stopped", "listener stopped", exit_code=0)
        return exit_codes.OK

    def _held(self) -> Any:
        """The warehouse, held for the listener's life (see `connect`)."""
        assert self._holder is not None
        if self.settings.destination == "duckdb":
            return hold_duckdb(self.settings, self._holder)
        return _held_elsewhere(self.settings, self._holder)

    def _receiver(self) -> Receiver:
        try:
            return Receiver(
                self.listen.host,
                self.listen.port,
                self.listen.path,
                (self.listen.user, self.listen.password),
                self.accept,
                self.health,
                self._refused,
            )
        except OSError as exc:
            raise exit_codes.ConfigError(
                f"cannot listen on {self.listen.host}:{self.listen.port}: {exc.strerror or exc}"
            ) from None

    def _started(self, receiver: Receiver) -> None:
        self.port = receiver.port
        self.listening.set()
        self.log.emit(
            "listen_started",
            f"listening on http://{self.listen.host}:{receiver.port}{self.listen.path}"
            f" → {RunInfo.from_settings(self.settings, self.entities).target}:"
            f" {', '.join(self.entities)}",
            host=self.listen.host,
            port=receiver.port,
            path=self.listen.path,
            public_url=self.listen.public_url,
            destination=self.settings.destination,
            dataset=self.settings.dataset,
            entities=list(self.entities),
        )

    def _lifecycle(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            if not self._registered and now >= self._retry_at:
                self._register()
            elif now >= self._next_poll:
                self._recheck_registrations()
                self._poll("poll" if self._caught_up else "catch-up")
            elif not self._apply_due(now):
                self._wait(now)
            self._notify()

    def _wait(self, now: float) -> None:
        assert self._journal is not None
        wake = [self._next_poll, now + 30.0]
        pending = self._journal.pending(1)
        if pending and self._caught_up:
            wake.append(max(self._due_at(pending[0]), self._retry_at, self._readers_turn))
        if not self._registered:
            wake.append(self._retry_at)
        self._journal.wait(max(0.01, min(wake) - now))

    def _due_at(self, oldest: Entry) -> float:
        """When (monotonic) the batch that `oldest` opens is due: as late as the latency
        target allows, given how long batches take (more events per batch, fewer tokens)."""
        gather = max(0.0, self.listen.latency_seconds - self._batch_durations.estimate)
        return time.monotonic() + oldest.received + gather - time.time()

    # -- receiving ----------------------------------------------------------------------------
    def accept(self, body: bytes) -> Answer:
        """A delivery's body → journaled (or ignored); raises InvalidEvent for a bad body."""
        event = parse_event(body)
        if not event.applicable or event.entity not in self.synced:
            self._ignored(event)
            return Answer(200, {"ok": True, "ignored": True})
        assert self._journal is not None
        entry = self._journal.append(event)
        return Answer(200, {"ok": True, "duplicate": entry is None})

    def _ignored(self, event: WebhookEvent) -> None:
        why = "an object that is not synced" if event.entity is None else "an entity not synced"
        if event.entity is not None and event.action not in ("create", "change", "delete"):
            why = "an unknown action"
        self.log.emit(
            "event_ignored",
            f"ignored a webhook event: {event.object} {event.action} (id {event.record_id}): {why}",
            object=event.object,
            action=event.action,
            record_id=event.record_id,
            reason=why,
        )

    def _refused(self, status: int, reason: str, client: str) -> None:
        self.log.emit(
            "request_refused",
            f"refused a request from {client}: {status} {reason}",
            status=status,
            reason=reason,
            client=client,
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        pending = self._journal.pending() if self._journal is not None else []
        now = time.time()
        body = {
            "status": self.status.state,
            "pending_events": len(pending),
            "lag_seconds": round(now - pending[0].received, 3) if pending else 0.0,
            "last_applied_event_time": _iso(self.status.last_event_time),
            "last_batch": _iso(self.status.last_batch),
            "last_poll": _iso(self.status.last_poll),
            "events_applied": self.status.applied,
            "webhooks": list(self.status.webhooks),
        }
        return (200 if self.status.state == "ready" else 503), body

    # -- registering --------------------------------------------------------------------------
    def _register(self) -> None:
        assert self.listen.public_url is not None and self._client is not None
        objects = tuple(sorted(ENTITY_OBJECTS[e] for e in self.entities if e in ENTITY_OBJECTS))
        wanted = Wanted(
            url=self.listen.public_url,
            objects=objects,
            user=self.listen.user,
            password=self.listen.password,
            name=f"pipedrive-sync {self.settings.dataset}",
        )
        try:
            done: Registrations = self._work(
                lambda: register_webhooks(self._fresh_client(), wanted)
            )
        except Exception as exc:  # noqa: BLE001 - classified: temporary ones are retried
            self._temporary_or_raise(exc, "registering webhooks")
            return
        self._registered = True
        self.status.webhooks = done.ids
        self.log.emit(
            "webhooks_registered",
            f"webhooks v2 at {self.listen.public_url}: {len(done.kept)} kept,"
            f" {len(done.created)} created, {len(done.removed)} removed"
            f" ({', '.join(done.objects)})",
            objects=done.objects,
            kept=done.kept,
            created=done.created,
            removed=done.removed,
        )

    def _recheck_registrations(self) -> None:
        """Before each poll: a registration Pipedrive banned (after failed deliveries) or
        deleted is replaced, and the poll then reads what its lost events changed."""
        if self._caught_up and self.listen.public_url is not None:
            self._register()

    # -- polls --------------------------------------------------------------------------------
    def _poll(self, reason: str) -> None:
        """The normal incremental run (the catch-up, then every --poll-minutes)."""
        ctx = self._context()
        reporter = self.log.polls
        reporter.run_started(RunInfo.from_settings(self.settings, self.entities))
        watcher = Watcher(ctx, self.entities, reporter)
        try:
            with watcher:
                result = self._work(lambda: run_sync(self.settings, ctx), interruptible=True)
        except Exception as exc:  # noqa: BLE001 - classified: temporary ones are retried
            reporter.run_failed(exit_codes.classify(exc, self.scope), watcher.snapshot())
            self._temporary_or_raise(exc, reason)
            self._next_poll = self._retry_at
            return
        reporter.run_finished(result, watcher.snapshot())
        self._stored, self._pipeline_name = ctx.stored, ctx.pipeline_name
        self.status.last_poll = datetime.now(UTC)
        self.status.polls += 1
        self._next_poll = time.monotonic() + self.listen.poll_interval.total_seconds()
        if result.code != exit_codes.OK:
            self.log.emit(
                "poll_incomplete",
                f"{reason}: {result.message}",
                reason=reason,
                exit_code=result.code,
            )
            if reason == "catch-up":
                self._next_poll = time.monotonic() + self._backoff()
                return
        self._failures = 0
        if not self._caught_up and not self.stopping:
            self._caught_up = True
            self.status.state = "ready"
            self.ready.set()
            self.log.emit("ready", "ready: applying webhook events as they come", reason=reason)

    # -- batches ------------------------------------------------------------------------------
    def _apply_due(self, now: float) -> bool:
        """Apply a batch when one is due; False when there is nothing to do yet."""
        assert self._journal is not None
        if not self._caught_up or now < max(self._retry_at, self._readers_turn):
            return False
        pending = self._journal.pending(MAX_BATCH)
        size = events_to_apply(len(pending), due=bool(pending) and now >= self._due_at(pending[0]))
        if not size:
            return False
        self._apply(pending[:size])
        return True

    def _apply(self, entries: list[Entry]) -> bool:
        assert self._journal is not None
        holder = self._holder
        assert holder is not None
        plan = plan_events((e.event for e in entries), self.synced)
        ctx = self._context()
        ctx.stored, ctx.company, ctx.pipeline_name = (
            self._stored,
            self._company,
            self._pipeline_name,
        )
        try:
            with Watcher(ctx, (), _RetriesOnly(self.log.polls)):
                result = self._work(lambda: apply_batch(self.settings, ctx, plan, holder))
            if result.stopped:
                raise exit_codes.RunInProgress(result.stopped)  # temporary: try again
        except Exception as exc:  # noqa: BLE001 - classified: temporary ones are retried
            self._temporary_or_raise(exc, "applying webhook events")
            return False
        self._journal.mark_applied(entries[-1].seq)
        self._applied(entries, plan.ignored, result)
        return True

    def _applied(self, entries: list[Entry], ignored: int, result: BatchResult) -> None:
        now = time.time()
        lags = [now - e.received for e in entries]
        times = [e.event.occurred_at for e in entries if e.event.occurred_at is not None]
        if times:
            self.status.last_event_time = max([*times, self.status.last_event_time or 0.0])
        self.status.applied += len(entries)
        self._batch_durations.add(result.seconds)
        self.status.last_batch = datetime.now(UTC)
        self._failures, self._busy_since = 0, None
        objects: dict[str, int] = {}
        for entry in entries:
            objects[entry.event.object] = objects.get(entry.event.object, 0) + 1
        rows, flagged = sum(result.rows.values()), sum(result.flagged.values())
        p50, worst = statistics.median(lags), max(lags)
        described = ", ".join(f"{k} {v}" for k, v in sorted(objects.items()))
        self.log.emit(
            "batch_applied",
            f"batch applied: {len(entries)} events ({described}), {rows} rows,"
            f" {flagged} flagged deleted, {result.requests} requests, {result.tokens} tokens,"
            f" lag {p50:.1f} s (max {worst:.1f} s), {result.seconds:.1f} s",
            events=len(entries),
            ignored=ignored,
            objects=objects,
            rows=rows,
            rows_by_entity=result.rows,
            flagged_deleted=flagged,
            requests=result.requests,
            tokens=result.tokens,
            lag_seconds=round(p50, 3),
            max_lag_seconds=round(worst, 3),
            seconds=round(result.seconds, 3),
            pending=len(self._journal.pending()) if self._journal else 0,
        )

    def _drain(self) -> None:
        """On stop: apply what is journaled (once; what fails stays for the next start)."""
        if self._journal is None or not self._caught_up:
            return
        pending = self._journal.pending()
        if not pending:
            return
        self._retry_at = 0.0
        applied = 0
        while pending and self._apply(pending[:MAX_BATCH]):
            applied += len(pending[:MAX_BATCH])
            pending = self._journal.pending()
        left = len(self._journal.pending())
        self.log.emit(
            "journal_drained",
            f"stopping: applied {applied} journaled events"
            + (f", {left} left for the next start" if left else ""),
            applied=applied,
            left=left,
        )

    # -- plumbing -----------------------------------------------------------------------------
    def _fresh_client(self) -> PipedriveClient:
        """The listener's client with new counters and stop flag for the next piece of work
        (one rate limiter and connection pool for the listener's life)."""
        assert self._client is not None
        self._client.renew()
        return self._client

    def _context(self) -> RunContext:
        return RunContext(client=self._fresh_client(), options=self.settings.options)

    def _work(self, work: Callable[[], Any], interruptible: bool = False) -> Any:
        self._interruptible = interruptible
        if interruptible and self.stopping and self._client is not None:
            self._client.stop_event.set()
        try:
            return work()
        finally:
            self._interruptible = False
            if self.settings.destination == "duckdb":
                self._readers_turn = time.monotonic() + READER_GAP

    def _backoff(self) -> float:
        self._failures += 1
        return float(min(MAX_BACKOFF, 2 ** min(self._failures, 6)))

    def _temporary_or_raise(self, exc: Exception, what: str) -> None:
        """A temporary failure: log it and retry later; anything else ends the listener."""
        failure = exit_codes.classify(exc, self.scope)
        if failure.code != exit_codes.TEMPORARY:
            raise exc
        now = time.monotonic()
        if _busy(exc):  # a reader has the DuckDB file open: try again soon, log it once a minute
            self._retry_at = now + BUSY_RETRY
            if self._busy_since is not None and now - self._busy_since < 60:
                return
            self._busy_since = now
            delay = BUSY_RETRY
        else:
            delay = self._backoff()
            self._retry_at = now + delay
        self.log.emit(
            "retrying",
            f"{what}: {failure.message}; trying again in {delay:.1f} s",
            what=what,
            exit_code=failure.code,
            message=failure.message,
            retry_in=delay,
        )


class _RetriesOnly(Reporter):
    """What a batch reports while it works: only the requests it retries (`retrying`, as
    `run` logs them), none of a run's progress lines."""

    def __init__(self, target: Reporter) -> None:
        self.target = target

    def retrying(self, problem: str) -> None:
        self.target.retrying(problem)


def _busy(exc: BaseException) -> bool:
    text = str(exc)
    return "open in another process" in text or "Could not set lock on file" in text


@contextmanager
def _held_elsewhere(settings: RunSettings, holder: Holder) -> Iterator[None]:
    """Another destination: its lock held for the listener's life (PostgreSQL: the advisory
    lock on a connection of its own)."""
    with open_target(settings, None, holder=holder) as target:
        if str(getattr(target.destination, "destination_type", "")).endswith(".postgres"):
            with hold_postgres(make_pipeline(settings, target), holder):
                yield
        else:
            yield


# -- the command ------------------------------------------------------------------------------
def run_listener(settings: RunSettings, listen: ListenSettings, log: ListenLog) -> int:
    """Run a listener until SIGTERM or Ctrl-C; returns the exit status (a failure raises).

    The listener works in a thread of its own, so that dlt (which intercepts signals on the
    main thread while it normalizes and loads) never sees the signals meant for the listener.
    """
    listener = Listener(settings, listen, log)
    outcome: list[int | BaseException] = []

    def work() -> None:
        try:
            outcome.append(listener.run())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)

    def on_signal(signum: int, _frame: Any) -> None:
        if not listener.stopping:
            log.emit("listen_stopping", f"{signal.Signals(signum).name}: stopping", signal=signum)
        listener.stop()

    worker = threading.Thread(target=work, name="pipedrive-listen", daemon=True)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
            deadline = listener.stop_deadline
            if deadline is not None and time.monotonic() > deadline and worker.is_alive():
                log.emit(
                    "listen_stopped",
                    "stopped before the last batch finished; it stays journaled for the next start",
                    exit_code=0,
                )
                _exit_now(exit_codes.OK)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    result = outcome[0] if outcome else exit_codes.OK
    if isinstance(result, BaseException):
        if listener.stopping and exit_codes.classify(result).code == exit_codes.TEMPORARY:
            return exit_codes.OK  # stopped while starting (a request cut short): nothing lost
        raise result
    return result


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown, which would wait for the stuck worker."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = [
    "InvalidEvent",
    "ListenLog",
    "ListenSettings",
    "Listener",
    "resolve_listen",
    "run_listener",
]
