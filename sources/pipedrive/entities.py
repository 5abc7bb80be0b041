"""The entity table: every Pipedrive list this project syncs, declared as data.

Adding an entity is one `Entity(...)` entry below (plus data in the fake server). The HTTP layer,
the dlt source, the schema generator, the docs and the token accounting all read this table;
nothing else knows paths, API versions, costs or scopes (`*Fields`, `users/me` and `webhooks`
included). Costs and scopes are checked against the official specs by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Api(StrEnum):
    """Pipedrive API generations. Their URL prefixes live in `API_PREFIX`, nowhere else."""

    V1 = "v1"
    V2 = "v2"


API_PREFIX: Mapping[Api, str] = MappingProxyType({Api.V1: "/v1", Api.V2: "/api/v2"})
# tokens per page of a plain list (the spec's x-token-cost); each stream states its own
LIST_TOKEN_COST: Mapping[Api, int] = MappingProxyType({Api.V1: 20, Api.V2: 10})
# `/v1/users/me`: whose credentials these are, asked once per run (see `account`)
ME_PATH = "users/me"
ME_TOKEN_COST = 2
# `/v1/webhooks` (see `webhooks`): tokens per request by method; a DELETE is on `webhooks/{id}`
WEBHOOKS_PATH = "webhooks"
WEBHOOKS_TOKEN_COST: Mapping[str, int] = MappingProxyType({"get": 10, "post": 10, "delete": 6})


class Pagination(StrEnum):
    CURSOR = "cursor"  # additional_data.next_cursor (v2, and a few v1 lists)
    OFFSET = "offset"  # v1: additional_data.pagination.{more_items_in_collection,next_start}
    NONE = "none"  # a single response holds everything


class Strategy(StrEnum):
    """How an entity stays current between runs."""

    UPDATED_SINCE = "updated_since"  # incremental on update_time, merged on the primary key
    FULL_REFRESH = "full_refresh"  # re-read in full (on a cadence); only changed rows loaded
    PER_PARENT = "per_parent"  # fetched for the parent records that changed in this run


class Mode(StrEnum):
    """How one endpoint is read."""

    UPDATED_SINCE = "updated_since"  # `updated_since` = highest update_time loaded, ascending
    NEWEST_FIRST = "newest_first"  # no updated_since: sort newest first, stop at the cursor
    FULL = "full"  # read everything


MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Stream:
    """One endpoint feeding an entity's table (deals come from /deals and /deals/archived)."""

    key: str  # stable name of this stream's cursor state
    path: str  # may hold `{id}` for per-parent endpoints
    params: Mapping[str, str] = field(default_factory=dict)
    set_columns: Mapping[str, object] = field(default_factory=dict)  # constant columns added
    token_cost: int = 10  # per request, as the spec's x-token-cost says
    mode: Mode = Mode.UPDATED_SINCE
    refresh_every: timedelta | None = None  # None: every run; else at most this often
    listing_params: Mapping[str, str] | None = None  # params listing live ids (reconcile)
    data_key: str | None = None  # items live in data[data_key] instead of data
    page_limit: int | None = None  # the endpoint's own maximum page size, when below 500
    takes_ids: bool = False  # the list takes `ids` (up to 100 records by id: event batches)
    detail_path: str | None = None  # one record by id (`{id}`), for event batches
    detail_cost: int = 2


