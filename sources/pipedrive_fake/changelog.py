"""Field-change history of deals, persons and organizations (`GET /v1/{entity}/{id}/changelog`).

Entries are kept per record, oldest first, in an internal shape (`seq`, `ms`, ...); `render`
gives the served shape. The API serves them newest first (the spec's examples put the latest
change on top) with a cursor that is, like the spec's example ("aWQ6NTQ0" = "id:544"), base64
of "id:<entry id>" (`seq` here, numbered per record); `limit` defaults to 100, larger than 500
is cut to 500, below 1 is a 400.

Values are text, as in the spec's examples: numbers and ids as their digits ("500", "3"), null
as null. Where the spec shows nothing the fake chooses: booleans "true"/"false", v2 timestamps
in the v1 shape ("2024-06-01 12:00:00"), id lists comma-joined ("1,2"), e-mail/phone lists as
their values joined by ", ", and values with parts (monetary, address, time ranges..., standard
or custom) log the main value under the field's key and each changed part under
`<key>_<part>`, as v1 flattens them (`<hash>_currency`). Standard fields keep their record name,
except where the v1 key differs (`V1_FIELD_KEYS`: a deal's owner_id is user_id, a person's
emails/phones are email/phone, the spec's person example logs "email"); custom fields are
logged under their hash key.
"""

from __future__ import annotations

import random
import re
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson

from .fields import FieldDef, fmt_v1
from .generate import USER_IDS

CHANGELOG_ENTITIES = ("deals", "persons", "organizations")
# a record field → the key the v1 changelog names it by (the others keep their name)
V1_FIELD_KEYS: dict[str, dict[str, str]] = {
    "deals": {"owner_id": "user_id"},
    "persons": {"emails": "email", "phones": "phone"},
    "organizations": {},
}
APP_USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36"
)
MOBILE_USER_AGENT = "Pipedrive/10.31.0 (iPhone; iOS 17.4; Scale/3.00)"
_V2_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})Z$")
# standard fields a generated history may have changed: (record field, how to make an old value)
_HISTORY_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "deals": (
        ("title", "text"),
        ("value", "amount"),
        ("stage_id", "stage"),
        ("owner_id", "user"),
        ("expected_close_date", "date"),
        ("probability", "percent"),
    ),
    "persons": (
        ("name", "text"),
        ("owner_id", "user"),
        ("org_id", "org"),
        ("job_title", "text"),
        ("emails", "emails"),
    ),
    "organizations": (
        ("name", "text"),
        ("owner_id", "user"),
        ("website", "text"),
        ("employee_count", "count"),
    ),
}
_CUSTOM_KINDS = {"varchar": "text", "double": "amount", "enum": "enum", "date": "date"}


def text(value: Any) -> str | None:
    """A value as the changelog shows it (see the module docstring)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        m = _V2_TIME.match(value)
        return f"{m.group(1)} {m.group(2)}" if m else value
    if isinstance(value, list):
        if not value:
            return None
        if all(isinstance(x, dict) for x in value):  # emails, phones, im
            return ", ".join(text(x.get("value")) or "" for x in value)
        return ",".join(text(x) or "" for x in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def _flat(key: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(key, old, new) of a field, split into `<key>` and `<key>_<part>` for values with parts."""
    if (isinstance(old, dict) and "value" in old) or (isinstance(new, dict) and "value" in new):
        o = old if isinstance(old, dict) else {}
        n = new if isinstance(new, dict) else {}
        parts = [p for p in dict.fromkeys([*o, *n]) if p != "value"]
        return [(key, o.get("value"), n.get("value"))] + [
            (f"{key}_{p}", o.get(p), n.get(p)) for p in parts
        ]
    return [(key, old, new)]


def diff(
    t: str, old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...] = ()
) -> list[tuple[str, str | None, str | None]]:
    """(field_key, old text, new text) of every field that changed, in the record's order."""
    out: list[tuple[str, str | None, str | None]] = []
    renames = V1_FIELD_KEYS.get(t, {})
    for key, value in new.items():
        before = old.get(key)
        if key in skip or value == before:
            continue
        if key == "custom_fields":
            cf_old = before or {}
            for cf_key, cf_value in (value or {}).items():
                if cf_value != cf_old.get(cf_key):
                    out += _texts(_flat(cf_key, cf_old.get(cf_key), cf_value))
            continue
        out += _texts(_flat(renames.get(key, key), before, value))
    return out


