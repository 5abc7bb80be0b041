"""`--backfill-history`: the versions of deals from before the sync saw them, read back from
each deal's changelog (`/v1/deals/{id}/changelog`, `TOKENS_PER_DEAL` API tokens a deal).

The deals are read in id order, up to the highest id when the backfill began (deals created
since are observed from their first version on); a cursor (the last deal done) is committed
with the versions it produced, so a run stopped by its token allowance, the daily budget or a
kill resumes with the next deal. Each run spends at most `max_tokens` on it, so the regular
syncs of the day keep their share of the company's budget.

The changelog has no `/flow` events for deals as such: `/v1/deals/{id}/flow` costs twice as
much and lists the same field changes among notes, mails and activities.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dlt
import orjson
import pyarrow as pa
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.extract.resource import DltResource

from . import deal_history
from .context import RunContext
from .convert import from_json_text
from .entities import ENTITY_BY_NAME
from .http import CursorPaginator, EntityUnavailable, TemporaryError
from .pages import ARROW_TYPES
from .schema import load_schema
from .sync_state import BackfillState, committed_resource, source_state

RESOURCE = "deal_history_backfill"
LABEL = "deal_history"  # API metrics label of the changelog requests
CHANGELOG = ENTITY_BY_NAME["deal_changes"]  # its endpoint, API version and token cost
TOKENS_PER_DEAL = CHANGELOG.streams[0].token_cost
BATCH_DEALS = 100


@dataclass
class BackfillPlan:
    """Where the backfill stands: deals after `after` up to `until` are left."""

    after: int | None
    until: int | None
    remaining: int
    done: bool = False

    @property
    def tokens(self) -> int:
        """API tokens the rest costs (one changelog page per deal; longer ones cost more)."""
        return self.remaining * TOKENS_PER_DEAL


@dataclass
class BackfillOutcome:
    """What a run's backfill did, for the summary."""

    plan: BackfillPlan
    max_tokens: int
    deals: int = 0
    versions: int = 0
    tokens: int = 0
    left: int = 0
    stopped: str = ""  # why it stopped before the end (allowance, budget…)
    messages: list[str] = field(default_factory=list)


def backfill_state(pipeline_state: Mapping[str, Any]) -> BackfillState:
    """The backfill's progress as the warehouse committed it (empty before the first one)."""
    return BackfillState(committed_resource(source_state(pipeline_state), RESOURCE))


def _scalar(client: Any, sql: str, *params: Any) -> Any:
    rows = client.execute_sql(sql, *params)
    return rows[0][0] if rows else None


def plan_backfill(pipeline: Any) -> BackfillPlan:
    """How many deals are left to backfill (the range is fixed by the first backfill)."""
    state = backfill_state(pipeline.state)
    if state.done:
        return BackfillPlan(state.after, state.until, 0, done=True)
    with pipeline.sql_client() as client:
        deals = client.make_qualified_table_name("deals")
        pk = client.escape_column_name("id")
        try:
            until = state.until
            if until is None:
                until = _scalar(client, f"SELECT max({pk}) FROM {deals}")
            after = state.after
            remaining = _scalar(
                client,
                f"SELECT count(*) FROM {deals} WHERE {pk} > %s AND {pk} <= %s",
                after if after is not None else -1,
                until if until is not None else -1,
            )
        except DestinationUndefinedEntity:
            return BackfillPlan(None, None, 0)
    return BackfillPlan(after, until, int(remaining or 0))


# -- reading -------------------------------------------------------------------------------------
def custom_changes(
    pipeline: Any, history_columns: Sequence[str]
) -> dict[str, deal_history.CustomColumn]:
    """Changelog key → column, for the deal custom fields the history keeps (from the
    warehouse's `custom_fields` mapping)."""
    wanted = set(history_columns)
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name("custom_fields")
            e = client.escape_column_name
            rows = client.execute_sql(
                f"SELECT {e('field_key')}, {e('column_name')}, {e('field_type')}, {e('options')}"
                f" FROM {table} WHERE {e('entity')} = 'deal' AND {e('is_active')} IS NOT FALSE"
            )
    except DestinationUndefinedEntity:
        return {}
    types = _history_types(pipeline)
    found: dict[str, deal_history.CustomColumn] = {}
    for key, column, field_type, options in rows or []:
        if field_type not in deal_history.CUSTOM_TYPES or column not in wanted:
            continue
        labels = {str(o.get("id")): str(o.get("label")) for o in from_json_text(options) or []}
        found[key] = deal_history.CustomColumn(
            column, types.get(column, "text"), labels, field_type
        )
        if field_type == "monetary" and f"{column}_currency" in wanted:
            found[f"{key}_currency"] = deal_history.CustomColumn(
                f"{column}_currency", "text", {}, "text"
            )
    return found


def _history_types(pipeline: Any) -> dict[str, str]:
    table = pipeline.default_schema.tables.get(deal_history.HISTORY_TABLE, {})
    return {
        name: column.get("data_type", "text")
        for name, column in (table.get("columns") or {}).items()
    }


