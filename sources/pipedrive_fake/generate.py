"""Deterministic, realistic record generators (values, nulls and references) for the fake.

Every generator returns the record in its *internal* shape: exactly the served v2 (or v1)
shape, except that leads keep their custom fields in a v2-style `custom_fields` dict (they are
flattened to the v1 shape when served). Timestamps are epoch milliseconds, UTC.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .fields import (
    ADDRESSES,
    FieldDef,
    FieldRegistry,
    fmt_date,
    fmt_ms,
    fmt_v1,
    fmt_v2,
    value_pool,
)

DAY = 86_400_000
HOUR = 3_600_000
POOL_SIZE = 64  # values per custom field; records pick from it with one random byte

USERS: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "Ada Admin", "email": "ada@example.com"},
    {"id": 2, "name": "Bruno Seller", "email": "bruno@example.com"},
    {"id": 3, "name": "Chloé Ventes", "email": "chloe@example.com"},
    {"id": 4, "name": "Dmitri Sales", "email": "dmitri@example.com"},
    {"id": 5, "name": "Eve 販売", "email": "eve@example.com"},
)
USER_IDS = [u["id"] for u in USERS]

PIPELINES = ("Sales", "Partnerships")
STAGES = ("Qualified", "Contact made", "Proposal made", "Negotiation", "Closing")

FIRST = ["Anna", "Ben", "Carla", "Dieter", "Élodie", "Farid", "Grete", "Hiro", "Ines", "Jörg",
         "Kaito", "Lena", "Miguel", "Noor", "Olga", "Pável", "Qiu", "Rosa", "Søren", "Tariq"]  # fmt: skip
LAST = ["Smith", "Müller", "García", "Rossi", "Novák", "Kowalski", "Tanaka", "Ivanov", "O'Neil",
        "Dubois", "Silva", "Nguyễn", "Lindqvist", "Papadopoulos", "Kim", "Li"]  # fmt: skip
COMPANY_A = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Cyberdyne",
             "Soylent", "Hooli", "Pied Piper", "Vandelay", "Nakatomi", "Müller & Söhne", "Åkerlund"]  # fmt: skip
COMPANY_B = ["GmbH", "Inc.", "Ltd", "AB", "OÜ", "S.A.", "LLC", "Group", "Holdings", ""]
PRODUCTS = ["Widget", "Gadget", "Seat licence", "Support plan", "Onboarding", "API add-on",
            "Consulting hour", "Hardware kit", "Training day", "Premium tier"]  # fmt: skip
ACTIVITY_TYPES = ["call", "meeting", "task", "deadline", "email", "lunch"]
CURRENCIES = ["EUR", "EUR", "USD", "USD", "GBP", "SEK"]
LEAD_LABELS = [
    "f08b42a0-4e75-11ea-9643-03698ef1cfd6",
    "f08b42a1-4e75-11ea-9643-03698ef1cfd6",
    "f08b42a2-4e75-11ea-9643-03698ef1cfd6",
]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def spec_address(rng: random.Random) -> dict[str, Any]:
    """A postal address in the shape persons.postal_address / organizations.address use."""
    a = rng.choice(ADDRESSES)
    full = ", ".join(
        x
        for x in (
            " ".join(p for p in (a["route"], a["street_number"]) if p),
            " ".join(p for p in (a["postal_code"], a["locality"]) if p),
            a["country"],
        )
        if x
    )
    return {
        "value": full,
        "country": a["country"],
        "admin_area_level_1": a["admin_area_level_1"],
        "admin_area_level_2": a["admin_area_level_2"],
        "locality": a["locality"],
        "sublocality": a["sublocality"],
        "route": a["route"],
        "street_number": a["street_number"],
        "subpremise": a["subpremise"],
        "postal_code": a["postal_code"],
    }


@dataclass
class CustomPools:
    keys: list[str]
    pools: list[list[Any]]


@dataclass
class Context:
    """What generators need to know about the account: ids to reference, the clock, fields."""

    seed: int
    now_ms: int
    registry: FieldRegistry
    stage_pipeline: dict[int, int] = field(default_factory=dict)
    stage_ids: list[int] = field(default_factory=list)
    org_names: dict[int, str] = field(default_factory=dict)
    person_names: dict[int, str] = field(default_factory=dict)
    deal_titles: dict[int, str] = field(default_factory=dict)
    org_ids: list[int] = field(default_factory=list)
    person_ids: list[int] = field(default_factory=list)
    deal_ids: list[int] = field(default_factory=list)
    product_ids: list[int] = field(default_factory=list)
    lead_ids: list[str] = field(default_factory=list)
    activity_ids: list[int] = field(default_factory=list)
    pools: dict[str, CustomPools] = field(default_factory=dict)
    bulk_times: list[int] = field(default_factory=list)
    product_names: dict[int, str] = field(default_factory=dict)
    project_ids: list[int] = field(default_factory=list)
    project_tasks: dict[int, list[int]] = field(default_factory=dict)  # project id → task ids
    company_id: int = 0
    company_domain: str = "example"
    messy: bool = False  # custom field values the way real accounts hold some (`messy_value`)

    def build_pools(self, entity: str, rng: random.Random) -> None:
        fields: Sequence[FieldDef] = self.registry.custom(entity)
        ctx = {
            "base_ms": self.now_ms,
            "user_ids": USER_IDS,
            "org_ids": self.org_ids or [1],
            "person_ids": self.person_ids or [1],
        }
        self.pools[entity] = CustomPools(
            keys=[f.key for f in fields],
            pools=[value_pool(f, rng, POOL_SIZE, messy=self.messy, **ctx) for f in fields],
        )

    def custom_values(self, entity: str, rng: random.Random) -> dict[str, Any]:
        p = self.pools.get(entity)
        if p is None:
            return {}
        picks = rng.randbytes(len(p.keys))
        if self.messy and picks[0] < 5:  # 1 in 50 records: every field null
            return dict.fromkeys(p.keys)
        return {k: pool[b & 63] for k, pool, b in zip(p.keys, p.pools, picks, strict=True)}

    def times(self, rng: random.Random) -> tuple[int, int]:
        """(add_time, update_time) in the past: added up to 2 years ago, updated since."""
        r = rng.random
        latest = self.now_ms - HOUR
        at = self.now_ms - 2 * DAY - int(r() * 728 * DAY)
        at -= at % 1000
        bulk = self.bulk_times
        if bulk and r() < 0.05:  # bulk edits: many rows share one timestamp
            ut = bulk[int(r() * len(bulk))]
            if ut >= at:
                return at, ut
        ut = at if r() < 0.2 else at + int(r() * (latest - at))
        return at, ut - ut % 1000


def make_bulk_times(rng: random.Random, now_ms: int) -> list[int]:
    out = []
    for _ in range(12):
        t = now_ms - rng.randint(1 * DAY, 200 * DAY)
        out.append(t - t % 1000)
    return out


# --- one generator per entity -------------------------------------------------------------------
# Each returns (data, flags) where flags = dict(status=..., archived=..., deleted=...).


def pipeline(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": PIPELINES[(i - 1) % len(PIPELINES)] if i <= len(PIPELINES) else f"Pipeline {i}",
        "order_nr": i,
        "is_deleted": False,
        "is_deal_probability_enabled": rng.random() < 0.5,
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
    }


def stage(
    ctx: Context, rng: random.Random, i: int, at: int, ut: int, pipeline_id: int, order: int
) -> dict[str, Any]:
    rot = rng.random() < 0.4
    return {
        "id": i,
        "order_nr": order,
        "name": STAGES[(order - 1) % len(STAGES)],
        "is_deleted": False,
        "deal_probability": min(100, order * 20),
        "pipeline_id": pipeline_id,
        "is_deal_rot_enabled": rot,
        "days_to_rotten": rng.choice([7, 14, 30]) if rot else None,
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
    }


def organization(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    name = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}".strip()
    if r() < 0.3:
        name = f"{name} {i}"
    return {
        "id": i,
        "name": name,
        "owner_id": rng.choice(USER_IDS),
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
        "is_deleted": False,
        "visible_to": 3 if r() < 0.8 else rng.choice([1, 5, 7]),
        "address": spec_address(rng) if r() < 0.6 else None,
        "label_ids": [] if r() < 0.6 else sorted(rng.sample([1, 2, 3, 4, 5], rng.randint(1, 2))),
        "website": f"https://www.example{i}.com" if r() < 0.6 else None,
        "linkedin": f"https://www.linkedin.com/company/example-{i}" if r() < 0.3 else None,
        "industry": rng.randint(1, 8) if r() < 0.4 else None,  # organizationFields' options
        "annual_revenue": rng.choice([0, 50_000, 1_200_000, 75_000_000]) if r() < 0.3 else None,
        "employee_count": rng.choice([1, 8, 45, 250, 12_000]) if r() < 0.5 else None,
        "custom_fields": ctx.custom_values("organizations", rng),
    }


def _contacts(rng: random.Random, kind: str, first: str, last: str) -> list[dict[str, Any]]:
    n = rng.choice([0, 1, 1, 1, 2])
    out = []
    for j in range(n):
        if kind == "email":
            value = f"{first}.{last}{'' if j == 0 else j}@example.org".lower().replace("'", "")
            label = "work" if j == 0 else rng.choice(["home", "other"])
        elif kind == "phone":
            value = rng.choice(["+49 30 901820", "+1 415 555 0199", "5550100", "+44 20 7946 0000"])
            label = rng.choice(["work", "mobile", "home"])
        else:
            value = f"{first.lower()}_{j}"
            label = rng.choice(["skype", "whatsapp", "telegram"])
        out.append({"value": value, "primary": j == 0, "label": label})
    return out


def person(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    first, last = rng.choice(FIRST), rng.choice(LAST)
    org_ids = ctx.org_ids
    return {
        "id": i,
        "name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "owner_id": rng.choice(USER_IDS),
        "org_id": rng.choice(org_ids) if org_ids and r() < 0.75 else None,
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
        "emails": _contacts(rng, "email", first, last),
        "phones": _contacts(rng, "phone", first, last),
        "is_deleted": False,
        "visible_to": 3 if r() < 0.8 else rng.choice([1, 5, 7]),
        "label_ids": [] if r() < 0.6 else sorted(rng.sample([1, 2, 3, 4, 5], rng.randint(1, 2))),
        "picture_id": rng.randint(1, 10_000) if r() < 0.15 else None,
        "postal_address": spec_address(rng) if r() < 0.4 else None,
        "notes": "Prefers e-mail.\nMet at the fair." if r() < 0.2 else None,
        "im": _contacts(rng, "im", first, last) if r() < 0.2 else [],
        "birthday": fmt_date(at - rng.randint(20 * 365, 60 * 365) * DAY) if r() < 0.2 else None,
        "job_title": rng.choice(["CEO", "CTO", "Buyer", "Head of Sales", "Ingénieur"])
        if r() < 0.5
        else None,
        "custom_fields": ctx.custom_values("persons", rng),
    }


def product(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    freq = (
        "one-time"
        if r() < 0.7
        else rng.choice(["monthly", "annually", "quarterly", "weekly", "semi-annually"])
    )
    prices = []
    for cur in rng.sample(["EUR", "USD", "GBP"], rng.choice([1, 1, 2])):
        prices.append(
            {
                "product_id": i,
                "price": rng.choice([0, 9.99, 49, 120.5, 1000]),
                "currency": cur,
                "cost": rng.choice([0, 4.5, 20]),
                "direct_cost": rng.choice([1, 2.5]) if r() < 0.3 else None,
                "notes": "Volume discount" if r() < 0.2 else None,
            }
        )
    return {
        "id": i,
        "name": f"{rng.choice(PRODUCTS)} {i}",
        "code": f"SKU-{i:05d}" if r() < 0.7 else None,
        "unit": rng.choice(["pcs", "hours", "seats", None, None]),
        "tax": rng.choice([0, 0, 20, 7.5]),
        "is_deleted": False,
        "is_linkable": r() < 0.9,
        "visible_to": 3 if r() < 0.8 else rng.choice([1, 5, 7]),
        "owner_id": rng.choice(USER_IDS),
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
        "description": "A fine product.\nSecond line." if r() < 0.5 else None,
        "category": rng.choice(["Retail", "Services", "Software"]) if r() < 0.5 else None,
        "custom_fields": ctx.custom_values("products", rng),
        "billing_frequency": freq,
        "billing_frequency_cycles": rng.choice([None, 12, 4]) if freq != "one-time" else None,
        "prices": prices,
    }


_VALUES = (0, 500, 1200, 9999.99, 250_000)
_PROBS = (10, 50, 90, 100)
_LOST = ("Price", "Timing", "Went with competitor", "Ghosted")
_VIS = (1, 5, 7)
_ORIGINS = ("ManuallyCreated", "ManuallyCreated", "API", "Import", "WebForms")
_LABEL_SETS = ((1,), (2,), (3,), (1, 2), (2, 4), (1, 3, 5), (5,), (4,))


def deal(
    ctx: Context, rng: random.Random, i: int, at: int, ut: int
) -> tuple[dict[str, Any], str, bool]:
    """A deal. Hot path for big benchmarks: picks use `seq[int(r() * len)]`, not rng.choice."""
    r = rng.random
    x = r()
    status = "open" if x < 0.6 else "won" if x < 0.8 else "lost" if x < 0.95 else "deleted"
    archived = r() < 0.06
    stages = ctx.stage_ids
    stage_id = stages[int(r() * len(stages))] if stages else None
    pipeline_id = ctx.stage_pipeline.get(stage_id) if stage_id else None
    org_ids, person_ids = ctx.org_ids, ctx.person_ids
    org_id = org_ids[int(r() * len(org_ids))] if org_ids and r() < 0.8 else None
    person_id = person_ids[int(r() * len(person_ids))] if person_ids and r() < 0.85 else None
    closed = status in ("won", "lost")
    close = fmt_v2(at + int(r() * (ut - at))) if closed else None
    org_name = ctx.org_names.get(org_id, "Walk-in") if org_id is not None else "Walk-in"
    title = f"{org_name} deal {i}" if r() < 0.9 else f"Δeal №{i} 🚀"
    y = r()
    value = round(y * 100_000, 2) if y < 0.2 else _VALUES[int(y * 5)]
    at_s, ut_s = fmt_v2(at), fmt_v2(ut)
    data = {
        "id": i,
        "title": title,
        "owner_id": USER_IDS[int(r() * 5)],
        "person_id": person_id,
        "org_id": org_id,
        "pipeline_id": pipeline_id,
        "stage_id": stage_id,
        "value": value,
        "currency": CURRENCIES[int(r() * 6)],
        "add_time": at_s,
        "update_time": ut_s,
        "stage_change_time": fmt_v2(at + int(r() * (ut - at))) if r() < 0.6 else None,
        "is_deleted": status == "deleted",
        "is_archived": archived,
        "status": status,
        "probability": _PROBS[int(r() * 4)] if r() < 0.3 else None,
        "lost_reason": _LOST[int(r() * 4)] if status == "lost" and r() < 0.7 else None,
        "visible_to": 3 if r() < 0.8 else _VIS[int(r() * 3)],
        "close_time": close,
        "won_time": close if status == "won" else None,
        "lost_time": close if status == "lost" else None,
        "expected_close_date": fmt_date(at + int(r() * 200 + 10) * DAY) if r() < 0.6 else None,
        "label_ids": [] if r() < 0.5 else list(_LABEL_SETS[int(r() * 8)]),
        "origin": _ORIGINS[int(r() * 5)],
        "origin_id": None if r() < 0.9 else f"ext-{i}",
        "channel": (1, 2, 52)[int(r() * 3)] if r() < 0.2 else None,
        "channel_id": "Jun23 Billboards" if r() < 0.1 else None,
        "source_lead_id": ctx.lead_ids[int(r() * len(ctx.lead_ids))]
        if ctx.lead_ids and r() < 0.1
        else None,
        "arr": round(value * 12, 2) if r() < 0.15 else None,
        "mrr": round(value / 12, 2) if r() < 0.15 else None,
        "acv": value if r() < 0.15 else None,
        "custom_fields": ctx.custom_values("deals", rng),
    }
    return data, status, archived


def activity(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    done = r() < 0.5
    person_ids, org_ids, deal_ids = ctx.person_ids, ctx.org_ids, ctx.deal_ids
    person_id = rng.choice(person_ids) if person_ids and r() < 0.7 else None
    atype = rng.choice(ACTIVITY_TYPES)
    meeting = atype == "meeting"
    owner = rng.choice(USER_IDS)
    attendees = []
    if meeting and r() < 0.6:
        attendees = [
            {
                "email": "guest@example.org",
                "name": rng.choice(["Guest", None]),
                "status": rng.choice(["accepted", "tentative", "noreply"]),
                "is_organizer": False,
                "person_id": person_id,
                "user_id": None,
            },
            {
                "email": "ada@example.com",
                "name": "Ada Admin",
                "status": "accepted",
                "is_organizer": True,
                "person_id": None,
                "user_id": owner,
            },
        ]
    return {
        "id": i,
        "subject": f"{atype.capitalize()} #{i}" if r() < 0.9 else "Follow-up ✉️ «important»",
        "type": atype,
        "owner_id": owner,
        "creator_user_id": rng.choice(USER_IDS),
        "is_deleted": False,
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
        "deal_id": rng.choice(deal_ids) if deal_ids and r() < 0.6 else None,
        "lead_id": rng.choice(ctx.lead_ids) if ctx.lead_ids and r() < 0.15 else None,
        "person_id": person_id,
        "org_id": rng.choice(org_ids) if org_ids and r() < 0.6 else None,
        "project_id": None if r() < 0.95 else rng.randint(1, 5),
        "due_date": fmt_date(at + rng.randint(-5, 60) * DAY) if r() < 0.9 else None,
        "due_time": f"{rng.randint(8, 18):02d}:{rng.choice([0, 30]):02d}:00" if r() < 0.6 else None,
        "duration": rng.choice(["00:30:00", "01:00:00", "00:15:00"]) if r() < 0.5 else None,
        "busy": r() < 0.3,
        "done": done,
        "marked_as_done_time": fmt_v2(ut) if done else None,
        "location": spec_address(rng) if meeting and r() < 0.5 else None,
        "participants": [{"person_id": person_id, "primary": True}] if person_id else [],
        "attendees": attendees,
        "conference_meeting_client": "google_meet" if meeting and r() < 0.3 else None,
        "conference_meeting_url": f"https://meet.google.com/abc-{i}"
        if meeting and r() < 0.3
        else None,
        "conference_meeting_id": None,
        "public_description": "Agenda: pricing" if r() < 0.1 else None,
        "priority": rng.choice([1, 2, 3]) if r() < 0.2 else None,
        "note": "<p>Discussed <b>renewal</b></p>" if r() < 0.4 else None,
        "custom_fields": ctx.custom_values("activities", rng),
    }


def _lead_name(ctx: Context, person_id: int | None, org_id: int | None) -> str:
    if person_id is not None and person_id in ctx.person_names:
        return ctx.person_names[person_id]
    if org_id is not None and org_id in ctx.org_names:
        return ctx.org_names[org_id]
    return "Someone"


def lead(
    ctx: Context, rng: random.Random, seq: int, at: int, ut: int, lead_id: str | None = None
) -> tuple[dict[str, Any], bool]:
    r = rng.random
    org_ids, person_ids = ctx.org_ids, ctx.person_ids
    person_id = rng.choice(person_ids) if person_ids and r() < 0.7 else None
    org_id = rng.choice(org_ids) if org_ids and (person_id is None or r() < 0.5) else None
    archived = r() < 0.1
    at += rng.randint(0, 999)
    ut = max(ut + rng.randint(0, 999), at)
    data = {
        "id": lead_id or _uuid(rng),
        "title": f"{_lead_name(ctx, person_id, org_id)} lead",
        "owner_id": rng.choice(USER_IDS),
        "creator_id": rng.choice(USER_IDS),
        "label_ids": [] if r() < 0.6 else rng.sample(LEAD_LABELS, rng.randint(1, 2)),
        "person_id": person_id,
        "organization_id": org_id,
        "source_name": rng.choice(["API", "Manually created", "Import", "Web forms"]),
        "origin": rng.choice(["API", "ManuallyCreated", "Import"]),
        "origin_id": None,
        "channel": 52 if r() < 0.1 else None,
        "channel_id": None,
        "source_deal_id": None,
        "is_archived": archived,
        "was_seen": r() < 0.7,
        "value": {"amount": rng.choice([100, 999, 2500.5]), "currency": rng.choice(CURRENCIES)}
        if r() < 0.6
        else None,
        "expected_close_date": fmt_date(at + rng.randint(10, 200) * DAY) if r() < 0.4 else None,
        "next_activity_id": rng.choice(ctx.activity_ids)
        if ctx.activity_ids and r() < 0.3
        else None,
        "add_time": fmt_ms(at),
        "update_time": fmt_ms(ut),
        "visible_to": rng.choice(["3", "3", "1", "7"]),
        "cc_email": f"company+1+lead{seq}@pipedrivemail.com",
        "custom_fields": ctx.custom_values("deals", rng),
    }
    return data, archived


def note(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    deal_id = rng.choice(ctx.deal_ids) if ctx.deal_ids and r() < 0.5 else None
    person_id = rng.choice(ctx.person_ids) if ctx.person_ids and r() < 0.5 else None
    org_id = rng.choice(ctx.org_ids) if ctx.org_ids and r() < 0.4 else None
    lead_id = rng.choice(ctx.lead_ids) if ctx.lead_ids and r() < 0.15 else None
    user = rng.choice(USERS)
    return {
        "id": i,
        "active_flag": True,
        "add_time": fmt_v1(at),
        "content": rng.choice(
            ["<p>Call went well</p>", "Plain note", "<ul><li>a</li><li>b</li></ul>", "Ünïcode 📝"]
        ),
        "deal": {"title": ctx.deal_titles[deal_id]} if deal_id else None,
        "lead_id": lead_id,
        "deal_id": deal_id,
        "last_update_user_id": rng.choice(USER_IDS) if r() < 0.5 else None,
        "org_id": org_id,
        "organization": {"name": ctx.org_names[org_id]} if org_id else None,
        "person": {"name": ctx.person_names[person_id]} if person_id else None,
        "person_id": person_id,
        "project_id": None,
        "project": None,
        "task_id": None,
        "task": None,
        "pinned_to_deal_flag": bool(deal_id) and r() < 0.1,
        "pinned_to_organization_flag": bool(org_id) and r() < 0.1,
        "pinned_to_person_flag": bool(person_id) and r() < 0.1,
        "pinned_to_project_flag": False,
        "pinned_to_task_flag": False,
        "update_time": fmt_v1(ut),
        "user": {
            "email": user["email"],
            "icon_url": None if r() < 0.5 else f"https://example.com/icons/{user['id']}.png",
            "is_you": user["id"] == 1,
            "name": user["name"],
        },
        "user_id": user["id"],
    }