@dataclass(frozen=True)
class Entity:
    """One table in the warehouse and how to fill it from Pipedrive."""

    name: str  # resource and table name
    api: Api
    streams: tuple[Stream, ...]
    strategy: Strategy = Strategy.UPDATED_SINCE
    pagination: Pagination = Pagination.CURSOR
    primary_key: str | tuple[str, ...] = "id"
    cursor_field: str = "update_time"
    fields_path: str | None = None  # the *Fields endpoint describing custom fields
    fields_api: Api | None = None  # defaults to the entity's api
    fields_token_cost: int | None = None  # defaults to the list cost of `fields_api`
    singular: str = ""  # entity name in the custom_fields mapping table (deal, person, ...)
    default: bool = True  # part of the default entity set
    scopes: tuple[str, ...] = ()  # OAuth scopes that grant read access (any one suffices)
    parent: str | None = None  # PER_PARENT: the entity whose changed records drive this one
    parent_key: str | None = None  # PER_PARENT: column holding the parent id
    parent_batch: int = 1  # PER_PARENT: parent ids per request (`ids_param`), 1 = one per record
    ids_param: str | None = None  # PER_PARENT batched: the query parameter taking the ids
    synthetic_key: str | None = None  # a column filled with a digest of each row's content

    @property
    def has_custom_fields(self) -> bool:
        return self.fields_path is not None

    @property
    def effective_fields_api(self) -> Api:
        return self.fields_api or self.api

    @property
    def effective_fields_token_cost(self) -> int:
        """API tokens per page of the *Fields endpoint."""
        return self.fields_token_cost or LIST_TOKEN_COST[self.effective_fields_api]

    @property
    def reads_by_ids(self) -> bool:
        """Every list of the entity takes `ids`: changed records can be read by id."""
        return self.strategy is Strategy.UPDATED_SINCE and all(s.takes_ids for s in self.streams)

    @property
    def detail_stream(self) -> Stream | None:
        """The stream whose endpoint also serves one record by id (v1 leads, notes)."""
        return next((s for s in self.streams if s.detail_path), None)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (self.primary_key,) if isinstance(self.primary_key, str) else self.primary_key

    @property
    def id_column(self) -> str:
        """The single-column primary key (every entity but the per-parent ones has one)."""
        if not isinstance(self.primary_key, str):
            raise TypeError(f"{self.name} has a composite primary key")
        return self.primary_key


def _v2_incremental(path: str, cost: int = 10, **extra: Any) -> Stream:
    """A v2 list read by `updated_since` in update_time order (`extra` may add query params
    under `params` and any other Stream field)."""
    params = {"sort_by": "update_time", "sort_direction": "asc", **extra.pop("params", {})}
    return Stream(key=path, path=path, params=params, token_cost=cost, takes_ids=True, **extra)


def _v1_reference(path: str, cost: int = 20, every: int = 720, **extra: object) -> Stream:
    extra.setdefault("key", path)
    return Stream(
        path=path,
        token_cost=cost,
        mode=Mode.FULL,
        refresh_every=every * MINUTE,
        **extra,  # type: ignore[arg-type]
    )


def _v1_reference_entity(
    name: str,
    path: str,
    scopes: tuple[str, ...],
    *,
    cost: int = 20,
    pagination: Pagination = Pagination.NONE,
    primary_key: str = "id",
    cursor_field: str = "update_time",
    page_limit: int | None = None,
) -> Entity:
    """A small v1 reference list, re-read in full every 12 hours; only changed rows loaded."""
    return Entity(
        name=name,
        api=Api.V1,
        strategy=Strategy.FULL_REFRESH,
        pagination=pagination,
        primary_key=primary_key,
        cursor_field=cursor_field,
        streams=(_v1_reference(path, cost=cost, page_limit=page_limit),),
        scopes=scopes,
    )


DEALS_ALL = "open,won,lost,deleted"
DEALS_LIVE = "open,won,lost"
DEAL_SCOPES = ("deals:read", "deals:full")
CONTACT_SCOPES = ("contacts:read", "contacts:full")
LEAD_SCOPES = ("leads:read", "leads:full")
PROJECT_SCOPES = ("projects:read", "projects:full")
ANY_RECORD_SCOPES = (*DEAL_SCOPES, "activities:read", "activities:full", *CONTACT_SCOPES)

