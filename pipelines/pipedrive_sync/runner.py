"""One sync run: lock, pipeline, chunked extract/load, post-load steps, result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pyarrow as pa
from filelock import FileLock, Timeout

from sources.pipedrive import RunContext, pipedrive_source, select_entities
from sources.pipedrive.entities import ENTITY_BY_NAME, Api, Strategy
from sources.pipedrive.http import (
    ApiTokenAuth,
    Auth,
    EntityUnavailable,
    FileTokenStore,
    OAuthAuth,
    PipedriveClient,
    RequestMetrics,
)
from sources.pipedrive.http.client import normalize_base_url
from sources.pipedrive.http.errors import BudgetExhausted
from sources.pipedrive.postload import (
    apply_label_changes,
    backup_retired,
    drop_duplicate_ids,
    empty_tables,
    heal_destination_schema,
    mark_vanished,
    restore_retired,
    retired_columns,
)
from sources.pipedrive.source import LABEL_CHANGES_TABLE

from . import exit_codes
from .exit_codes import RunInProgress
from .history import RUNS_TABLE, last_reconciled, record_run, runs_table
from .process_memory import arrow_memory_from_jemalloc, map_large_blocks_separately
from .settings import RunSettings
from .views import create_views, drop_views


@dataclass
class RunResult:
    """What a run did; rendered by the CLI summary and inspected by tests."""

    code: int = exit_codes.OK
    message: str = ""
    ctx: RunContext | None = None
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    seconds: float = 0.0
    chunks: int = 0
    vanished: dict[str, int] = field(default_factory=dict)
    labels_rewritten: int = 0
    load_ids: list[str] = field(default_factory=list)
    pipeline_name: str = ""
    account: str = ""

    @property
    def reports(self) -> list[Any]:
        return self.ctx.ordered_reports() if self.ctx else []


DUCKDB_ALIAS = "pipedrive_sync_db"
DUCKDB_MEMORY_LIMIT = "192MB"  # bounds DuckDB at any account size (it spills beyond)
DUCKDB_CHECKPOINT_THRESHOLD = "16MiB"  # DuckDB's default
DUCKDB_THREADS = 1
# rows per DuckDB row group (its default is 122,880): a load writes each full row group to the
# file while it inserts ("optimistic writes"), instead of copying the whole load into the table
# and compressing it again at commit. 100k deals: append 0.69 s instead of 1.19 s, a merge of
# 100k into 100k 1.39 s instead of 1.95 s
DUCKDB_ROW_GROUP_SIZE = 32_768


def duckdb_destination(path: Path) -> tuple[Any, duckdb.DuckDBPyConnection]:
    """A dlt DuckDB destination writing to `path`, and the connection to close afterwards.

    The file is attached under a fixed alias instead of being opened directly: DuckDB names a
    file's catalog after the file, so `pipedrive.duckdb` with the dataset `pipedrive` makes every
    `pipedrive.<table>` reference ambiguous ("catalog or schema?") and loads would fail.
    """
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    path.parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(":memory:")
    quoted = str(path).replace("'", "''")
    connection.execute(
        f"ATTACH '{quoted}' AS {DUCKDB_ALIAS} (ROW_GROUP_SIZE {DUCKDB_ROW_GROUP_SIZE})"
    )
    connection.execute(f"USE {DUCKDB_ALIAS}")
    # bounded memory whatever the size of a load: DuckDB spills to `<file>.tmp` beyond this
    connection.execute(f"SET temp_directory = '{quoted}.tmp'")
    connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    connection.execute("SET preserve_insertion_order = false")
    # one thread: two append 100k deals faster (0.52 s vs 0.69 s) but each leaves a half-filled
    # row group per load, and a 1M-deal sync took longer (49 s vs 42 s) and peaked higher (481 vs
    # 450 MB) in its checkpoints. With DuckDB's default row groups one thread was faster outright.
    connection.execute(f"SET threads = {DUCKDB_THREADS}")
    credentials = DuckDbCredentials(
        connection,
        local_config={"schema": f"{DUCKDB_ALIAS}.main"},
        # dlt raises the threshold to 1 GB, so a big load is written twice: into the WAL at
        # commit, then again (compressed) at close. DuckDB's own default checkpoints at commit
        # and skips the WAL: load and close of 100k deals take ~20% less. Runs after dlt's setting.
        statements=[f"SET GLOBAL checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'"],
    )
    return dlt.destinations.duckdb(credentials), connection


def release_duckdb_memory(connection: duckdb.DuckDBPyConnection) -> None:
    """Hand DuckDB's cached pages back after a load (lowering the limit evicts them; they are
    on disk), so that the next chunk's extract does not stack on top of them."""
    try:
        connection.execute("SET memory_limit = '16MB'")
    except duckdb.Error:
        pass  # something still pinned: keep the cache
    finally:
        connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")


