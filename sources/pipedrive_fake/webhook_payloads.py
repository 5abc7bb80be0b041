"""The `data` and `previous` blocks of a Pipedrive webhook v2 body, built from the fake's records.

Pipedrive's webhooks v2 carry only the "crucial" fields of a record, not the API's full shape
(https://pipedrive.readme.io/docs/webhooks-v2-migration-guide#webhooks-v2-examples). The field
lists below are the keys of those documented examples (plus the few fields later changelogs
added, see WEBHOOKS.md); a key the fake's record does not have is sent as null.

* `data`: the record as of the event; `null` for a delete.
* `previous`: create → null; change → only the fields whose value changed, with their old
  value (custom fields nested under `custom_fields`, again only the changed ones); delete →
  the record's last state.
* Custom fields are typed objects (`{"type": "enum", "id": 17}`, `{"type": "set", "values":
  [{"id": 13}]}`, `{"type": "monetary", "value": 200, "currency": "EUR"}`, ...); fields
  without a value are left out of `data.custom_fields` (the examples show `{}`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .fields import FieldDef, fmt_v2

# the fake's tables that Pipedrive sends webhooks v2 for, and their `meta.entity`
WEBHOOK_ENTITIES: dict[str, str] = {
    "activities": "activity",
    "deals": "deal",
    "leads": "lead",
    "notes": "note",
    "organizations": "organization",
    "persons": "person",
    "pipelines": "pipeline",
    "products": "product",
    "stages": "stage",
    "users": "user",
    "projects": "project",
    "tasks": "task",
    "deal_products": "deal_product",
}

Getter = Callable[[Mapping[str, Any]], Any]


def _key(name: str) -> Getter:
    return lambda d: d.get(name)


def _text(name: str) -> Getter:
    def get(d: Mapping[str, Any]) -> Any:
        v = d.get(name)
        return None if v is None else str(v)

    return get


def _not(name: str) -> Getter:
    return lambda d: not d.get(name)


def _v1_time(name: str) -> Getter:
    """A v1 "YYYY-MM-DD HH:MM:SS" time as RFC 3339 (the note examples use RFC 3339)."""

    def get(d: Mapping[str, Any]) -> Any:
        v = d.get(name)
        return f"{v.replace(' ', 'T')}Z" if isinstance(v, str) and " " in v else v

    return get


def _url_title(d: Mapping[str, Any]) -> Any:
    name = d.get("name")
    return None if name is None else str(name).replace(" ", "-")


def _plain(*names: str) -> dict[str, Getter]:
    return {n: _key(n) for n in names}


# webhook key → how to read it from the fake's internal record; None: every key of the record
DATA_FIELDS: dict[str, dict[str, Getter] | None] = {
    "deals": {
        **_plain(
            "add_time", "channel", "channel_id", "close_time", "creator_user_id", "currency",
            "custom_fields", "expected_close_date", "first_won_time", "id", "is_archived",
            "label_ids", "lost_reason", "lost_time", "org_id", "origin", "origin_id", "owner_id",
            "person_id", "pipeline_id", "probability", "stage_change_time", "stage_id", "status",
            "title", "update_time", "value", "won_time",
        ),
        "visible_to": _text("visible_to"),
    },
    "persons": {
        **_plain(
            "add_time", "custom_fields", "emails", "first_name", "id", "label_ids", "last_name",
            "name", "org_id", "owner_id", "phones", "update_time",
        ),
        "visible_to": _text("visible_to"),
    },
    "organizations": {
        **_plain(
            "add_time", "address", "country_code", "custom_fields", "id", "label_ids", "name",
            "owner_id", "picture_id", "update_time", "website", "linkedin", "industry",
            "annual_revenue", "employee_count",
        ),
        "visible_to": _text("visible_to"),
    },
    "activities": {
        "active_flag": _not("is_deleted"),
        "add_time": _key("add_time"),
        "busy_flag": _key("busy"),
        **_plain(
            "custom_fields", "deal_id", "done", "due_date", "due_time", "duration", "id",
            "lead_id", "location", "org_id", "owner_id", "person_id", "public_description",
            "subject", "type", "update_time", "update_user_id",
        ),
    },
    "products": {
        **_plain(
            "add_time", "category", "code", "custom_fields", "description", "id", "name",
            "owner_id",
        ),
        "selectable": _key("is_linkable"),
        **_plain("tax", "unit", "update_time"),
        "visible_to": _text("visible_to"),
        "prices": _key("prices"),
    },
    "leads": _plain(
        "add_time", "channel", "channel_id", "creator_id", "custom_fields", "expected_close_date",
        "id", "is_archived", "label_ids", "next_activity_id", "organization_id", "origin",
        "origin_id", "owner_id", "person_id", "source_name", "title", "update_time", "was_seen",
        "value",
    ),
    "notes": {
        **_plain(
            "id", "user_id", "deal_id", "person_id", "org_id", "lead_id", "project_id",
            "active_flag", "content",
        ),
        "add_time": _v1_time("add_time"),
        "update_time": _v1_time("update_time"),
        **_plain("pinned_to_deal_flag", "pinned_to_person_flag", "pinned_to_organization_flag"),
    },
    "pipelines": {
        "id": _key("id"),
        "name": _key("name"),
        "url_title": _url_title,
        "order_nr": _key("order_nr"),
        "active_flag": _not("is_deleted"),
        "deal_probability": _key("is_deal_probability_enabled"),
        "add_time": _key("add_time"),
        "update_time": _key("update_time"),
    },
    "stages": {
        "id": _key("id"),
        "name": _key("name"),
        "active_flag": _not("is_deleted"),
        "rotten_days": _key("days_to_rotten"),
        "order_nr": _key("order_nr"),
        "deal_probability": _key("deal_probability"),
        "rotten_flag": _key("is_deal_rot_enabled"),
        "add_time": _key("add_time"),
        "pipeline_id": _key("pipeline_id"),
        "update_time": _key("update_time"),
    },
    "users": {
        "id": _text("id"),
        **_plain(
            "default_currency", "name", "email", "phone", "locale", "lang", "active_flag",
            "last_login", "timezone_name", "icon_url", "created", "modified", "access",
        ),
    },
    # no documented example: the record as the API serves it
    "projects": None,
    "tasks": None,
    "deal_products": None,
}  # fmt: skip


def typed_value(f: FieldDef, v: Any) -> Any:
    """A custom field's v2 API value as the webhook's typed object (None stays None)."""
    if v is None:
        return None
    t = f.field_type
    if t == "enum" or t in ("user", "org", "people"):
        return {"id": v, "type": t}
    if t == "set":
        return {"values": [{"id": x} for x in v], "type": t}
    if t == "monetary":
        return {"currency": v.get("currency"), "type": t, "value": v.get("value")}
    if t == "daterange":
        return {"from": v.get("value"), "until": v.get("until"), "type": t}
    if t == "timerange":
        return {"timezone_id": v.get("timezone_id"), "from": v.get("value"),
                "until": v.get("until"), "type": t}  # fmt: skip
    if t == "time":
        return {"timezone_id": v.get("timezone_id"), "type": t, "value": v.get("value")}
    if t == "address":
        return {**{k: x for k, x in v.items() if k != "value"}, "type": t, "value": v.get("value")}
    return {"type": t, "value": v}


def typed_custom_fields(
    defs: Iterable[FieldDef], values: Mapping[str, Any] | None
) -> dict[str, Any]:
    """`data.custom_fields`: the active fields that hold a value, as typed objects."""
    values = values or {}
    out: dict[str, Any] = {}
    for f in defs:
        typed = typed_value(f, values.get(f.key))
        if typed is not None:
            out[f.key] = typed
    return out


def webhook_data(table: str, record: Mapping[str, Any], defs: Iterable[FieldDef]) -> dict[str, Any]:
    """The `data` block of a record of one of WEBHOOK_ENTITIES."""
    spec = DATA_FIELDS[table]
    out = dict(record) if spec is None else {key: get(record) for key, get in spec.items()}
    if "custom_fields" in out or "custom_fields" in record:
        out["custom_fields"] = typed_custom_fields(defs, record.get("custom_fields"))
    return out


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The `previous` block of a change: the old value of every field that changed."""
    previous: dict[str, Any] = {}
    for key in after.keys() | before.keys():
        if key == "custom_fields":
            continue
        if before.get(key) != after.get(key):
            previous[key] = before.get(key)
    old_cf = before.get("custom_fields") or {}
    new_cf = after.get("custom_fields") or {}
    cf = {k: old_cf.get(k) for k in old_cf.keys() | new_cf.keys() if old_cf.get(k) != new_cf.get(k)}
    if cf:
        previous["custom_fields"] = dict(sorted(cf.items()))
    return dict(sorted(previous.items()))


def permitted_user_ids(record: Mapping[str, Any], admin_id: int) -> list[str]:
    """Who may see the record: the admin plus its owner (the fake's users see everything)."""
    ids = [admin_id]
    for key in ("owner_id", "user_id", "creator_id", "creator_user_id"):
        v = record.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v not in ids:
            ids.append(v)
    return [str(i) for i in ids]


def event_timestamp(ms: int) -> str:
    """`meta.timestamp`: RFC 3339 with milliseconds, like "2022-11-24T15:25:44.461Z"."""
    return f"{fmt_v2(ms)[:-1]}.{ms % 1000:03d}Z"
