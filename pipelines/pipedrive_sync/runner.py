"""One sync run, as named steps: prepare, extract and load chunks, post-load, outcome.

prepare   whose credentials (`/v1/users/me`), the warehouse opened and held for the run
          (`connect`), its identity checked before anything is written, the dlt pipeline
          restored from what the warehouse committed (or its pending packages finished)
chunks    extract → normalize → load, `chunk_pages` pages per entity at a time
post-load flag vanished rows, rewrite renamed labels, restore retired fields, views
outcome   the exit status and message, and the run's rows in `sync_runs`
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import dlt
import pyarrow as pa

from sources.pipedrive import RunContext, deal_history, pipedrive_source, select_entities
from sources.pipedrive.account import fetch_company
from sources.pipedrive.backfill import (
    LABEL as BACKFILL_LABEL,
)
from sources.pipedrive.backfill import (
    TOKENS_PER_DEAL,
    BackfillOutcome,
    backfill_source,
    plan_backfill,
)
from sources.pipedrive.dlt_adapter import (
    adopt_extracted_schemas,
    adopt_legacy_state,
    drop_committed_extracts,
    restore_from_warehouse,
    truncated_staging,
)
from sources.pipedrive.entities import ENTITY_BY_NAME, Strategy
from sources.pipedrive.http import ApiTokenAuth, Auth, FileTokenStore, OAuthAuth, PipedriveClient
from sources.pipedrive.http.client import normalize_base_url
from sources.pipedrive.http.errors import BudgetExhausted
from sources.pipedrive.identity import DEFAULT_PIPELINE_NAME, check_company
from sources.pipedrive.postload import (
    add_planned_columns,
    apply_label_changes,
    backup_retired,
    drop_duplicate_ids,
    empty_tables,
    heal_destination_schema,
    mark_vanished,
    restore_retired,
    retired_columns,
)
from sources.pipedrive.source import HISTORY_ENTITY, LABEL_CHANGES_TABLE
from sources.pipedrive.stored import Stored, read_stored
from sources.pipedrive.sync_state import SOURCE_KEY, has_cursor, source_state

from . import exit_codes, packages
from .connect import (
    Holder,
    Target,
    duckdb_destination,
    hold_postgres,
    open_target,
    release_duckdb_memory,
)
from .destinations import check_destination
from .history import RUNS_TABLE, last_reconciled, record_run, runs_table
from .result import RunResult
from .settings import RunSettings
from .views import create_views, drop_views

__all__ = ["RunResult", "duckdb_destination", "make_context", "make_pipeline", "run_sync"]

logger = logging.getLogger(__name__)
SOURCE_STATE = SOURCE_KEY  # the dlt schema, and the key of the source's state


def run_sync(settings: RunSettings, ctx: RunContext | None = None) -> RunResult:
    """Sync Pipedrive into the configured destination. Raises on failures (see exit_codes)."""
    started = time.monotonic()
    entities = select_entities(settings.entities)
    destination = check_destination(settings.destination)  # unusable: stop before any call
    if ctx is None:
        ctx = make_context(settings)
    result = RunResult(ctx=ctx, metrics=ctx.client.metrics)
    _use_oauth_api_domain(ctx, settings)
    ctx.company = fetch_company(ctx.client)  # rejected credentials stop here: nothing created
    entities = _within_scopes(ctx, entities)
    if not entities:
        _decide_outcome(ctx, result)
        return result
    with (
        open_target(settings, ctx.company, destination) as target,
        _prepared(target, settings, ctx, entities, result) as pipeline,
    ):
        result.pipeline_name = pipeline.pipeline_name
        _warn_unused_start_date(pipeline, settings, entities)
        started_at = datetime.now(UTC)
        ctx.options = replace(ctx.options, reconcile=_reconcile_due(pipeline, settings, entities))
        if settings.full_refresh:
            drop_views(pipeline)  # PostgreSQL will not drop tables that views depend on
        _run_chunks(pipeline, settings, ctx, entities, result, target)
        ctx.phase = "finishing"
        _post_load(pipeline, settings, ctx, result)
        if settings.backfill_history and not ctx.stopping:
            _backfill_history(pipeline, settings, ctx, result, target)
        result.seconds = time.monotonic() - started
        _decide_outcome(ctx, result)
        record_run(pipeline, result, started_at)
    return result


def make_context(settings: RunSettings) -> RunContext:
    """The per-run context (HTTP client, options, live per-entity reports) for these settings.

    Create it yourself and pass it to `run_sync` to watch a run's progress from another thread.
    """
    auth: Auth
    if settings.oauth is not None:
        oauth = settings.oauth
        store_path = oauth.token_store or (
            settings.data_dir / "pipedrive-oauth" / f"{oauth.client_id}.json"
        )
        auth = OAuthAuth(
            oauth.client_id,
            oauth.client_secret,
            oauth.refresh_token,
            oauth.token_url,
            FileTokenStore(store_path),
        )
    else:
        auth = ApiTokenAuth(settings.token)
    client = PipedriveClient(settings.base_url, auth, settings.http)
    return RunContext(client=client, options=settings.options)


def make_pipeline(
    settings: RunSettings, target: Target | Any = None, name: str = DEFAULT_PIPELINE_NAME
) -> dlt.Pipeline:
    """The dlt pipeline of a warehouse: its local working state lives in a directory of its
    location's own. `target` is an opened `Target`, or a bare dlt destination for a DuckDB
    warehouse at `settings.duckdb_path` (tests, benchmarks)."""
    if not isinstance(target, Target):
        path = settings.duckdb_path.expanduser().resolve()
        target = Target(target, f"duckdb|{path}#{settings.dataset}", settings.dataset)
    return dlt.pipeline(
        pipeline_name=name,
        pipelines_dir=str(settings.pipelines_dir / "pipedrive-sync" / target.local_dir),
        destination=target.destination,
        dataset_name=settings.dataset,
    )


# -- prepare --------------------------------------------------------------------------------
@contextmanager
def _prepared(
    target: Target, settings: RunSettings, ctx: RunContext, entities: Any, result: RunResult
) -> Iterator[dlt.Pipeline]:
    """The run's pipeline, once the warehouse is held and its identity checked; its state is
    what the warehouse committed (or the pending packages are finished first)."""
    with ExitStack() as stack:
        pipeline = make_pipeline(settings, target)
        if target.connection is None and _is_postgres(pipeline):
            stack.enter_context(
                hold_postgres(pipeline, Holder.this_run(settings.dataset, ctx.company))
            )
        with pipeline.sql_client() as client:
            stored = read_stored(client)
        assert ctx.company is not None
        check_company(stored.identity, ctx.company, _describe(target, settings))
        name = stored.identity.pipeline_name if stored.identity else DEFAULT_PIPELINE_NAME
        if name != pipeline.pipeline_name:
            pipeline = make_pipeline(settings, target, name)
        set_aside = _finish_pending(pipeline, entities) if pipeline.has_pending_data else ""
        if set_aside:  # what it held is read again, the field definitions included
            result.warnings.append(set_aside)
            ctx.options = replace(ctx.options, force_fields_refresh=True)
        if set_aside is not None:  # nothing was pending, or the state went with the package
            pipeline = restore_from_warehouse(pipeline)
            adopt_legacy_state(pipeline, SOURCE_STATE)
        # a full refresh drops every table: nothing recorded survives it but the check above
        ctx.stored = Stored() if settings.full_refresh else stored
        ctx.pipeline_name = pipeline.pipeline_name
        ctx.prepared = True
        yield pipeline


def _warn_unused_start_date(pipeline: dlt.Pipeline, settings: RunSettings, entities: Any) -> None:
    """--start-date only shapes a first sync: say so for the entities that already have one."""
    start = settings.options.start_date
    if not (settings.start_date_asked and start) or settings.full_refresh:
        return
    unsynced = set(_unsynced_tables(pipeline, entities))
    synced = [name for name in _incremental_tables(entities) if name not in unsynced]
    if synced:
        logger.warning(
            f"--start-date {start} applies only to a first sync: {', '.join(synced)} already"
            " synced and go on from where they stopped (--full-refresh starts over from it)"
        )


def _is_postgres(pipeline: dlt.Pipeline) -> bool:
    return str(pipeline.destination.destination_type).endswith(".postgres")


def _describe(target: Target, settings: RunSettings) -> str:
    if target.connection is not None:
        return f"{settings.duckdb_path} (dataset {settings.dataset!r})"
    return f"the {settings.destination} dataset {settings.dataset!r}"


def _finish_pending(pipeline: dlt.Pipeline, entities: Any) -> str | None:
    """An interrupted run left extracted or normalized packages: load them first. Returns
    the warning when one was set aside (see `packages`)."""
    drop_committed_extracts(pipeline)
    adopt_extracted_schemas(pipeline)
    backup_retired(pipeline, retired_columns(pipeline.state))
    if pipeline.list_extracted_load_packages():
        pipeline.normalize()  # before healing: normalizing can add columns
    heal_destination_schema(pipeline)  # each pending package against its own schema
    set_aside = packages.load_pending(pipeline)  # the pending packages (and only them)
    # a re-run append job (first syncs append into empty tables) repeats its rows
    drop_duplicate_ids(
        pipeline,
        _with_history(_incremental_tables(entities)),
        key_columns={deal_history.HISTORY_TABLE: deal_history.KEY},
    )
    return set_aside


def _use_oauth_api_domain(ctx: RunContext, settings: RunSettings) -> None:
    """With OAuth the first access token's `api_domain` is the API root, unless one was
    configured explicitly."""
    auth = ctx.client.auth
    if isinstance(auth, OAuthAuth) and not settings.base_url_explicit:
        domain = auth.api_domain
        if domain:
            ctx.client.base_url = normalize_base_url(domain)


def _within_scopes(ctx: RunContext, entities: Any) -> tuple[Any, ...]:
    """With OAuth, skip up front the entities the granted scopes cannot read (one line each)."""
    auth = ctx.client.auth
    if not isinstance(auth, OAuthAuth):
        return tuple(entities)
    granted = auth.scopes
    readable = []
    for entity in entities:
        if not entity.scopes or granted & set(entity.scopes):
            readable.append(entity)
            continue
        report = ctx.report(entity.name)
        report.status = "skipped"
        report.message = f"the OAuth app lacks a scope for {entity.name}: grant " + " or ".join(
            entity.scopes[:2]
        )
    return tuple(readable)


def _reconcile_due(pipeline: dlt.Pipeline, settings: RunSettings, entities: Any) -> frozenset[str]:
    """Incremental entities whose ids should be listed in full this run (bounded token cost)."""
    candidates = {e.name for e in entities if e.strategy is Strategy.UPDATED_SINCE}
    if settings.force_reconcile:
        return frozenset(candidates)
    last = last_reconciled(pipeline)
    if last is None:  # nothing synced yet: the first run reads everything anyway
        return frozenset()
    now = datetime.now(UTC)
    # an entity without any recorded run is read in full by its first sync: not due yet
    return frozenset(
        name
        for name in candidates
        if name in last and now - last[name] >= settings.reconcile_interval
    )


# -- chunks ---------------------------------------------------------------------------------
def _loader_format(pipeline: dlt.Pipeline) -> str | None:
    """Parquet where the destination takes it (DuckDB, Snowflake, BigQuery…), else its default."""
    capabilities = pipeline.destination.capabilities()
    formats = capabilities.supported_loader_file_formats or []
    return "parquet" if "parquet" in formats else None


def _run_chunks(
    pipeline: dlt.Pipeline,
    settings: RunSettings,
    ctx: RunContext,
    entities: Any,
    result: RunResult,
    target: Target,
) -> None:
    file_format = _loader_format(pipeline)
    refresh: Any = "drop_sources" if settings.full_refresh else None
    while True:
        ctx.begin_chunk()
        ctx.phase = "fetching"
        ctx.empty_tables = empty_tables(pipeline, _unsynced_tables(pipeline, entities))
        source = pipedrive_source(
            api_token=settings.token or "unused",
            base_url=settings.base_url,
            entities=[e.name for e in entities],
            ctx=ctx,
        )
        if target.connection is not None and not _has_table(pipeline, RUNS_TABLE):
            # created with this load, so the run's rows need no load of their own (an empty
            # parquet job is something only some destinations accept)
            source.resources.add(runs_table())
        pipeline.extract(
            source,
            loader_file_format=file_format,  # type: ignore[arg-type]
            refresh=refresh,
            workers=settings.options.parallel_entities,  # dlt's pool for parallel entities
        )
        refresh = None
        ctx.phase = "loading"
        # fields deleted in Pipedrive: keep their loaded values before the load can null them
        backup_retired(pipeline, retired_columns(pipeline.state))
        pipeline.normalize()
        pa.default_memory_pool().release_unused()  # arrow keeps freed pages; DuckDB needs them now
        heal_destination_schema(pipeline)
        with truncated_staging():
            info = packages.load(pipeline)  # a refusal: one line, retried by the next run
        if target.connection is not None:
            release_duckdb_memory(target.connection)
        result.chunks += 1
        result.load_ids.extend(info.loads_ids)
        if ctx.stopping or not ctx.has_more:
            break


def _has_table(pipeline: dlt.Pipeline, table: str) -> bool:
    return bool(pipeline.default_schema_name) and table in pipeline.default_schema.tables


def _incremental_tables(entities: Any) -> list[str]:
    return [e.name for e in entities if e.strategy is Strategy.UPDATED_SINCE]


def _unsynced_tables(pipeline: dlt.Pipeline, entities: Any) -> list[str]:
    """Incremental entities without any cursor yet: their tables may still be empty (asking
    the destination only for these keeps a cron run from querying every table)."""
    source = source_state(pipeline.state, pipeline.default_schema_name or SOURCE_STATE)
    return _with_history(
        [name for name in _incremental_tables(entities) if not has_cursor(source, name)]
    )


def _with_history(tables: list[str]) -> list[str]:
    """With the deals their history: its candidate versions are appended with them."""
    return [*tables, deal_history.HISTORY_TABLE] if HISTORY_ENTITY in tables else tables


# -- post-load and outcome --------------------------------------------------------------------
def _post_load(
    pipeline: dlt.Pipeline, settings: RunSettings, ctx: RunContext, result: RunResult
) -> None:
    for entity_name, ids in ctx.complete_listings.items():
        entity = ENTITY_BY_NAME[entity_name]
        result.vanished[entity_name] = mark_vanished(
            pipeline, entity_name, entity.id_column, ids, hard=settings.options.hard_deletes
        )
    add_planned_columns(pipeline, ctx.planned_columns)  # fields no row has a value of yet
    result.labels_rewritten = apply_label_changes(pipeline, LABEL_CHANGES_TABLE)
    retired = retired_columns(pipeline.state)
    restore_retired(pipeline, retired)
    deal_history.close_versions(pipeline, retired.get("deals", ()))
    if result.vanished.get("deals"):
        deal_history.record_flagged_deletions(pipeline)
    create_views(pipeline)  # analytics views, recreated so new custom columns appear


# -- history backfill ---------------------------------------------------------------------------
BACKFILL_CHUNK_DEALS = 2_000  # deals per load: progress is committed at least this often


def _backfill_history(
    pipeline: dlt.Pipeline,
    settings: RunSettings,
    ctx: RunContext,
    result: RunResult,
    target: Target,
) -> None:
    """Read older deal history from the changelogs, within this run's token allowance; the
    cost is told before it starts (`RunContext.notify`), progress committed per load."""
    plan = plan_backfill(pipeline)
    outcome = BackfillOutcome(plan, settings.backfill_max_tokens)
    result.backfill = outcome
    ctx.tell("backfill_started", describe_backfill_plan(outcome), **_backfill_numbers(outcome))
    if plan.done:
        return
    file_format = _loader_format(pipeline)
    while not ctx.stopping:
        before = outcome.deals
        source = backfill_source(ctx, pipeline, outcome, BACKFILL_CHUNK_DEALS)
        pipeline.extract(source, loader_file_format=file_format)  # type: ignore[arg-type]
        pipeline.normalize()
        heal_destination_schema(pipeline)
        with truncated_staging():
            pipeline.load()
        if target.connection is not None:
            release_duckdb_memory(target.connection)
        result.chunks += 1
        if outcome.deals - before < BACKFILL_CHUNK_DEALS or outcome.stopped:
            break
    deal_history.close_versions(pipeline, retired_columns(pipeline.state).get("deals", ()))
    spent = ctx.client.metrics.by_label.get(BACKFILL_LABEL)
    outcome.tokens = spent.tokens if spent else 0
    left = plan_backfill(pipeline)
    outcome.left = left.remaining
    ctx.tell("backfill_finished", describe_backfill_outcome(outcome), **_backfill_numbers(outcome))


def _backfill_numbers(outcome: BackfillOutcome) -> dict[str, int]:
    return {
        "deals_left": outcome.left if outcome.deals else outcome.plan.remaining,
        "estimated_tokens": outcome.plan.tokens,
        "max_tokens": outcome.max_tokens,
        "deals": outcome.deals,
        "versions": outcome.versions,
        "tokens": outcome.tokens,
    }


def describe_backfill_plan(outcome: BackfillOutcome) -> str:
    plan = outcome.plan
    if plan.done:
        return "history backfill: complete (every deal's changelog was read)"
    runs = -(-plan.tokens // outcome.max_tokens) if plan.tokens else 0
    return (
        f"history backfill: {plan.remaining:,} deals left, about {plan.tokens:,} API tokens"
        f" ({TOKENS_PER_DEAL} per deal); this run spends at most {outcome.max_tokens:,}"
        + (f" (about {runs} runs to go)" if runs > 1 else "")
    )


def describe_backfill_outcome(outcome: BackfillOutcome) -> str:
    done = (
        f"history backfill: {outcome.deals:,} deals read ({outcome.tokens:,} API tokens),"
        f" {outcome.versions:,} versions"
    )
    if not outcome.left:
        return done + "; complete"
    why = f" ({outcome.stopped})" if outcome.stopped else ""
    return done + f"; {outcome.left:,} deals left for the next --backfill-history run{why}"


def _decide_outcome(ctx: RunContext, result: RunResult) -> None:
    reports = ctx.ordered_reports()
    if ctx.stopped_by is not None:
        result.code = ctx.stopped_by.exit_code
        for report in reports:
            if report.more:  # pages left: its data is not current yet (`status` must not say so)
                report.status = "stopped"
        unfinished = [r.name for r in reports if r.status == "stopped"]
        if result.backfill is not None and result.backfill.left:
            unfinished.append(f"the history backfill ({result.backfill.left:,} deals)")
        waiting = ""
        if isinstance(ctx.stopped_by, BudgetExhausted) and ctx.stopped_by.retry_after:
            hours, rest = divmod(int(ctx.stopped_by.retry_after), 3600)
            waiting = f"; the budget resets in about {hours}h{rest // 60:02d}m"
        result.message = f"{ctx.stopped_by}{waiting}; everything fetched so far is loaded" + (
            f"; left for the next run: {', '.join(unfinished)}" if unfinished else ""
        )
        return
    skipped = [r for r in reports if r.status == "skipped"]
    if reports and len(skipped) == len(reports):
        result.code = exit_codes.AUTH
        result.message = "the credentials may not read any selected entity: " + skipped[0].message