ENTITIES: tuple[Entity, ...] = (
    # -- core CRM (v2, incremental) ---------------------------------------------------------
    Entity(
        name="deals",
        api=Api.V2,
        streams=(
            _v2_incremental(
                "deals", params={"status": DEALS_ALL}, listing_params={"status": DEALS_LIVE}
            ),
            _v2_incremental(
                "deals/archived",
                cost=20,
                params={"status": DEALS_ALL},
                listing_params={"status": DEALS_LIVE},
                set_columns={"is_archived": True},
                refresh_every=60 * MINUTE,
            ),
        ),
        fields_path="dealFields",
        singular="deal",
        scopes=DEAL_SCOPES,
    ),
    Entity(
        name="persons",
        api=Api.V2,
        streams=(_v2_incremental("persons"),),
        fields_path="personFields",
        singular="person",
        scopes=CONTACT_SCOPES,
    ),
    Entity(
        name="organizations",
        api=Api.V2,
        streams=(_v2_incremental("organizations"),),
        fields_path="organizationFields",
        singular="organization",
        scopes=CONTACT_SCOPES,
    ),
    Entity(
        name="activities",
        api=Api.V2,
        streams=(_v2_incremental("activities"),),
        fields_path="activityFields",
        singular="activity",
        scopes=("activities:read", "activities:full"),
    ),
    Entity(
        name="products",
        api=Api.V2,
        streams=(_v2_incremental("products"),),
        fields_path="productFields",
        singular="product",
        scopes=("products:read", "products:full"),
    ),
    Entity(
        name="pipelines",
        api=Api.V2,
        strategy=Strategy.FULL_REFRESH,
        streams=(
            Stream(
                key="pipelines",
                path="pipelines",
                token_cost=5,
                mode=Mode.FULL,
                refresh_every=60 * MINUTE,
            ),
        ),
        scopes=(*DEAL_SCOPES, "admin"),
    ),
    Entity(
        name="stages",
        api=Api.V2,
        strategy=Strategy.FULL_REFRESH,
        streams=(
            Stream(
                key="stages", path="stages", token_cost=5, mode=Mode.FULL, refresh_every=60 * MINUTE
            ),
        ),
        scopes=(*DEAL_SCOPES, "admin"),
    ),
    # -- leads and notes (v1, incremental) ----------------------------------------------------
    Entity(
        name="leads",
        api=Api.V1,
        pagination=Pagination.OFFSET,
        streams=(
            Stream(
                key="leads",
                path="leads",
                params={"sort": "update_time ASC"},
                token_cost=20,
                detail_path="leads/{id}",  # archived leads too
            ),
            Stream(
                key="leads/archived",
                path="leads/archived",
                params={"sort": "update_time DESC"},
                set_columns={"is_archived": True},
                token_cost=40,
                mode=Mode.NEWEST_FIRST,
                refresh_every=360 * MINUTE,
            ),
        ),
        fields_path="leadFields",
        singular="lead",
        scopes=LEAD_SCOPES,
    ),
    Entity(
        name="notes",
        api=Api.V1,
        pagination=Pagination.OFFSET,
        streams=(
            Stream(
                key="notes",
                path="notes",
                params={"sort": "update_time ASC"},
                token_cost=20,
                detail_path="notes/{id}",
            ),
        ),
        fields_path="noteFields",
        singular="note",
        scopes=(*DEAL_SCOPES, *CONTACT_SCOPES),
    ),
    # -- reference data (v1, full re-read on a cadence, only changed rows loaded) --------------
    _v1_reference_entity("users", "users", ("users:read",), cursor_field="modified"),
    _v1_reference_entity(
        "activity_types", "activityTypes", ("activities:read", "activities:full", "admin")
    ),
    _v1_reference_entity("currencies", "currencies", ("base",)),
    _v1_reference_entity("lead_labels", "leadLabels", LEAD_SCOPES, cost=10),
    _v1_reference_entity("lead_sources", "leadSources", LEAD_SCOPES, cost=2, primary_key="name"),
    _v1_reference_entity("filters", "filters", ANY_RECORD_SCOPES),
    _v1_reference_entity(
        "call_logs",
        "callLogs",
        ("phone-integration",),
        pagination=Pagination.OFFSET,
        cursor_field="start_time",
        page_limit=50,
    ),
    _v1_reference_entity("roles", "roles", ("admin",), pagination=Pagination.OFFSET),
    _v1_reference_entity("permission_sets", "permissionSets", ("admin",)),
    Entity(
        name="files",
        api=Api.V1,
        pagination=Pagination.OFFSET,
        streams=(
            Stream(
                key="files",
                path="files",
                params={"sort": "update_time DESC"},
                token_cost=20,
                mode=Mode.NEWEST_FIRST,
                refresh_every=60 * MINUTE,
                page_limit=100,
            ),
        ),
        scopes=ANY_RECORD_SCOPES,
    ),
    Entity(
        name="goals",
        api=Api.V1,
        strategy=Strategy.FULL_REFRESH,
        pagination=Pagination.NONE,
        streams=tuple(
            _v1_reference(
                "goals/find",
                key=f"goals/{kind}/{active}",
                params={"assignee.type": kind, "is_active": active},
                data_key="goals",
            )
            # /goals/find answers one assignee type and one activity state at a time
            for kind in ("company", "team", "person")
            for active in ("true", "false")
        ),
        scopes=("goals:read", "goals:full"),
    ),
    # -- projects (v2, no updated_since: full re-read on a cadence) -----------------------------
    Entity(
        name="projects",
        api=Api.V2,
        strategy=Strategy.FULL_REFRESH,
        streams=(
            Stream(key="projects", path="projects", mode=Mode.FULL, refresh_every=360 * MINUTE),
            Stream(
                key="projects/archived",
                path="projects/archived",
                mode=Mode.FULL,
                refresh_every=360 * MINUTE,
                set_columns={"is_archived": True},
            ),
        ),
        fields_path="projectFields",
        singular="project",
        scopes=PROJECT_SCOPES,
    ),
    Entity(
        name="tasks",
        api=Api.V2,
        strategy=Strategy.FULL_REFRESH,
        streams=(Stream(key="tasks", path="tasks", mode=Mode.FULL, refresh_every=360 * MINUTE),),
        scopes=PROJECT_SCOPES,
    ),
    # -- per parent record ------------------------------------------------------------------------
    Entity(
        name="deal_products",
        api=Api.V2,
        strategy=Strategy.PER_PARENT,
        parent="deals",
        parent_key="deal_id",
        parent_batch=100,
        ids_param="deal_ids",
        streams=(Stream(key="deals/products", path="deals/products", mode=Mode.FULL),),
        scopes=("products:read", "products:full", *DEAL_SCOPES),
    ),
    *(
        Entity(
            name=f"{singular}_followers",
            api=Api.V2,
            strategy=Strategy.PER_PARENT,
            parent=parent,
            parent_key=f"{singular}_id",
            primary_key=(f"{singular}_id", "user_id"),
            streams=(
                Stream(
                    key=f"{parent}/followers", path=f"{parent}/{{id}}/followers", mode=Mode.FULL
                ),
            ),
            default=False,
            scopes=scopes,
        )
        for parent, singular, scopes in (
            ("deals", "deal", DEAL_SCOPES),
            ("persons", "person", CONTACT_SCOPES),
            ("organizations", "organization", CONTACT_SCOPES),
            ("products", "product", ("products:read", "products:full")),
        )
    ),
    Entity(
        name="deal_follower_changes",
        api=Api.V2,
        strategy=Strategy.PER_PARENT,
        parent="deals",
        parent_key="deal_id",
        primary_key=("deal_id", "time", "follower_user_id", "action"),
        streams=(
            Stream(
                key="deals/followers/changelog",
                path="deals/{id}/followers/changelog",
                mode=Mode.FULL,
            ),
        ),
        default=False,
        scopes=DEAL_SCOPES,
    ),
    *(
        Entity(
            name=f"{singular}_changes",
            api=Api.V1,
            strategy=Strategy.PER_PARENT,
            parent=parent,
            parent_key=f"{singular}_id",
            # entries have no id: a digest of the entry identifies it within its record
            primary_key=(f"{singular}_id", "change_key"),
            synthetic_key="change_key",
            cursor_field="time",
            streams=(
                Stream(
                    key=f"{parent}/changelog",
                    path=f"{parent}/{{id}}/changelog",
                    token_cost=20,
                    mode=Mode.FULL,
                ),
            ),
            default=False,
            scopes=("recents:read",),
        )
        for parent, singular in (
            ("deals", "deal"),
            ("persons", "person"),
            ("organizations", "organization"),
        )
    ),
)