def _texts(triples: list[tuple[str, Any, Any]]) -> list[tuple[str, str | None, str | None]]:
    out = []
    for key, old, new in triples:
        a, b = text(old), text(new)
        if a != b:
            out.append((key, a, b))
    return out


def entry(
    seq: int,
    field_key: str,
    old: str | None,
    new: str | None,
    ms: int,
    actor: int = 1,
    source: str | None = "app",
    agent: str | None = APP_USER_AGENT,
    bulk: bool = False,
) -> dict[str, Any]:
    return {"seq": seq, "field_key": field_key, "old_value": old, "new_value": new,
            "actor": actor, "ms": ms, "source": source, "agent": agent, "bulk": bulk}  # fmt: skip


def render(e: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API serves it (the spec's property order)."""
    return {
        "field_key": e["field_key"],
        "old_value": e["old_value"],
        "new_value": e["new_value"],
        "actor_user_id": e["actor"],
        "time": fmt_v1(e["ms"]),
        "change_source": e["source"],
        "change_source_user_agent": e["agent"],
        "is_bulk_update_flag": e["bulk"],
    }


# --- generated histories ---------------------------------------------------------------------------


def history(
    seed: int,
    t: str,
    record_id: int,
    data: dict[str, Any],
    at: int,
    ut: int,
    custom: list[FieldDef],
    stage_pipeline: dict[int, int],
    org_count: int,
) -> list[dict[str, Any]]:
    """0-3 past changes of a generated record, oldest first, ending with its current values
    (the newest at its update_time; none when it was never updated)."""
    rng = random.Random(f"{seed}/changelog/{t}/{record_id}")
    count = rng.choice((0, 0, 1, 1, 2, 3))
    if count == 0 or ut - at < 2000:
        return []
    candidates = list(_HISTORY_FIELDS[t])
    seen_types: set[str] = set()
    for f in custom:  # the first custom field of a few simple types
        kind = _CUSTOM_KINDS.get(f.field_type)
        if kind is not None and f.field_type not in seen_types:
            seen_types.add(f.field_type)
            candidates.append((f.key, kind))
    defs = {f.key: f for f in custom}
    times = sorted(at + 1000 + int(rng.random() * (ut - at - 1000)) for _ in range(count - 1))
    times = [ms - ms % 1000 for ms in times] + [ut]
    current = dict(data)
    current_cf = dict(data.get("custom_fields") or {})
    owner: int = data["owner_id"] if data.get("owner_id") in USER_IDS else 1
    made: list[dict[str, Any]] = []  # newest first
    for ms in reversed(times):
        for _attempt in range(len(candidates)):  # a field whose value can be told apart
            key, kind = rng.choice(candidates)
            is_custom = key in defs
            new = current_cf.get(key) if is_custom else current.get(key)
            old = _older(rng, kind, new, defs.get(key), stage_pipeline, org_count)
            before: dict[str, Any]
            after: dict[str, Any]
            if is_custom:
                before, after = {"custom_fields": {key: old}}, {"custom_fields": {key: new}}
            else:
                before, after = {key: old}, {key: new}
            changes = diff(t, before, after)
            if changes:
                break
        else:
            continue
        if is_custom:
            current_cf[key] = old
        else:
            current[key] = old
        actor: int = owner if rng.random() < 0.7 else rng.choice(USER_IDS)
        source = rng.choice(("app", "app", "app", "app", "api", "mobile"))
        agent = {"app": APP_USER_AGENT, "mobile": MOBILE_USER_AGENT}.get(source)
        bulk = source == "app" and rng.random() < 0.1
        for field_key, a, b in reversed(changes):
            made.append(entry(0, field_key, a, b, ms, actor, source, agent, bulk))
    made.reverse()
    for n, e in enumerate(made, 1):
        e["seq"] = n
    return made


def _older(
    rng: random.Random,
    kind: str,
    value: Any,
    f: FieldDef | None,
    stage_pipeline: dict[int, int],
    org_count: int,
) -> Any:
    """A plausible earlier value of a field whose current value is `value`."""
    if kind == "text":
        if not isinstance(value, str) or len(value) < 3:
            return rng.choice(("Draft", "TBD", None))
        i = rng.randrange(1, len(value) - 1)
        return value[:i] + value[i + 1 :]  # the typo someone fixed
    if kind == "amount":
        if not isinstance(value, int | float) or not value:
            return rng.choice((None, 100, 1000))
        return rng.choice((0, round(value / 2), round(value * 0.8)))
    if kind == "percent":
        return rng.choice([p for p in (None, 10, 25, 50, 75, 90) if p != value])
    if kind == "count":
        return rng.choice([c for c in (None, 5, 25, 100, 500) if c != value])
    if kind == "user":
        return rng.choice([u for u in USER_IDS if u != value] or USER_IDS)
    if kind == "org":
        others = [o for o in range(1, org_count + 1) if o != value]
        return rng.choice(others) if others and rng.random() < 0.8 else None
    if kind == "stage":
        pipeline = stage_pipeline.get(value) if isinstance(value, int) else None
        same = [s for s, p in stage_pipeline.items() if p == pipeline and s != value]
        return rng.choice(same) if same else value
    if kind == "date":
        if not isinstance(value, str):
            return rng.choice(("2023-03-31", "2023-09-30", None))
        return (date.fromisoformat(value) - timedelta(days=rng.randint(7, 60))).isoformat()
    if kind == "enum":
        ids = [i for i in (f.option_ids() if f else []) if i != value]
        return rng.choice(ids) if ids else None
    if kind == "emails":
        if not value:
            return [{"value": "old.address@example.com", "primary": True, "label": "work"}]
        first = dict(value[0])
        first["value"] = _older(rng, "text", first["value"], f, stage_pipeline, org_count)
        return [first, *value[1:]] if first["value"] else value[1:]
    raise ValueError(kind)


# --- deal stories (FakePipedrive(deal_stories=True), the demo) -----------------------------------


def _ms(value: Any) -> int | None:
    """Epoch milliseconds of a served v2 time ("2024-06-01T12:00:00Z"), or None."""
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(parsed.timestamp() * 1000)


def deal_story(
    seed: int, record_id: int, data: dict[str, Any], at: int, ut: int, stages: list[int]
) -> list[dict[str, Any]]:
    """The changelog of a generated deal that lived like one: it moved up its pipeline's
    `stages` (ordered) to the stage it is in, the last move at its stage_change_time, its
    value was revised on the way, and it was won or lost at its close_time (deleted at its
    update_time). Oldest first, ending with its current values."""
    rng = random.Random(f"{seed}/story/deals/{record_id}")
    status = data.get("status")
    close = _ms(data.get("close_time"))
    end = close if status in ("won", "lost") and close is not None else ut
    events: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    events += _stage_moves(rng, data, at, end, stages)
    value = data.get("value")
    if isinstance(value, int | float) and value and rng.random() < 0.4 and end - at > 4000:
        revised = at + 1000 + int(rng.random() * (end - at - 2000))
        old = round(value * rng.choice((0.5, 0.8, 1.25)), 2)
        events.append((revised, {"value": old}, {"value": value}))
    if status in ("won", "lost") and close is not None:
        times = ("close_time", f"{status}_time")
        before: dict[str, Any] = {"status": "open", **dict.fromkeys(times)}
        after: dict[str, Any] = {"status": status, **{k: data.get(k) for k in times}}
        if status == "lost" and data.get("lost_reason"):
            before["lost_reason"], after["lost_reason"] = None, data["lost_reason"]
        events.append((close, before, after))
    elif status == "deleted":
        deleted = (
            {"status": "open", "is_deleted": False},
            {"status": "deleted", "is_deleted": True},
        )
        events.append((ut, *deleted))
    owner: int = data["owner_id"] if data.get("owner_id") in USER_IDS else 1
    made = []
    for ms, old_values, new_values in sorted(events, key=lambda e: e[0]):
        for field_key, a, b in diff("deals", old_values, new_values):
            made.append(entry(0, field_key, a, b, ms - ms % 1000, owner))
    for n, e in enumerate(made, 1):
        e["seq"] = n
    return made


def _stage_moves(
    rng: random.Random, data: dict[str, Any], at: int, end: int, stages: list[int]
) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Moves from an earlier stage up to the current one, the last at stage_change_time."""
    moved = _ms(data.get("stage_change_time"))
    stage = data.get("stage_id")
    if moved is None or stage not in stages or stages.index(stage) == 0:
        return []
    last = min(moved, end)
    path = stages[rng.randint(0, stages.index(stage) - 1) : stages.index(stage) + 1]
    span = max(0, last - at - 2000)
    times = [*sorted(at + 1000 + int(rng.random() * span) for _ in path[2:]), last]
    return [
        (ms, {"stage_id": old}, {"stage_id": new})
        for (old, new), ms in zip(pairwise(path), times, strict=True)
    ]
