"""Field definitions (standard and custom) and custom-field values of the fake Pipedrive.

Custom field values are kept in the API v2 shape everywhere inside the fake (in a record's
`custom_fields`, keyed by the field's 40-hex-char hash). `flatten_v1` turns them into the flat
v1 shape served by /v1/leads.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# every custom field type the fake generates, in a fixed order
CUSTOM_FIELD_TYPES: tuple[str, ...] = (
    "varchar",
    "varchar_auto",
    "text",
    "phone",
    "double",
    "monetary",
    "date",
    "daterange",
    "time",
    "timerange",
    "enum",
    "set",
    "user",
    "org",
    "people",
    "address",
)

ADDRESS_COMPONENTS: tuple[str, ...] = (
    "street_number",
    "route",
    "sublocality",
    "locality",
    "admin_area_level_1",
    "admin_area_level_2",
    "country",
    "postal_code",
    "formatted_address",
    "subpremise",
)

# the canonical custom field of each type, per entity: name → type (in order)
_CANONICAL_NAMES: dict[str, str] = {
    "varchar": "Project code",
    "varchar_auto": "Referral name",
    "text": "Background",
    "phone": "Hotline",
    "double": "Discount rate",
    "monetary": "Budget",
    "date": "Renewal date",
    "daterange": "Contract period",
    "time": "Call slot",
    "timerange": "Office hours",
    "enum": "Priority",
    "set": "Channels",
    "user": "Account manager",
    "org": "Partner organization",
    "people": "Champion",
    "address": "Billing address",
}

# extra custom fields on deals (and so on leads) whose names are hard on a sync
TRICKY_DEAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("Título", "varchar"),
    ("Größe", "double"),
    ("价格", "monetary"),
    ("Title", "varchar"),  # collides with the standard `title`
    ("Source", "enum"),  # two different fields named Source
    ("Source", "varchar"),
    ("🔥🔥", "varchar"),
)

ENUM_LABELS = {
    "Priority": ["Low", "Medium", "High", "Urgent"],
    "Channels": ["Email", "Phone", "Web", "Partner", "Legacy"],
    "Source": ["Inbound", "Outbound", "Referral", "Event"],
}
GENERIC_LABELS = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"]
OPTION_COLORS = ["green", "yellow", "red", "blue", None]

ENTITY_SINGULAR = {
    "deals": "deal",
    "persons": "person",
    "organizations": "organization",
    "activities": "activity",
    "products": "product",
    "leads": "lead",
    "notes": "note",
    "projects": "project",
}
SINGULAR_TO_TABLE = {v: k for k, v in ENTITY_SINGULAR.items()}
SINGULAR_TO_TABLE.update({"org": "organizations", "person": "persons"})

# entities whose records carry custom fields (leads carry the deal fields)
CUSTOM_FIELD_ENTITIES = ("deals", "persons", "organizations", "activities", "products", "projects")
# entities whose fields are created after every other entity's (so that adding them left the
# random streams, ids and times of the older entities' fields unchanged)
LATE_FIELD_ENTITIES = ("projects",)


def table_name(entity: str) -> str:
    """`deal`, `deals`, `dealFields` → `deals`."""
    name = entity.removesuffix("Fields")
    if name in ENTITY_SINGULAR:
        return name
    if name in SINGULAR_TO_TABLE:
        return SINGULAR_TO_TABLE[name]
    raise ValueError(f"unknown entity {entity!r}")


def field_hash(seed: int, entity: str, n: int, name: str) -> str:
    return hashlib.sha1(f"{seed}/{entity}/{n}/{name}".encode()).hexdigest()


# --- time formatting (milliseconds since the epoch, UTC) ----------------------------------------


_DAYS: dict[int, str] = {}


def _day(days: int) -> str:
    text = _DAYS.get(days)
    if text is None:
        t = time.gmtime(days * 86_400)
        text = _DAYS[days] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    return text


def _clock(sec: int) -> str:
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def fmt_v2(ms: int) -> str:
    """RFC 3339, whole seconds: 2024-06-01T12:00:00Z."""
    days, sec = divmod(ms // 1000, 86_400)
    return f"{_day(days)}T{_clock(sec)}Z"


def fmt_v1(ms: int) -> str:
    """v1 style: 2024-06-01 12:00:00 (UTC)."""
    days, sec = divmod(ms // 1000, 86_400)
    return f"{_day(days)} {_clock(sec)}"


def fmt_ms(ms: int) -> str:
    """RFC 3339 with milliseconds: 2024-06-01T12:00:00.123Z (v1 leads)."""
    days, sec = divmod(ms // 1000, 86_400)
    return f"{_day(days)}T{_clock(sec)}.{ms % 1000:03d}Z"


def fmt_date(ms: int) -> str:
    return _day(ms // 86_400_000)


# --- definitions --------------------------------------------------------------------------------


@dataclass
class Option:
    id: Any  # int; standard status and lead-label options use str ids
    label: str
    color: str | None = None
    add_time: int | None = None  # ms
    update_time: int | None = None


@dataclass
class FieldDef:
    """One field of an entity, standard or custom."""

    key: str  # v2 field_code / v1 key
    name: str
    field_type: str
    custom: bool
    id: int  # v1 field id
    order_nr: int
    add_time: int  # ms
    update_time: int
    options: list[Option] | None = None
    deleted_options: list[Option] = field(default_factory=list)
    description: str | None = None
    optional_response: bool = False  # only returned when asked for with include_fields
    null_rate: float = 0.3
    subfields: list[tuple[str, str, str]] | None = None  # standard composite fields
    deleted: bool = False
    edit_flag: bool = True
    mandatory: bool = False

    def option_ids(self) -> list[int]:
        return [o.id for o in self.options or []]


def v2_subfields(f: FieldDef) -> list[dict[str, Any]] | None:
    if f.subfields is not None:
        return [{"field_code": c, "field_name": n, "field_type": t} for c, n, t in f.subfields]
    if not f.custom:
        return None
    k, n = f.key, f.name
    t = f.field_type
    if t == "monetary":
        return [
            {
                "field_code": f"{k}_currency",
                "field_name": f"Currency of {n}",
                "field_type": "varchar",
            }
        ]
    if t == "daterange":
        return [{"field_code": f"{k}_until", "field_name": f"End of {n}", "field_type": "date"}]
    if t == "timerange":
        return [{"field_code": f"{k}_until", "field_name": f"End of {n}", "field_type": "time"}]
    if t == "time":
        return [
            {
                "field_code": f"{k}_timezone_id",
                "field_name": f"Timezone ID of {n}",
                "field_type": "int",
            },
            {
                "field_code": f"{k}_timezone_name",
                "field_name": f"Timezone of {n}",
                "field_type": "varchar",
            },
        ]
    if t == "address":
        return [
            {
                "field_code": f"{k}_{c}",
                "field_name": f"{c.replace('_', ' ').capitalize()} of {n}",
                "field_type": "varchar",
            }
            for c in ADDRESS_COMPONENTS
        ]
    return None


def render_v2(f: FieldDef, *, with_description: bool = True) -> dict[str, Any]:
    """A v2 *Fields item (only dealFields has `description` in the spec)."""
    options = None
    if f.options is not None:
        options = [
            {
                "id": o.id,
                "label": o.label,
                "color": o.color,
                "add_time": fmt_v2(o.add_time) if o.add_time is not None else None,
                "update_time": fmt_v2(o.update_time) if o.update_time is not None else None,
            }
            for o in f.options
        ]
    out: dict[str, Any] = {"field_name": f.name, "field_code": f.key}
    if with_description:
        out["description"] = f.description
    out.update(
        field_type=f.field_type,
        options=options,
        subfields=v2_subfields(f),
        is_custom_field=f.custom,
        is_optional_response_field=f.optional_response,
    )
    return out


def render_v1(f: FieldDef) -> dict[str, Any]:
    """A /v1/leadFields item."""
    out: dict[str, Any] = {
        "id": f.id,
        "key": f.key,
        "name": f.name,
        "order_nr": f.order_nr,
        "field_type": f.field_type,
        "add_time": fmt_v2(f.add_time),
        "update_time": fmt_v2(f.update_time),
        "last_updated_by_user_id": 1 if f.custom else None,
        "created_by_user_id": 1 if f.custom else None,
        "active_flag": True,
        "edit_flag": f.edit_flag,
        "index_visible_flag": True,
        "details_visible_flag": True,
        "add_visible_flag": f.mandatory or not f.custom,
        "important_flag": False,
        "bulk_edit_allowed": True,
        "searchable_flag": f.field_type in ("varchar", "text", "phone"),
        "filtering_allowed": True,
        "sortable_flag": True,
        "mandatory_flag": f.mandatory,
        "options": [{"id": o.id, "label": o.label} for o in f.options]
        if f.options is not None
        else None,
        "options_deleted": [{"id": o.id, "label": o.label} for o in f.deleted_options],
        "is_subfield": False,
    }
    if f.custom and f.field_type in ("monetary", "daterange", "timerange", "time", "address"):
        out["subfields"] = [
            {"key": s["field_code"], "name": s["field_name"], "field_type": s["field_type"]}
            for s in v2_subfields(f) or []
        ]
    return out


def render_note_field(f: FieldDef) -> dict[str, Any]:
    """A /v1/noteFields item (the spec lists fewer properties than leadFields)."""
    out: dict[str, Any] = {
        "id": f.id,
        "key": f.key,
        "name": f.name,
        "field_type": f.field_type,
        "active_flag": True,
        "edit_flag": f.edit_flag,
        "bulk_edit_allowed": True,
        "mandatory_flag": f.mandatory,
    }
    if f.options is not None:
        out["options"] = [{"id": o.id, "label": o.label} for o in f.options]
    return out


# standard fields per entity: (field_code, name, field_type[, options or subfields])
_STD: dict[str, list[tuple[Any, ...]]] = {
    "deals": [
        ("id", "ID", "int"),
        ("title", "Title", "varchar"),
        ("creator_user_id", "Creator", "user"),
        ("owner_id", "Owner", "user"),
        (
            "value",
            "Value",
            "monetary",
            [("value", "Amount of Value", "double"), ("currency", "Currency of Value", "varchar")],
        ),
        ("person_id", "Contact person", "people"),
        ("org_id", "Organization", "org"),
        ("pipeline_id", "Pipeline", "int"),
        ("stage_id", "Stage", "stage"),
        ("status", "Status", "status"),
        ("probability", "Probability", "double"),
        ("lost_reason", "Lost reason", "varchar"),
        ("visible_to", "Visible to", "visible_to"),
        ("add_time", "Deal created", "date"),
        ("update_time", "Update time", "date"),
        ("stage_change_time", "Last stage change", "date"),
        ("close_time", "Deal closed on", "date"),
        ("won_time", "Won time", "date"),
        ("lost_time", "Lost time", "date"),
        ("expected_close_date", "Expected close date", "date"),
        ("label_ids", "Label", "set"),
        ("origin", "Source origin", "varchar"),
        ("origin_id", "Source origin ID", "varchar"),
        ("channel", "Source channel", "enum"),
        ("channel_id", "Source channel ID", "varchar"),
        ("source_lead_id", "Source lead", "lead"),
        ("arr", "ARR", "double"),
        ("mrr", "MRR", "double"),
        ("acv", "ACV", "double"),
        ("next_activity_id", "Next activity", "activity", "optional"),
        ("products_count", "Number of products", "int", "optional"),
        ("notes_count", "Number of notes", "int", "optional"),
    ],
    "persons": [
        ("id", "ID", "int"),
        ("name", "Name", "varchar"),
        ("first_name", "First name", "varchar"),
        ("last_name", "Last name", "varchar"),
        ("owner_id", "Owner", "user"),
        ("org_id", "Organization", "org"),
        ("emails", "Email", "varchar"),
        ("phones", "Phone", "phone"),
        ("im", "Instant messenger", "varchar"),
        ("postal_address", "Postal address", "address"),
        ("birthday", "Birthday", "date"),
        ("job_title", "Job title", "varchar"),
        ("notes", "Notes", "text"),
        ("label_ids", "Labels", "set"),
        ("picture_id", "Profile picture", "picture"),
        ("visible_to", "Visible to", "visible_to"),
        ("add_time", "Person created", "date"),
        ("update_time", "Update time", "date"),
        ("open_deals_count", "Open deals", "int", "optional"),
    ],
    "organizations": [
        ("id", "ID", "int"),
        ("name", "Name", "varchar"),
        ("owner_id", "Owner", "user"),
        ("address", "Address", "address"),
        ("label_ids", "Labels", "set"),
        ("website", "Website", "varchar"),
        ("linkedin", "LinkedIn profile", "varchar"),
        ("industry", "Industry", "enum"),
        ("annual_revenue", "Annual revenue", "int"),
        ("employee_count", "Number of employees", "int"),
        ("visible_to", "Visible to", "visible_to"),
        ("add_time", "Organization created", "date"),
        ("update_time", "Update time", "date"),
        ("people_count", "People", "int", "optional"),
    ],
    "activities": [
        ("id", "ID", "int"),
        ("subject", "Subject", "varchar"),
        ("type", "Type", "varchar"),
        ("owner_id", "Assigned to user", "user"),
        ("creator_user_id", "Creator", "user"),
        ("deal_id", "Deal", "deal"),
        ("lead_id", "Lead", "lead"),
        ("person_id", "Contact person", "people"),
        ("org_id", "Organization", "org"),
        ("project_id", "Project", "project"),
        ("due_date", "Due date", "date"),
        ("due_time", "Due time", "time"),
        ("duration", "Duration", "time"),
        ("busy", "Free/busy", "boolean"),
        ("done", "Done", "boolean"),
        ("marked_as_done_time", "Marked as done time", "date"),
        ("location", "Location", "address"),
        ("participants", "Participants", "people"),
        ("attendees", "Attendees", "json"),
        ("public_description", "Public description", "text"),
        ("priority", "Priority", "enum"),
        ("note", "Note", "text"),
        ("add_time", "Add time", "date"),
        ("update_time", "Update time", "date"),
    ],
    "products": [
        ("id", "ID", "int"),
        ("name", "Name", "varchar"),
        ("code", "Product code", "varchar"),
        ("description", "Description", "text"),
        ("unit", "Unit", "varchar"),
        ("tax", "Tax", "double"),
        ("category", "Category", "enum"),
        ("is_linkable", "Linkable", "boolean"),
        ("owner_id", "Owner", "user"),
        ("visible_to", "Visible to", "visible_to"),
        ("prices", "Prices", "price_list"),
        ("billing_frequency", "Billing frequency", "billing_frequency"),
        ("billing_frequency_cycles", "Billing cycles", "int"),
        ("add_time", "Add time", "date"),
        ("update_time", "Update time", "date"),
    ],
    "leads": [  # v1 leadFields: only types the spec's leadFields enum allows
        ("title", "Title", "varchar"),
        ("owner_id", "Owner", "user"),
        ("person_id", "Contact person", "people"),
        ("organization_id", "Organization", "org"),
        ("value", "Value", "monetary"),
        ("expected_close_date", "Expected close date", "date"),
        ("label_ids", "Labels", "set"),
        ("source_name", "Source", "varchar"),
        ("visible_to", "Visible to", "visible_to"),
        ("add_time", "Lead created", "date"),
        ("update_time", "Update time", "date"),
    ],
    "notes": [
        ("content", "Content", "text"),
        ("user_id", "User", "user"),
        ("person_id", "Person", "people"),
        ("org_id", "Organization", "org"),
        ("add_time", "Add time", "date"),
        ("update_time", "Update time", "date"),
        ("pinned_to_deal_flag", "Note is pinned to deal", "enum"),
        ("pinned_to_person_flag", "Note is pinned to person", "enum"),
        ("pinned_to_organization_flag", "Note is pinned to organization", "enum"),
    ],
    "projects": [  # v2 projectFields (types from the spec's projectFields enum)
        ("id", "ID", "int"),
        ("title", "Title", "varchar"),
        ("description", "Description", "text"),
        ("status", "Status", "status"),
        ("board_id", "Board", "projects_board"),
        ("phase_id", "Phase", "projects_phase"),
        ("owner_id", "Owner", "user"),
        ("start_date", "Start date", "date"),
        ("end_date", "End date", "date"),
        ("deal_ids", "Deals", "deals"),
        ("person_ids", "Contact persons", "people"),
        ("org_ids", "Organizations", "org"),
        ("label_ids", "Labels", "set"),
        ("health_status", "Health status", "enum"),
        ("add_time", "Project created", "date"),
        ("update_time", "Update time", "date"),
        ("status_change_time", "Status changed", "date"),
        ("archive_time", "Archived", "date"),
    ],
}

_STD_OPTIONS: dict[str, list[tuple[Any, str]]] = {
    "visible_to": [
        (1, "Owner & followers"),
        (3, "Entire company"),
        (5, "Owner's group"),
        (7, "Owner's group and sub-groups"),
    ],
    "status": [("open", "Open"), ("won", "Won"), ("lost", "Lost"), ("deleted", "Deleted")],
    "label_ids": [(1, "Hot"), (2, "Warm"), (3, "Cold"), (4, "VIP"), (5, "Churn risk")],
    "pinned": [(1, "Yes"), (0, "No")],
    "project_status": [
        ("open", "Open"),
        ("completed", "Completed"),
        ("canceled", "Canceled"),
        ("deleted", "Deleted"),
    ],
    "health_status": [(10, "On track"), (20, "At risk"), (30, "Off track")],
    # the options generated records use (generate.py)
    "channel": [(1, "Website"), (2, "Events"), (52, "Partner referral")],
    "industry": [
        (1, "Software"),
        (2, "Manufacturing"),
        (3, "Retail"),
        (4, "Healthcare"),
        (5, "Finance"),
        (6, "Education"),
        (7, "Logistics"),
        (8, "Energy"),
    ],
    "priority": [(1, "Low"), (2, "Medium"), (3, "High")],
    "lead_label_ids": [  # lead labels have UUID ids (generate.LEAD_LABELS)
        ("f08b42a0-4e75-11ea-9643-03698ef1cfd6", "Hot"),
        ("f08b42a1-4e75-11ea-9643-03698ef1cfd6", "Warm"),
        ("f08b42a2-4e75-11ea-9643-03698ef1cfd6", "Cold"),
    ],
}


class FieldRegistry:
    """The field definitions of every entity, with stable keys derived from the seed."""

    def __init__(self, seed: int, base_time_ms: int, custom_field_count: dict[str, int]) -> None:
        self.seed = seed
        self.base_time = base_time_ms
        self._rng = random.Random(f"{seed}/fields")
        self._next_option_id = 100
        self._next_field_id = 1
        self.fields: dict[str, list[FieldDef]] = {}
        for entity, std in _STD.items():
            if entity not in LATE_FIELD_ENTITIES:
                self.fields[entity] = [self._standard(entity, n, s) for n, s in enumerate(std)]
        for entity in CUSTOM_FIELD_ENTITIES:
            if entity not in LATE_FIELD_ENTITIES:
                self._default_custom(entity, custom_field_count.get(entity))
        for entity in LATE_FIELD_ENTITIES:
            std = _STD[entity]
            self.fields[entity] = [self._standard(entity, n, s) for n, s in enumerate(std)]
            self._default_custom(entity, custom_field_count.get(entity))

    # -- construction --

    def _time(self) -> int:
        return self.base_time - self._rng.randint(400, 900) * 86_400_000

    def _new_options(self, labels: Iterable[Any], with_ids: bool = False) -> list[Option]:
        out = []
        for item in labels:
            if with_ids:
                oid, label = item
            else:
                oid, label = self._next_option_id, item
                self._next_option_id += 1
            t = self._time()
            out.append(
                Option(
                    id=oid,
                    label=label,
                    color=self._rng.choice(OPTION_COLORS),
                    add_time=t if self._rng.random() < 0.8 else None,
                    update_time=t if self._rng.random() < 0.6 else None,
                )
            )
        return out

    def _standard(self, entity: str, n: int, spec: tuple[Any, ...]) -> FieldDef:
        code, name, ftype = spec[:3]
        extra = spec[3] if len(spec) > 3 else None
        fid = self._next_field_id
        self._next_field_id += 1
        t = self._time()
        f = FieldDef(
            key=code,
            name=name,
            field_type=ftype,
            custom=False,
            id=fid,
            order_nr=n,
            add_time=t,
            update_time=t,
            description=f"The {name.lower()} of the {ENTITY_SINGULAR[entity]}",
            optional_response=extra == "optional",
            edit_flag=False,
            mandatory=code in ("title", "name", "subject", "content"),
        )
        if isinstance(extra, list):
            f.subfields = extra
        if ftype in ("enum", "set", "status", "visible_to"):
            key = "pinned" if code.startswith("pinned_to") else code
            key = ftype if ftype in ("status", "visible_to") else key
            key = "lead_label_ids" if (entity, code) == ("leads", "label_ids") else key
            key = "project_status" if (entity, code) == ("projects", "status") else key
            if key in _STD_OPTIONS:
                f.options = self._new_options(_STD_OPTIONS[key], with_ids=True)
            else:
                f.options = self._new_options(GENERIC_LABELS[:3])
        return f

    def _default_custom(self, entity: str, count: int | None) -> None:
        layout: list[tuple[str, str]] = [(_CANONICAL_NAMES[t], t) for t in CUSTOM_FIELD_TYPES]
        if entity == "deals":
            layout += list(TRICKY_DEAL_FIELDS)
        if count is not None:
            if count < len(layout):
                layout = layout[:count]
            else:
                extra = count - len(layout)
                for i in range(extra):
                    t = CUSTOM_FIELD_TYPES[i % len(CUSTOM_FIELD_TYPES)]
                    layout.append((f"Extra {t} {i + 1}", t))
        null_rates = (0.1, 0.3, 0.5, 0.3, 0.9)
        for i, (name, ftype) in enumerate(layout):
            f = self.add(entity, name, ftype, null_rate=null_rates[i % len(null_rates)])
            if ftype in ("enum", "set") and f.options and len(f.options) > 3:
                # the last option was deleted after records chose it: records keep the stale id
                dead = f.options.pop()
                f.deleted_options.append(dead)

    # -- queries --

    def custom(self, entity: str) -> list[FieldDef]:
        """Active custom fields of an entity (leads: the deal fields)."""
        ent = "deals" if table_name(entity) == "leads" else table_name(entity)
        return [f for f in self.fields[ent] if f.custom and not f.deleted]

    def active(self, entity: str) -> list[FieldDef]:
        """Every active field as the *Fields endpoint lists it (leads: lead standard + deal custom)."""
        ent = table_name(entity)
        if ent == "leads":
            std = [f for f in self.fields["leads"] if not f.deleted]
            return std + self.custom("deals")
        return [f for f in self.fields[ent] if not f.deleted]

    def get(self, entity: str, key: str, *, include_deleted: bool = False) -> FieldDef:
        ent = table_name(entity)
        pools = [self.fields[ent]]
        if ent == "leads":
            pools.append(self.fields["deals"])
        for pool in pools:
            for f in pool:
                if f.key == key and (include_deleted or not f.deleted):
                    return f
        raise KeyError(f"no field {key!r} on {ent}")

    def keys_named(self, entity: str, name: str) -> list[str]:
        return [f.key for f in self.custom(entity) if f.name == name]

    # -- mutations --

    def add(
        self,
        entity: str,
        name: str,
        field_type: str,
        options: Sequence[str] | None = None,
        *,
        null_rate: float = 0.3,
        at_ms: int | None = None,
    ) -> FieldDef:
        ent = table_name(entity)
        if ent == "leads":
            ent = "deals"  # leads share the deal fields
        if field_type not in CUSTOM_FIELD_TYPES:
            raise ValueError(f"unsupported custom field type {field_type!r}")
        n = sum(1 for f in self.fields[ent] if f.custom) + 1
        key = field_hash(self.seed, ent, n, name)
        t = at_ms if at_ms is not None else self._time()
        fid = self._next_field_id
        self._next_field_id += 1
        f = FieldDef(
            key=key,
            name=name,
            field_type=field_type,
            custom=True,
            id=fid,
            order_nr=len(self.fields[ent]),
            add_time=t,
            update_time=t,
            description=None if self._rng.random() < 0.5 else f"Custom {field_type} field",
            null_rate=null_rate,
        )
        if field_type in ("enum", "set"):
            labels = list(options) if options is not None else ENUM_LABELS.get(name, GENERIC_LABELS)
            f.options = self._new_options(labels)
        elif options:
            raise ValueError(f"options only apply to enum and set fields, not {field_type}")
        self.fields[ent].append(f)
        return f

    def retype(
        self, f: FieldDef, field_type: str, labels: Sequence[str] | None = None
    ) -> Callable[[Any], Any]:
        """Change `f`'s type in place; returns how a stored value of the old type converts
        (None where it cannot)."""
        if field_type not in CUSTOM_FIELD_TYPES:
            raise ValueError(f"unsupported custom field type {field_type!r}")
        old, old_options = f.field_type, list(f.options or [])
        f.field_type = field_type
        if field_type in ("enum", "set"):
            f.options = self._new_options(labels) if labels is not None else old_options
        else:
            f.options = None
            f.deleted_options = []
        by_label = {o.label: o.id for o in f.options or []}
        pair = (old, field_type)
        if pair in (("varchar", "enum"), ("text", "enum")):
            return lambda v: by_label.get(v)
        if pair == ("enum", "set"):
            return lambda v: [v]
        if pair == ("double", "monetary"):
            return lambda v: {"value": v, "currency": "EUR"}
        return lambda v: None

    def add_option(self, f: FieldDef, label: str) -> Option:
        opt = self._new_options([label])[0]
        assert f.options is not None
        f.options.append(opt)
        return opt


# --- custom field values ------------------------------------------------------------------------

_WORDS = [
    "alpha", "bravo", "Nordic", "Q3 push", "renewal", "pilot", "enterprise", "SMB",
    "naïve café", "Zürich", "東京", "O'Brien & Co", 'quote "x"', "line\nbreak", "emoji 🚀",
    "  padded  ", "x" * 300, "1234", "true", "NULL", "",
]  # fmt: skip
_TEXTS = [
    "Met at the trade fair.\nFollow up in Q3.",
    "<p>HTML <b>content</b></p>",
    "Long notes " + "lorem ipsum " * 80,
    "Ünïcödé ✓ — “quotes”",
]
_PHONES = ["+49 30 1234567", "+1 (415) 555-0100", "020 7946 0958", "+372 5555 1234", "12345"]
_CURRENCIES = ["EUR", "USD", "GBP", "SEK", "JPY"]
_TZ = [(123, "Europe/Berlin"), (7, "America/New_York"), (301, "Asia/Tokyo"), (55, "UTC")]
ADDRESSES: list[dict[str, str | None]] = [
    {
        "street_number": "12",
        "route": "Friedrichstraße",
        "sublocality": "Mitte",
        "locality": "Berlin",
        "admin_area_level_1": "Berlin",
        "admin_area_level_2": None,
        "country": "Germany",
        "postal_code": "10117",
        "subpremise": None,
    },
    {
        "street_number": "1600",
        "route": "Amphitheatre Parkway",
        "sublocality": None,
        "locality": "Mountain View",
        "admin_area_level_1": "California",
        "admin_area_level_2": "Santa Clara County",
        "country": "United States",
        "postal_code": "94043",
        "subpremise": "Suite 4",
    },
    {
        "street_number": None,
        "route": "Narva mnt",
        "sublocality": "Kesklinn",
        "locality": "Tallinn",
        "admin_area_level_1": "Harju maakond",
        "admin_area_level_2": None,
        "country": "Estonia",
        "postal_code": None,
        "subpremise": None,
    },
    {
        "street_number": "3",
        "route": "Rue de Rivoli",
        "sublocality": "1er Arrondissement",
        "locality": "Paris",
        "admin_area_level_1": "Île-de-France",
        "admin_area_level_2": "Paris",
        "country": "France",
        "postal_code": "75001",
        "subpremise": None,
    },
]


def address_value(a: dict[str, str | None], with_formatted: bool = True) -> dict[str, Any]:
    parts = [a.get("street_number"), a.get("route"), a.get("postal_code"), a.get("locality")]
    full = ", ".join(
        p
        for p in [
            " ".join(x for x in parts[:2] if x),
            " ".join(x for x in parts[2:] if x),
            a.get("country"),
        ]
        if p
    )
    out: dict[str, Any] = {"value": full}
    for c in ADDRESS_COMPONENTS:
        if c == "formatted_address":
            if with_formatted:
                out[c] = full
        else:
            out[c] = a.get(c)
    return out


def _date_str(rng: random.Random, base_ms: int, spread_days: int = 400) -> str:
    return fmt_date(base_ms + rng.randint(-spread_days, spread_days) * 86_400_000)


def _time_value(rng: random.Random) -> dict[str, Any]:
    """A time of day, mostly with its time zone."""
    tz_id, tz_name = rng.choice(_TZ)
    v: dict[str, Any] = {"value": f"{rng.randint(0, 23):02d}:{rng.choice([0, 15, 30, 45]):02d}:00"}
    if rng.random() < 0.8:
        v.update(timezone_id=tz_id, timezone_name=tz_name)
    else:
        v.update(timezone_id=None, timezone_name=None)
    return v


def _option_value(f: FieldDef, rng: random.Random) -> Any:
    """An enum's option id or a set's ids, now and then one of a deleted option."""
    dead = [o.id for o in f.deleted_options]
    if f.field_type == "enum":
        ids = f.option_ids() + dead
        return rng.choice(ids) if ids else None
    live = f.option_ids()
    if not live:
        return None
    chosen = rng.sample(live, rng.randint(1, min(3, len(live))))
    if dead and rng.random() < 0.2:
        chosen.append(dead[0])
    return sorted(chosen)


def random_value(
    f: FieldDef,
    rng: random.Random,
    *,
    base_ms: int,
    user_ids: Sequence[int],
    org_ids: Sequence[int],
    person_ids: Sequence[int],
) -> Any:
    """One non-null v2 value for a custom field."""
    t = f.field_type
    if t in ("varchar", "varchar_auto"):
        return (
            rng.choice(_WORDS)
            if t == "varchar"
            else rng.choice(["Ann Lee", "Bo Chen", "Émile Zola"])
        )
    if t == "text":
        return rng.choice(_TEXTS)
    if t == "phone":
        return rng.choice(_PHONES)
    if t == "double":
        return rng.choice([0, 12, -3.5, 1e9, round(rng.uniform(0, 1000), 2), 0.1, 99.99])
    if t == "monetary":
        amount = rng.choice([0, 1500, round(rng.uniform(1, 100000), 2), 2500.5])
        return {"value": amount, "currency": rng.choice(_CURRENCIES)}
    if t == "date":
        return _date_str(rng, base_ms)
    if t == "daterange":
        start = base_ms + rng.randint(-300, 200) * 86_400_000
        return {
            "value": fmt_date(start),
            "until": fmt_date(start + rng.randint(0, 90) * 86_400_000),
        }
    if t == "time":
        return _time_value(rng)
    if t == "timerange":
        h = rng.randint(6, 12)
        return {"value": f"{h:02d}:00:00", "until": f"{h + rng.randint(1, 9):02d}:30:00"}
    if t in ("enum", "set"):
        return _option_value(f, rng)
    if t == "user":
        return rng.choice(user_ids)
    if t == "org":
        return rng.choice(org_ids) if org_ids else None
    if t == "people":
        return rng.choice(person_ids) if person_ids else None
    if t == "address":
        return address_value(rng.choice(ADDRESSES))
    raise ValueError(t)


_MESSY_TEXT = [
    "00123", "1e5", "NULL", "null", "N/A", "", " ", "  padded  ", "emoji 🚀🔥👨‍👩‍👧", "١٢٣",
    "true", "0", "-", "Ünïcödé\u2028line", "x" * 300,
]  # fmt: skip
_MESSY_NUMBERS: list[Any] = [0, -0.0, 7, 12.0, 2**53 + 1, 1e-7, 1e15, -3]
_NUMBER_TEXTS = ["12.50", "1e5", " 3 ", "00123", "", "NULL", "1,5", "n/a", "€ 12"]
MESSY_SHARE = 6  # of the POOL values of a field (1 in 11 records), when the account is messy


def is_wild(f: FieldDef) -> bool:
    """One field in five of a messy account also holds values of another JSON type than its
    type's (an integration wrote numbers into a text field, an import wrote text into a
    number field); the others are messy within their type."""
    return int(f.key[:8], 16) % 5 == 0


def messy_value(f: FieldDef, rng: random.Random, **ctx: Any) -> Any:
    """A value the way real accounts hold some (imported, typed by hand, written by old
    integrations): odd spellings, numbers mixing ints and floats, partial objects, and in
    `is_wild` fields numbers as strings, strings as numbers, v1-style objects or a bare value
    where an object belongs."""
    if is_wild(f) and rng.random() < 0.5:
        return _wild_value(f, rng, **ctx)
    t = f.field_type
    if t in ("varchar", "varchar_auto", "text", "phone"):
        return rng.choice(_MESSY_TEXT)
    if t == "double":
        return rng.choice(_MESSY_NUMBERS)
    if t == "monetary":
        return {"value": rng.choice(_MESSY_NUMBERS), "currency": rng.choice(["EUR", "", None])}
    if t == "date":
        return rng.choice(["", "2024-01-15 00:00:00", "15.01.2024", "NULL", "2024-02-30"])
    if t in ("daterange", "timerange"):
        good = random_value(f, rng, **ctx)
        return rng.choice([{"value": good["value"], "until": None}, {"value": "", "until": ""}])
    if t == "time":
        return {"value": rng.choice(["9:00", "25:00", "09:00:00.5", ""]), "timezone_id": 7}
    if t == "address":
        a = address_value(rng.choice(ADDRESSES))
        return rng.choice([{**a, "value": None}, {"locality": "Berlin"}, {**a, "route": ""}])
    return random_value(f, rng, **ctx)


def _wild_value(f: FieldDef, rng: random.Random, **ctx: Any) -> Any:
    t = f.field_type
    if t in ("varchar", "varchar_auto", "text", "phone"):
        return rng.choice([12345, 1e5, 0, 4930123456])
    if t == "double":
        return rng.choice(_NUMBER_TEXTS)
    if t == "monetary":
        amount = rng.choice(_NUMBER_TEXTS)
        return rng.choice([{"value": amount, "currency": "EUR"}, 2500, 12.5])
    if t == "enum":
        ids = f.option_ids()
        return str(rng.choice(ids)) if ids else "1"
    if t == "set":
        ids = f.option_ids()[:2] or [1]
        return rng.choice([[str(i) for i in ids], ",".join(str(i) for i in ids)])
    if t in ("user", "org", "people"):
        ref = random_value(f, rng, **ctx) or 1
        return rng.choice([{"id": ref, "name": "Ann Lee", "value": ref}, str(ref)])
    if t == "address":
        a = address_value(rng.choice(ADDRESSES))
        return rng.choice([a["value"], {**a, "postal_code": 10117, "street_number": 12}])
    if t == "date":
        return 20240115
    return random_value(f, rng, **ctx)


def value_pool(
    f: FieldDef,
    rng: random.Random,
    size: int,
    *,
    messy: bool = False,
    **ctx: Any,
) -> list[Any]:
    """`size` values for a field, a `null_rate` share of them None; on a messy account a few
    of them `messy_value`s."""
    n_null = round(size * f.null_rate)
    pool: list[Any] = [None] * n_null
    pool += [random_value(f, rng, **ctx) for _ in range(size - n_null)]
    if messy:
        pool[n_null : n_null + MESSY_SHARE] = [
            messy_value(f, rng, **ctx) for _ in range(MESSY_SHARE)
        ]
    rng.shuffle(pool)
    return pool


# --- v1 flat shape ------------------------------------------------------------------------------


def flatten_v1(fields: Sequence[FieldDef], values: dict[str, Any], out: dict[str, Any]) -> None:
    """Write custom field values in the v1 flat shape into `out` (every active key present)."""
    for f in fields:
        k = f.key
        v = values.get(k)
        t = f.field_type
        obj = v if isinstance(v, dict) else {}  # messy accounts: a bare value for an object
        main = obj.get("value") if isinstance(v, dict) else v
        if t == "monetary":
            out[k] = main
            out[f"{k}_currency"] = obj.get("currency")
        elif t in ("daterange", "timerange"):
            out[k] = main
            out[f"{k}_until"] = obj.get("until")
        elif t == "time":
            out[k] = main
            out[f"{k}_timezone_id"] = obj.get("timezone_id")
            out[f"{k}_timezone_name"] = obj.get("timezone_name")
        elif t == "address":
            out[k] = main
            for c in ADDRESS_COMPONENTS:
                out[f"{k}_{c}"] = obj.get(c)
        elif t == "enum":
            out[k] = str(v) if v is not None else None
        elif t == "set":
            out[k] = ",".join(str(x) for x in v) if isinstance(v, list) and v else v or None
        else:
            out[k] = v


def check_value(f: FieldDef, v: Any) -> None:
    """Raise ValueError when `v` is not a valid v2 value for the field's type (None is valid)."""
    if v is None:
        return
    t = f.field_type
    ok: bool
    if t in ("varchar", "varchar_auto", "text", "phone", "date"):
        ok = isinstance(v, str)
    elif t == "double":
        ok = isinstance(v, int | float) and not isinstance(v, bool)
    elif t in ("enum", "user", "org", "people"):
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif t == "set":
        ok = isinstance(v, list) and all(isinstance(x, int) for x in v)
    elif t == "monetary":
        ok = isinstance(v, dict) and set(v) == {"value", "currency"}
    elif t in ("daterange", "timerange"):
        ok = isinstance(v, dict) and set(v) == {"value", "until"}
    elif t == "time":
        ok = isinstance(v, dict) and set(v) <= {"value", "timezone_id", "timezone_name"}
    elif t == "address":
        ok = isinstance(v, dict) and "value" in v and set(v) <= {"value", *ADDRESS_COMPONENTS}
    else:
        ok = True
    if not ok:
        raise ValueError(f"{v!r} is not a valid v2 value for {t} field {f.name!r} ({f.key})")