ENTITY_BY_NAME: Mapping[str, Entity] = MappingProxyType({e.name: e for e in ENTITIES})
DEFAULT_ENTITIES: tuple[str, ...] = tuple(e.name for e in ENTITIES if e.default)


def select_entities(names: list[str] | tuple[str, ...] | None) -> tuple[Entity, ...]:
    """Entities for a list of names (None → the default set), in table order, parents included.

    Raises ValueError naming the unknown entities.
    """
    if not names:
        return tuple(e for e in ENTITIES if e.default)
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(n for n in wanted if n not in ENTITY_BY_NAME)
    if unknown:
        raise ValueError(
            f"unknown entit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"known: {', '.join(ENTITY_BY_NAME)}"
        )
    # a per-parent entity is fed by its parent's changed records: the parent must run too
    wanted |= {ENTITY_BY_NAME[n].parent for n in wanted if ENTITY_BY_NAME[n].parent}  # type: ignore[misc]
    return tuple(e for e in ENTITIES if e.name in wanted)


def describe_entities() -> str:
    """The entity table as a Markdown table (kept in the README; a test checks it is current)."""

    def strategy(entity: Entity) -> str:
        if entity.strategy is Strategy.PER_PARENT:
            per = (
                f"{entity.parent_batch} ids per request" if entity.ids_param else "one request each"
            )
            return f"for the {entity.parent} changed in the run, {per}"
        modes = []
        for stream in entity.streams:
            text = {
                Mode.UPDATED_SINCE: "`updated_since`",
                Mode.NEWEST_FIRST: "newest first until the cursor",
                Mode.FULL: "full re-read, changed rows loaded",
            }[stream.mode]
            if stream.refresh_every:
                text += f", every {int(stream.refresh_every.total_seconds() // 60)} min"
            modes.append(text)
        return "; ".join(dict.fromkeys(modes))

    def cost(entity: Entity) -> str:
        first = entity.streams[0]
        if entity.strategy is Strategy.PER_PARENT:
            parent = ENTITY_BY_NAME[entity.parent or ""].singular
            unit = f"100 changed {parent}s" if entity.ids_param else f"changed {parent}"
            return f"{first.token_cost} per {unit}"

        def total(streams: list[Stream]) -> str:
            costs = [s.token_cost for s in streams]
            if len(costs) > 2 and len(set(costs)) == 1:
                return f"{costs[0]} for each of {len(costs)} lists"
            return " + ".join(str(c) for c in costs)

        every = [s for s in entity.streams if not s.refresh_every]
        slow = [s for s in entity.streams if s.refresh_every]
        parts = []
        if every:
            parts.append(f"{total(every)} per page, every run")
        if slow:
            parts.append(f"{total(slow)} per page, when due")
        return "; ".join(parts)

    lines = [
        "| table | endpoints | API | strategy | primary key | API tokens | default |",
        "|---|---|---|---|---|---|---|",
    ]
    for entity in ENTITIES:
        paths = ", ".join(
            dict.fromkeys(f"`{API_PREFIX[entity.api]}/{s.path}`" for s in entity.streams)
        )
        lines.append(
            f"| `{entity.name}` | {paths} | {entity.api.value} | {strategy(entity)} |"
            f" `{', '.join(entity.key_columns)}` | {cost(entity)} |"
            f" {'yes' if entity.default else 'opt-in'} |"
        )
    return "\n".join(lines) + "\n"
