"""Applying a batch of webhook events: the same source, conversion and load as a run.

A batch is an `EventPlan` (see `sources.pipedrive.events`). It runs as a run's chunks do —
`pipedrive_source` with the batch's entities, dlt extract → normalize → load, with the sync
state committed with the data — except that the entities named by id are read through their
lists' `ids` parameter instead of by `updated_since` (their cursors stay where the polls left
them), the entities read through their lists are read as a poll reads them, and afterwards:

* rows of ids no list returned any more (deleted persons, merged-away organizations, …) and
  rows of deleted leads and notes are flagged `is_deleted` (or deleted with `hard_deletes`);
* rows that vanished from a small list read in full are flagged, as a run does;
* renamed option labels are rewritten, retired fields restored, and the views recreated when
  the batch added columns.

The warehouse is opened (for DuckDB: the file attached) for the batch only. The listener holds
the warehouse's lock for its whole life; the `sync_identity` check ran when it started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import dlt

from sources.pipedrive import RunContext, select_entities
from sources.pipedrive.entities import ENTITY_BY_NAME
from sources.pipedrive.events import EventPlan
from sources.pipedrive.postload import (
    apply_label_changes,
    mark_deleted,
    mark_vanished,
    restore_retired,
    retired_columns,
)
from sources.pipedrive.source import LABEL_CHANGES_TABLE

from .connect import Holder, open_target
from .result import RunResult
from .runner import _finish_pending, _run_chunks, make_pipeline
from .settings import RunSettings
from .views import create_views


@dataclass
class BatchResult:
    """What one batch did."""

    rows: dict[str, int] = field(default_factory=dict)  # entity → rows loaded
    flagged: dict[str, int] = field(default_factory=dict)  # entity → rows flagged deleted
    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why reading stopped early (the batch is retried)


def batch_options(ctx: RunContext, plan: EventPlan) -> Any:
    """A run's options for a batch: no reconcile, no forced refreshes, and every list of the
    entities the plan reads in full (or whose archived list it needs) due now."""
    options = ctx.options
    overrides = {**options.refresh_overrides, **dict.fromkeys(plan.due_now, timedelta(0))}
    return replace(
        options,
        reconcile=frozenset(),
        refresh_all=False,
        force_fields_refresh=False,
        refresh_overrides=overrides,
    )


def apply_batch(
    settings: RunSettings, ctx: RunContext, plan: EventPlan, holder: Holder
) -> BatchResult:
    """Read and load what `plan` names, then flag what it deleted. `ctx` is a fresh run
    context whose `stored`, `company` and `pipeline_name` come from the listener's last run."""
    started = time.monotonic()
    ctx.options = batch_options(ctx, plan)
    ctx.event_ids = {name: frozenset(ids) for name, ids in plan.by_ids.items()}
    ctx.event_parents = {name: frozenset(ids) for name, ids in plan.parents.items()}
    ctx.prepared = True
    entities = select_entities(plan.entities) if plan.entities else ()
    result = BatchResult()
    with open_target(settings, ctx.company, holder=holder) as target:
        pipeline = make_pipeline(settings, target, ctx.pipeline_name)
        if pipeline.has_pending_data:  # a batch or poll a kill interrupted: load it first
            _finish_pending(pipeline, entities)
        version = _schema_version(pipeline)
        run = RunResult(ctx=ctx)
        if entities:
            _run_chunks(pipeline, settings, ctx, entities, run, target)
        if ctx.stopped_by is not None:
            result.stopped = str(ctx.stopped_by)
        else:
            result.flagged = _flag_deleted(pipeline, settings, ctx, plan)
        if LABEL_CHANGES_TABLE in _loaded_tables(pipeline, run.load_ids):
            apply_label_changes(pipeline, LABEL_CHANGES_TABLE)  # else the next poll's check
        restore_retired(pipeline, retired_columns(pipeline.state))
        if _schema_version(pipeline) != version:
            create_views(pipeline)  # new custom-field columns appear in the views
    result.rows = {r.name: r.rows for r in ctx.ordered_reports() if r.rows}
    result.requests = ctx.client.metrics.requests
    result.tokens = ctx.client.metrics.tokens
    result.seconds = time.monotonic() - started
    return result


def _loaded_tables(pipeline: dlt.Pipeline, load_ids: list[str]) -> set[str]:
    """The tables these loads wrote rows into."""
    tables: set[str] = set()
    for load_id in load_ids:
        info = pipeline.get_load_package_info(load_id)
        for jobs in info.jobs.values():
            tables.update(job.job_file_info.table_name for job in jobs)
    return tables


def _schema_version(pipeline: dlt.Pipeline) -> int | None:
    return pipeline.default_schema.version if pipeline.default_schema_name else None


def _flag_deleted(
    pipeline: dlt.Pipeline, settings: RunSettings, ctx: RunContext, plan: EventPlan
) -> dict[str, int]:
    hard = settings.options.hard_deletes
    flagged: dict[str, int] = {}
    for name, ids in ctx.complete_listings.items():
        entity = ENTITY_BY_NAME[name]
        flagged[name] = mark_vanished(pipeline, name, entity.id_column, ids, hard=hard)
    gone: dict[str, set[Any]] = {}
    for source in (ctx.missing_ids, plan.deleted):
        for name, ids in source.items():
            gone.setdefault(name, set()).update(ids)
    for name, ids in gone.items():
        entity = ENTITY_BY_NAME[name]
        count = mark_deleted(pipeline, name, entity.id_column, ids, hard=hard)
        flagged[name] = flagged.get(name, 0) + count
    return {name: count for name, count in flagged.items() if count}