def make_pipeline(settings: RunSettings, destination: Any = None) -> dlt.Pipeline:
    """The dlt pipeline for these settings (`destination` overrides the configured one)."""
    if destination is None:
        destination = settings.destination
    # staging rows only matter during the merge; emptied after each load they stay out of
    # DuckDB's checkpoint (a fifth of the load time) and out of the file (an env var still wins)
    dlt.config["load.truncate_staging_dataset"] = True
    return dlt.pipeline(
        pipeline_name=settings.resolved_pipeline_name,
        pipelines_dir=str(settings.pipelines_dir),
        destination=destination,
        dataset_name=settings.dataset,
    )


def _loader_format(pipeline: dlt.Pipeline) -> str | None:
    """Parquet where the destination takes it (DuckDB, Snowflake, BigQuery…), else its default."""
    capabilities = pipeline.destination.capabilities()
    formats = capabilities.supported_loader_file_formats or []
    return "parquet" if "parquet" in formats else None


def run_sync(settings: RunSettings, ctx: RunContext | None = None) -> RunResult:
    """Sync Pipedrive into the configured destination. Raises on failures (see exit_codes)."""
    started = time.monotonic()
    map_large_blocks_separately()
    arrow_memory_from_jemalloc()
    settings.pipelines_dir.mkdir(parents=True, exist_ok=True)
    name = settings.resolved_pipeline_name
    lock = FileLock(str(settings.pipelines_dir / f"{name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunInProgress(
            f"another pipedrive-sync run is already syncing this destination (pipeline {name});"
            " try again when it has finished"
        ) from None
    try:
        return _run_locked(settings, ctx, started)
    finally:
        lock.release()


def make_context(settings: RunSettings) -> RunContext:
    """The per-run context (HTTP client, options, live per-entity reports) for these settings.

    Create it yourself and pass it to `run_sync` to watch a run's progress from another thread.
    """
    auth: Auth
    if settings.oauth is not None:
        oauth = settings.oauth
        store_path = oauth.token_store or (
            settings.pipelines_dir.parent / "pipedrive-oauth" / f"{oauth.client_id}.json"
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


def _run_locked(settings: RunSettings, ctx: RunContext | None, started: float) -> RunResult:
    entities = select_entities(settings.entities)
    if ctx is None:
        ctx = make_context(settings)
    result = RunResult(
        ctx=ctx, metrics=ctx.client.metrics, pipeline_name=settings.resolved_pipeline_name
    )
    result.account = _preflight(ctx, settings)  # rejected credentials stop here: nothing created
    entities = _within_scopes(ctx, entities)
    if not entities:
        _decide_outcome(ctx, entities, result)
        return result
    connection = None
    destination: Any = None
    if settings.destination == "duckdb":
        destination, connection = duckdb_destination(settings.duckdb_path.expanduser().resolve())
    started_at = datetime.now(UTC)
    try:
        pipeline = make_pipeline(settings, destination)
        if pipeline.has_pending_data:
            # an interrupted run left extracted or normalized packages: finish them first
            drop_committed_extracts(pipeline)
            adopt_extracted_schemas(pipeline)
            backup_retired(pipeline, retired_columns(pipeline.state))
            if pipeline.list_extracted_load_packages():
                pipeline.normalize()  # before healing: normalizing can add columns
            heal_destination_schema(pipeline)
            for load_id in pipeline.list_normalized_load_packages():
                heal_destination_schema(pipeline, pipeline.get_load_package_info(load_id).schema)
            info = pipeline.run()  # loads the pending packages (and only them)
            result.load_ids.extend(info.loads_ids if info else [])
            # a re-run append job (first syncs append into empty tables) repeats its rows
            drop_duplicate_ids(pipeline, _incremental_tables(entities))
        else:
            pipeline.sync_destination()  # a new machine restores cursors from the warehouse
        ctx.options = replace(ctx.options, reconcile=_reconcile_due(pipeline, settings, entities))
        if settings.full_refresh:
            drop_views(pipeline)  # PostgreSQL will not drop tables that views depend on
        _run_chunks(pipeline, settings, ctx, entities, result, connection)
        _post_load(pipeline, settings, ctx, result)
        result.seconds = time.monotonic() - started
        _decide_outcome(ctx, entities, result)
        record_run(pipeline, result, started_at)
    finally:
        if connection is not None:
            connection.close()
    return result


def adopt_extracted_schemas(pipeline: dlt.Pipeline) -> list[str]:
    """Make the pipeline's schema catch up with pending extracted packages; returns their ids.

    dlt commits an extracted package before it saves the pipeline's schema, and normalizes with
    the pipeline's schema, not the package's. A kill between the two left the schema without
    the columns the package added (a new custom field, a key first seen), the normalized package
    without them too, and its load failing on every later run ("table … does not have a column
    …"). The package's schema is the pipeline's at the end of that extract: a newer one wins.
    """
    adopted = []
    for load_id in pipeline.list_extracted_load_packages():
        schema = pipeline.get_load_package_info(load_id).schema
        current = pipeline.schemas.get(schema.name)
        if current is None or schema.version > current.version:
            pipeline.schemas.save_schema(schema)
            adopted.append(load_id)
    return adopted


def drop_committed_extracts(pipeline: dlt.Pipeline) -> list[str]:
    """Remove extracted packages that dlt already normalized.

    dlt's normalize renames its output into place and then deletes the extracted package; a
    kill between the two leaves both, and normalizing the package again fails ("Directory not
    empty"). The rename is the commit, so the extracted copy is obsolete.
    """
    extracted = pipeline._get_normalize_storage().extracted_packages
    load_storage = pipeline._get_load_storage()
    committed = {*load_storage.list_normalized_packages(), *load_storage.list_loaded_packages()}
    dropped = [load_id for load_id in extracted.list_packages() if load_id in committed]
    for load_id in dropped:
        extracted.delete_package(load_id)
    return dropped


def _preflight(ctx: RunContext, settings: RunSettings) -> str:
    """Check the credentials with the cheapest call (2 tokens) before anything is created;
    returns the account's domain. Skipped once the pipeline has synced (every token counts).

    With OAuth this also obtains the first access token, whose `api_domain` is the API root
    unless one was configured explicitly.
    """
    auth = ctx.client.auth
    if isinstance(auth, OAuthAuth) and not settings.base_url_explicit:
        domain = auth.api_domain
        if domain:
            ctx.client.base_url = normalize_base_url(domain)
    state = settings.pipelines_dir / settings.resolved_pipeline_name / "state.json"
    if state.exists():
        return ""  # a synced pipeline: a rejected token fails the first request just as well
    try:
        body, _ = ctx.client.get_json(Api.V1, "users/me", cost=2, label="users/me")
    except EntityUnavailable:
        return ""
    data = body.get("data") or {}
    return str(data.get("company_domain") or data.get("company_name") or "")


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
    return frozenset(
        name
        for name in candidates
        if name not in last or now - last[name] >= settings.reconcile_interval
    )


def _run_chunks(
    pipeline: dlt.Pipeline,
    settings: RunSettings,
    ctx: RunContext,
    entities: Any,
    result: RunResult,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> None:

    file_format = _loader_format(pipeline)
    refresh: Any = "drop_sources" if settings.full_refresh else None
    while True:
        ctx.begin_chunk()
        ctx.empty_tables = empty_tables(pipeline, _unsynced_tables(pipeline, entities))
        source = pipedrive_source(
            api_token=settings.token or "unused",
            base_url=settings.base_url,
            entities=[e.name for e in entities],
            ctx=ctx,
        )
        if settings.destination == "duckdb" and not _has_table(pipeline, RUNS_TABLE):
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
        # fields deleted in Pipedrive: keep their loaded values before the load can null them
        backup_retired(pipeline, retired_columns(pipeline.state))
        pipeline.normalize()
        pa.default_memory_pool().release_unused()  # arrow keeps freed pages; DuckDB needs them now
        heal_destination_schema(pipeline)
        info = pipeline.load()
        if connection is not None:
            release_duckdb_memory(connection)
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
    sources: Any = pipeline.state.get("sources", {})
    resources = sources.get(pipeline.default_schema_name or "pipedrive", {}).get("resources", {})
    unsynced = []
    for name in _incremental_tables(entities):
        streams = resources.get(name, {}).get("streams", {})
        if not any(stream.get("since") for stream in streams.values()):
            unsynced.append(name)
    return unsynced


def _post_load(
    pipeline: dlt.Pipeline, settings: RunSettings, ctx: RunContext, result: RunResult
) -> None:
    for entity_name, ids in ctx.complete_listings.items():
        entity = ENTITY_BY_NAME[entity_name]
        result.vanished[entity_name] = mark_vanished(
            pipeline, entity_name, entity.id_column, ids, hard=settings.options.hard_deletes
        )
    result.labels_rewritten = apply_label_changes(pipeline, LABEL_CHANGES_TABLE)
    restore_retired(pipeline, retired_columns(pipeline.state))
    create_views(pipeline)  # analytics views, recreated so new custom columns appear


def _decide_outcome(ctx: RunContext, entities: Any, result: RunResult) -> None:
    reports = ctx.ordered_reports()
    if ctx.stopped_by is not None:
        result.code = ctx.stopped_by.exit_code
        unfinished = [r.name for r in reports if r.status == "stopped" or r.more]
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
