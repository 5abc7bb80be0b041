"""The entity table: every Pipedrive list this project syncs, declared as data.

Adding an entity is one `Entity(...)` entry below (plus data in the fake server). The HTTP layer,
the dlt source, the docs and the token accounting all read this table; nothing else knows paths,
API versions or costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Api(StrEnum):
    """Pipedrive API generations. Their URL prefixes live in `API_PREFIX`, nowhere else."""

    V1 = "v1"
    V2 = "v2"


API_PREFIX: Mapping[Api, str] = MappingProxyType({Api.V1: "/v1", Api.V2: "/api/v2"})


class Pagination(StrEnum):
    CURSOR = "cursor"  # v2: additional_data.next_cursor
    OFFSET = "offset"  # v1: additional_data.pagination.{more_items_in_collection,next_start}
    NONE = "none"  # a single response holds everything


class Strategy(StrEnum):
    """How an entity stays current between runs."""

    UPDATED_SINCE = "updated_since"  # incremental on update_time, merged on the primary key
    FULL_REFRESH = "full_refresh"  # small lists: re-read every run (merge + reconcile)


@dataclass(frozen=True)
class Stream:
    """One endpoint feeding an entity's table (deals come from /deals and /deals/archived)."""

    key: str  # stable name used for this stream's cursor state
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    set_columns: Mapping[str, object] = field(default_factory=dict)  # constant columns added
    token_cost: int = 10  # per request, as the spec's x-token-cost says
    incremental: bool = True  # False: the endpoint has no updated_since and is re-read in full
    cadence: str | None = None  # a SyncOptions interval: read at most that often (slow lists)
    listing_params: Mapping[str, str] | None = None  # params listing live ids (reconcile)


@dataclass(frozen=True)
class Entity:
    """One table in the warehouse and how to fill it from Pipedrive."""

    name: str  # resource and table name
    api: Api
    streams: tuple[Stream, ...]
    strategy: Strategy = Strategy.UPDATED_SINCE
    pagination: Pagination = Pagination.CURSOR
    primary_key: str = "id"
    cursor_field: str = "update_time"
    fields_path: str | None = None  # the *Fields endpoint describing custom fields
    fields_api: Api | None = None  # defaults to the entity's api
    singular: str = ""  # entity name in the custom_fields mapping table (deal, person, ...)
    default: bool = True  # part of the default entity set
    soft_deletes_in_list: bool = False  # the list itself reports deletions (deals: status=deleted)
    scopes: tuple[str, ...] = ()  # OAuth scopes that grant read access (any one suffices)

    @property
    def has_custom_fields(self) -> bool:
        return self.fields_path is not None

    @property
    def custom_fields_shape(self) -> Api:
        """v2 payloads nest custom fields in `custom_fields`; v1 ones put hash keys at the top."""
        return self.api

    @property
    def effective_fields_api(self) -> Api:
        return self.fields_api or self.api


def _v2_sorted(path: str, cost: int = 10, **extra: str) -> Stream:
    params = {"sort_by": "update_time", "sort_direction": "asc", **extra}
    return Stream(key=path, path=path, params=params, token_cost=cost)


ENTITIES: tuple[Entity, ...] = (
    Entity(
        name="deals",
        api=Api.V2,
        streams=(
            Stream(
                key="deals",
                path="deals",
                params={
                    "sort_by": "update_time",
                    "sort_direction": "asc",
                    "status": "open,won,lost,deleted",
                },
                listing_params={"status": "open,won,lost"},
            ),
            Stream(
                key="deals/archived",
                path="deals/archived",
                params={
                    "sort_by": "update_time",
                    "sort_direction": "asc",
                    "status": "open,won,lost,deleted",
                },
                set_columns={"is_archived": True},
                token_cost=20,
                listing_params={"status": "open,won,lost"},
            ),
        ),
        fields_path="dealFields",
        singular="deal",
        soft_deletes_in_list=True,
        scopes=("deals:read", "deals:full"),
    ),
    Entity(
        name="persons",
        api=Api.V2,
        streams=(_v2_sorted("persons"),),
        fields_path="personFields",
        singular="person",
        scopes=("contacts:read", "contacts:full"),
    ),
    Entity(
        name="organizations",
        api=Api.V2,
        streams=(_v2_sorted("organizations"),),
        fields_path="organizationFields",
        singular="organization",
        scopes=("contacts:read", "contacts:full"),
    ),
    Entity(
        name="activities",
        api=Api.V2,
        streams=(_v2_sorted("activities"),),
        fields_path="activityFields",
        singular="activity",
        scopes=("activities:read", "activities:full"),
    ),
    Entity(
        name="products",
        api=Api.V2,
        streams=(_v2_sorted("products"),),
        fields_path="productFields",
        singular="product",
        scopes=("products:read", "products:full"),
    ),
    Entity(
        name="pipelines",
        api=Api.V2,
        strategy=Strategy.FULL_REFRESH,
        streams=(Stream(key="pipelines", path="pipelines", token_cost=5, incremental=False),),
        scopes=("deals:read", "deals:full", "admin"),
    ),
    Entity(
        name="stages",
        api=Api.V2,
        strategy=Strategy.FULL_REFRESH,
        streams=(Stream(key="stages", path="stages", token_cost=5, incremental=False),),
        scopes=("deals:read", "deals:full", "admin"),
    ),
)

ENTITY_BY_NAME: Mapping[str, Entity] = MappingProxyType({e.name: e for e in ENTITIES})
DEFAULT_ENTITIES: tuple[str, ...] = tuple(e.name for e in ENTITIES if e.default)


def select_entities(names: list[str] | tuple[str, ...] | None) -> tuple[Entity, ...]:
    """Entities for a comma list of names (None → the default set), in table order.

    Raises ValueError naming the unknown entities.
    """
    if not names:
        return tuple(e for e in ENTITIES if e.default)
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in ENTITY_BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown entit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"known: {', '.join(ENTITY_BY_NAME)}"
        )
    return tuple(e for e in ENTITIES if e.name in wanted)
