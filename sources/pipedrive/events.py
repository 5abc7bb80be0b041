"""Pipedrive webhooks v2 events: which record changed, and what a batch of them must read.

A v2 body (https://pipedrive.readme.io/docs/guide-for-webhooks-v2) is
`{"meta": {...}, "data": {...} | null, "previous": {...} | null}`. Its `data` holds only the
"crucial" fields of a record, so an event is used as a pointer: which record of which entity
was created, changed or deleted. Retries repeat an event (same `meta.id`) and deliveries come
in any order; a batch therefore reads the *current* state of every record it names, which
converges whatever the order, and only deletions of records no list can return any more
(leads, notes) are taken from the event itself (a deletion is final).

`plan_events` turns a batch into an `EventPlan`: per entity, the ids to read through the
lists' `ids` parameter (v2 deals, persons, organizations, activities, products: 10 tokens per
100 records) or one by one (v1 leads and notes: 2 tokens each, while that is cheaper than
their lists), the entities whose lists are read as a poll would (v1 leads and notes with many
changes, and the small lists read in full: pipelines, stages, users, projects, tasks), the
rows to flag deleted at once, and the parents whose children (deal products, followers,
changelogs) to read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from .convert import iso_datetime_or_none
from .entities import ENTITY_BY_NAME, Strategy

# `meta.entity` of webhooks v2 → the entity (table) it changes
OBJECT_ENTITIES: Mapping[str, str] = {
    "deal": "deals",
    "person": "persons",
    "organization": "organizations",
    "activity": "activities",
    "product": "products",
    "lead": "leads",
    "note": "notes",
    "pipeline": "pipelines",
    "stage": "stages",
    "user": "users",
    "project": "projects",
    "task": "tasks",
    "deal_product": "deal_products",
}
ENTITY_OBJECTS: Mapping[str, str] = {entity: obj for obj, entity in OBJECT_ENTITIES.items()}
ACTIONS = ("create", "change", "delete")
TEXT_IDS = frozenset({"leads"})  # entities whose ids are UUIDs, not numbers


class InvalidEvent(ValueError):
    """The body is not a webhooks v2 event (the receiver answers 400)."""


@dataclass(frozen=True)
class WebhookEvent:
    """One delivered event, as much of it as applying needs (what the journal keeps)."""

    event_id: str  # the same on every delivery (retry, duplicate) of the event, else unique
    object: str  # meta.entity ("deal", "person", …)
    action: str  # meta.action: create | change | delete (anything else is ignored)
    record_id: int | str  # meta.entity_id
    occurred_at: float | None = None  # meta.timestamp, seconds since the epoch
    archived: bool = False  # the record is or was archived (an archive or unarchive)
    parent_id: int | None = None  # deal products: the deal

    @property
    def entity(self) -> str | None:
        """The entity (table) the event is about; None for objects this project does not sync."""
        return OBJECT_ENTITIES.get(self.object)

    @property
    def applicable(self) -> bool:
        return self.entity is not None and self.action in ACTIONS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookEvent:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def parse_event(body: bytes) -> WebhookEvent:
    """The event of a webhooks v2 body; InvalidEvent (one line, says what) otherwise."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidEvent("the body is not JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("meta"), dict):
        raise InvalidEvent("not a webhooks v2 body: no `meta` object")
    meta: dict[str, Any] = parsed["meta"]
    obj, action = meta.get("entity"), meta.get("action")
    if not isinstance(obj, str) or not obj or not isinstance(action, str) or not action:
        raise InvalidEvent("not a webhooks v2 body: `meta.entity` and `meta.action` are required")
    data = _object(parsed.get("data"))
    previous = _object(parsed.get("previous"))
    return WebhookEvent(
        event_id=_delivery_key(parsed),
        object=obj,
        action=action,
        record_id=_record_id(meta.get("entity_id"), OBJECT_ENTITIES.get(obj)),
        occurred_at=_timestamp(meta.get("timestamp")),
        archived=data.get("is_archived") is True or "is_archived" in previous,
        parent_id=_parent_id(obj, data, previous),
    )