def _current_deals(
    pipeline: Any, columns: Sequence[str], after: int | None, until: int, limit: int
) -> list[dict[str, Any]]:
    """The current rows of the next `limit` deals to backfill (their tracked columns)."""
    with pipeline.sql_client() as client:
        e = client.escape_column_name
        present = _deal_columns(client)
        selected = ["id", *(c for c in columns if c in present)]
        rows = client.execute_sql(
            f"SELECT {', '.join(e(c) for c in selected)}"
            f" FROM {client.make_qualified_table_name('deals')}"
            f" WHERE {e('id')} > %s AND {e('id')} <= %s ORDER BY {e('id')} LIMIT {int(limit)}",
            after if after is not None else -1,
            until,
        )
    return [dict(zip(selected, row, strict=True)) for row in rows or []]


def _deal_columns(client: Any) -> set[str]:
    with client.execute_query(
        f"SELECT * FROM {client.make_qualified_table_name('deals')} WHERE 1 = 0"
    ) as cursor:
        return {str(d[0]) for d in cursor.description}


class Backfill:
    """The generator behind the backfill resource (see the module docstring)."""

    def __init__(
        self, ctx: RunContext, pipeline: Any, outcome: BackfillOutcome, deals_limit: int
    ) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self.outcome = outcome
        self.deals_limit = deals_limit
        self.types = _history_types(pipeline)
        self.columns = deal_history.compared_columns(list(self.types))
        self.custom = custom_changes(pipeline, self.columns)

    def _allowance(self) -> int:
        """Deals this run may still read within its token allowance."""
        spent = self.ctx.client.metrics.by_label.get(LABEL)
        left = self.outcome.max_tokens - (spent.tokens if spent else 0)
        return max(0, left // TOKENS_PER_DEAL)

    def rows(self) -> Iterator[Any]:
        state = BackfillState(dlt.current.resource_state())
        plan = self.outcome.plan
        if plan.until is None:
            return  # no deal synced yet: nothing to read back
        state.start(plan.until, datetime.now(UTC))
        read = 0
        while not self.ctx.stopping and read < self.deals_limit and not state.done:
            batch = min(BATCH_DEALS, self.deals_limit - read, self._allowance())
            if batch <= 0:
                self.outcome.stopped = "its token allowance for this run is spent"
                return
            deals = _current_deals(self.pipeline, self.columns, state.after, state.until, batch)
            if not deals:
                state.finish(datetime.now(UTC))
                return
            versions, done = self._read(deals)
            read += done
            if done:
                state.advance(deals[done - 1]["id"])
                self.outcome.deals += done
                if state.after == state.until:
                    state.finish(datetime.now(UTC))
            if versions:
                self.outcome.versions += len(versions)
                yield self._table(versions)
            if done < len(deals):
                return

    def _table(self, versions: list[dict[str, Any]]) -> pa.Table:
        """Versions as an arrow table typed like the history table (loaded like the observed
        versions: arrow, without dlt's per-row ids)."""
        columns = {}
        for name in dict.fromkeys(key for version in versions for key in version):
            kind = self.types.get(name, "text")
            values = [version.get(name) for version in versions]
            if kind == "json":
                values = [None if v is None else orjson.dumps(v).decode() for v in values]
            columns[name] = pa.array(values, ARROW_TYPES.get(kind, pa.string()))
        return pa.table(columns)

    def _read(self, deals: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Versions of these deals from their changelogs, and how many deals were read whole
        (a failure stops the run: the deals before it count)."""
        stream = CHANGELOG.streams[0]
        limit = min(self.ctx.client.settings.page_limit, 500)
        lists: list[tuple[str, Mapping[str, Any]]] = [
            (stream.path.format(id=d["id"]), {}) for d in deals
        ]
        versions: list[dict[str, Any]] = []
        done = 0
        try:
            for deal, pages in zip(
                deals,
                self.ctx.client.iter_lists(
                    CHANGELOG.api,
                    lists,
                    lambda: CursorPaginator(limit=limit),
                    cost=stream.token_cost,
                    label=LABEL,
                ),
                strict=False,
            ):
                entries = [row for page in pages for row in page.rows]
                current = {
                    name: _json_value(name, value, self.types) for name, value in deal.items()
                }
                versions.extend(
                    deal_history.changelog_versions(current, entries, self.types, self.custom)
                )
                done += 1
        except (TemporaryError, EntityUnavailable) as exc:
            self.outcome.stopped = str(exc)
            if isinstance(exc, TemporaryError):
                self.ctx.stop(exc)
        for version in versions:
            version[deal_history.RECORDED_FROM] = "changelog"
            version["valid_to"] = None
        return versions, done


def _json_value(name: str, value: Any, types: Mapping[str, str]) -> Any:
    """A value read from the warehouse as dlt loads it again (JSON columns as objects)."""
    if types.get(name) == "json":
        return from_json_text(value)
    return value


@dlt.source(section="pipedrive", max_table_nesting=0, schema=load_schema())
def backfill_source(
    ctx: RunContext, pipeline: Any, outcome: BackfillOutcome, deals_limit: int
) -> Iterator[DltResource]:
    """The backfill as a resource of the `pipedrive` source (its state lives with the others)."""
    backfill = Backfill(ctx, pipeline, outcome, deals_limit)
    yield dlt.resource(
        backfill.rows(),
        name=RESOURCE,
        table_name=deal_history.HISTORY_TABLE,
        write_disposition="merge",
        primary_key=list(deal_history.KEY),
    )