def _delivery_key(body: dict[str, Any]) -> str:
    """What every delivery of one event shares: the body without `meta.attempt`. (`meta.id`
    alone is not enough: user events carry the user's id there, the same for every change.)"""
    meta = {k: v for k, v in body["meta"].items() if k != "attempt"}
    content = orjson.dumps({**body, "meta": meta}, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(content, digest_size=16).hexdigest()


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _record_id(raw: Any, entity: str | None) -> int | str:
    if isinstance(raw, bool) or raw is None or raw == "":
        raise InvalidEvent("`meta.entity_id` is missing")
    if entity in TEXT_IDS or entity is None:
        return str(raw)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise InvalidEvent(f"`meta.entity_id` of a {entity} event is not a number") from None


def _timestamp(raw: Any) -> float | None:
    """RFC 3339 (`2024-06-01T12:00:00.000Z`), or epoch seconds as the user events send."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    parsed = iso_datetime_or_none(raw)
    return parsed.timestamp() if parsed is not None else None


def _parent_id(obj: str, data: Mapping[str, Any], previous: Mapping[str, Any]) -> int | None:
    if obj != "deal_product":
        return None
    raw = data.get("deal_id", previous.get("deal_id"))
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


@dataclass
class EventPlan:
    """What a batch of events reads and writes."""

    by_ids: dict[str, set[Any]] = field(default_factory=dict)  # entity → ids to read by id
    lists: set[str] = field(default_factory=set)  # entities read through their lists
    due_now: set[str] = field(default_factory=set)  # of `lists`: every list due (archived too)
    deleted: dict[str, set[Any]] = field(default_factory=dict)  # entity → ids flagged at once
    parents: dict[str, set[Any]] = field(default_factory=dict)  # child entity → parent ids
    ignored: int = 0  # events about objects or actions not synced

    @property
    def entities(self) -> list[str]:
        """Every entity the batch loads into (children included)."""
        names = set(self.by_ids) | self.lists | {e for e, ids in self.parents.items() if ids}
        return sorted(names)

    @property
    def empty(self) -> bool:
        return not (self.entities or any(self.deleted.values()))


def plan_events(events: Iterable[WebhookEvent], synced: Collection[str]) -> EventPlan:
    """The reads and deletions that bring the warehouse to the current state of every record
    the events name (`synced`: the entity names this warehouse syncs)."""
    plan = EventPlan()
    changed: dict[str, set[Any]] = {}  # v1 records created or changed
    for event in events:
        entity = event.entity
        if not event.applicable or entity not in synced:
            plan.ignored += 1
            continue
        assert entity is not None
        _plan_one(plan, event, entity, synced, changed)
    for name, ids in changed.items():
        _read_cheapest(plan, name, ids)
    for name in synced:  # followers and changelogs: of every parent record the batch reads
        child = ENTITY_BY_NAME[name]
        if child.parent and name != "deal_products" and child.parent in plan.by_ids:
            plan.parents[name] = set(plan.by_ids[child.parent])
    return plan


def _read_cheapest(plan: EventPlan, name: str, ids: set[Any]) -> None:
    """v1 records: one detail request each, or the list(s) read as a poll reads them when
    that costs less (each stream's costs are in `entities`)."""
    entity = ENTITY_BY_NAME[name]
    detail = entity.detail_stream
    lists = [s for s in entity.streams if s.refresh_every is None or name in plan.due_now]
    if detail is not None and len(ids) * detail.detail_cost < sum(s.token_cost for s in lists):
        plan.by_ids.setdefault(name, set()).update(ids)
        plan.due_now.discard(name)  # a lead's detail says whether it is archived
    else:
        plan.lists.add(name)


def _plan_one(
    plan: EventPlan,
    event: WebhookEvent,
    entity: str,
    synced: Collection[str],
    changed: dict[str, set[Any]],
) -> None:
    definition = ENTITY_BY_NAME[entity]
    if entity == "deal_products":
        if event.parent_id is not None:
            plan.parents.setdefault(entity, set()).add(event.parent_id)
            plan.by_ids.setdefault("deals", set()).add(event.parent_id)
        return
    if definition.reads_by_ids:
        plan.by_ids.setdefault(entity, set()).add(event.record_id)
        if entity == "deals" and event.action == "delete" and "deal_products" in synced:
            plan.parents.setdefault("deal_products", set()).add(event.record_id)
        return
    if definition.strategy is Strategy.UPDATED_SINCE:  # v1 leads and notes
        if event.action == "delete":
            plan.deleted.setdefault(entity, set()).add(event.record_id)
            return
        changed.setdefault(entity, set()).add(event.record_id)
        if event.archived:
            plan.due_now.add(entity)  # archived leads leave /leads: read /leads/archived too
        return
    plan.lists.add(entity)  # small lists read in full: deletions show as vanished ids
    plan.due_now.add(entity)
