"""The smaller entities of the fake: their table rules and deterministic generators.

Users, activity types, currencies, lead labels and sources, filters, files, goals, call logs,
roles, permission sets (v1), projects and tasks (v2), plus the lazily generated per-record data:
deal products (attachments) and followers (with their changelog).

Every generator has the signature of `generate`'s: `(ctx, rng, i, at, ut) -> record`, with
`at`/`ut` in epoch milliseconds, and returns the record exactly as served.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .fields import fmt_date, fmt_ms, fmt_v1, fmt_v2
from .generate import DAY, FIRST, LAST, USER_IDS, USERS, Context, _uuid


@dataclass(frozen=True)
class Kind:
    """How the fake treats the records of one of the smaller tables.

    time_format: "v1" ("YYYY-MM-DD HH:MM:SS"), "v2" (RFC 3339, whole seconds), "ms" (RFC 3339
    with milliseconds) or None (the records carry no timestamps).
    add_key / update_key: the names of the creation and modification times (None: none).
    id_key: the field that identifies a record ("name" for lead sources).
    delete: what `FakePipedrive.delete` does:
      "vanish"      the record leaves the list
      "deactivate"  active_flag becomes false and the record stays listed (users, activity types)
      "flag_vanish" active_flag becomes false and the record leaves the list
      "status"      status becomes "deleted", listed only when asked for (projects)
    """

    time_format: str | None
    add_key: str | None = "add_time"
    update_key: str | None = "update_time"
    id_key: str = "id"
    delete: str = "vanish"


KINDS: dict[str, Kind] = {
    "users": Kind("v1", add_key="created", update_key="modified", delete="deactivate"),
    "activity_types": Kind("v1", delete="deactivate"),
    "currencies": Kind(None, None, None, delete="flag_vanish"),
    "lead_labels": Kind("ms"),
    "lead_sources": Kind(None, None, None, id_key="name"),
    "filters": Kind("v1", delete="flag_vanish"),
    "files": Kind("v1", delete="flag_vanish"),
    "goals": Kind(None, None, None),
    "call_logs": Kind("ms", add_key=None, update_key=None),
    "roles": Kind(None, None, None, delete="flag_vanish"),
    "permission_sets": Kind(None, None, None),
    "projects": Kind("ms", delete="status"),
    "tasks": Kind("ms"),
}

COMPANY: dict[str, Any] = {
    "id": 7_000_001,
    "name": "Acme Fake Ltd",
    "domain": "acme-fake",
    "country": "EE",
    "industry": "Software",
}


def company_for_seed(seed: int) -> dict[str, Any]:
    """The company a fake account of this seed belongs to: its own id and domain per seed."""
    if seed == 1:
        return dict(COMPANY)
    return {
        **COMPANY,
        "id": COMPANY["id"] + seed - 1,
        "name": f"Acme Fake {seed} Ltd",
        "domain": f"acme-fake-{seed}",
    }


def fmt(kind: str | None, ms: int) -> str:
    if kind == "v1":
        return fmt_v1(ms)
    if kind == "ms":
        return fmt_ms(ms)
    return fmt_v2(ms)


# --- users, roles, permission sets ----------------------------------------------------------------

PERMISSION_SETS: tuple[tuple[str, str, str, str, str], ...] = (  # id, name, description, app, type
    ("62cc4d7f-4038-4352-abf3-a8c1c822b631", "Deals admin",
     "See and edit all sales data (deals, leads), manage company-level sales setup", "sales",
     "admin"),
    ("f07d229d-088a-4144-a40f-1fe64295d180", "Deals regular user",
     "Access to sales data (deals, leads); actions may be limited by custom permissions", "sales",
     "regular"),
    ("233b7976-39bd-43a9-b305-ef3a2b0998e5", "Global admin",
     "See and edit all cross-product data (contacts, activities, reports)", "global", "admin"),
    ("ec8a42e5-1842-490d-9113-b3a3b4b1c0a9", "Global regular user",
     "Access to cross-product data (contacts, activities, reports)", "global", "regular"),
    ("982c5ce5-b8ba-4b47-b102-9da024f4b990", "Account settings",
     "Access company account level features and setup (billing, users)", "account_settings",
     "admin"),
    ("5b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8", "Projects manager",
     "Manage every project and its tasks", "projects", "manager"),
)  # fmt: skip
_PS_APPS = ("sales", "projects", "campaigns", "global", "account_settings", "partnership", "nova")
_PS_TYPES = ("admin", "manager", "regular", "custom")

_LOCALES = (
    ("en_US", "Europe/London", "+01:00", "EUR"),
    ("de_DE", "Europe/Berlin", "+02:00", "EUR"),
    ("fr_FR", "Europe/Paris", "+02:00", "EUR"),
    ("en_US", "America/New_York", "-04:00", "USD"),
    ("ja_JP", "Asia/Tokyo", "+09:00", "JPY"),
)


def user(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    if i <= len(USERS):
        base = USERS[i - 1]
        name, email = base["name"], base["email"]
    else:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        email = f"user{i}@example.com"
    locale, tz, offset, currency = _LOCALES[(i - 1) % len(_LOCALES)]
    admin = i == 1
    access = [
        {"app": "sales", "admin": admin, "permission_set_id": PERMISSION_SETS[0 if admin else 1][0]},
        {"app": "global", "admin": admin, "permission_set_id": PERMISSION_SETS[2 if admin else 3][0]},
    ]  # fmt: skip
    if admin:
        access.append(
            {"app": "account_settings", "admin": True, "permission_set_id": PERMISSION_SETS[4][0]}
        )
    login = ut + int(r() * max(0, ctx.now_ms - ut))
    return {
        "id": i,
        "name": name,
        "default_currency": currency,
        "locale": locale,
        "lang": 1,
        "email": email,
        "phone": None if r() < 0.5 else f"+372 5{rng.randint(100000, 999999)}",
        "activated": True,
        "last_login": fmt_v1(login - login % 1000),
        "created": fmt_v1(at),
        "modified": fmt_v1(ut),
        "has_created_company": i == 1,
        "access": access,
        "active_flag": True,
        "timezone_name": tz,
        "timezone_offset": offset,
        "role_id": 1 if i == 1 else 2 if i == 2 else 3,
        "icon_url": None if r() < 0.6 else f"https://example.com/avatars/{i}.png",
        "is_you": i == 1,
        "is_deleted": False,
    }


_ROLES = (  # name, parent (index into this tuple, 1-based) or None
    ("Admins", None),
    ("Sales managers", 1),
    ("Account executives", 2),
    ("Support", 1),
)


def role(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    if i <= len(_ROLES):
        name, parent = _ROLES[i - 1]
    else:
        name, parent = f"Team {i}", rng.randint(1, i - 1)
    level = 1
    p = parent
    while p is not None and p <= len(_ROLES):
        level += 1
        p = _ROLES[p - 1][1]
    subs = sum(1 for _n, par in _ROLES if par == i)
    assigned = {1: 1, 2: 1, 3: max(0, len(USERS) - 2)}.get(i, 0)
    return {
        "id": i,
        "parent_role_id": parent,
        "name": name,
        "active_flag": True,
        "assignment_count": str(assigned),
        "sub_role_count": str(subs),
        "level": level,
    }


def permission_set(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    if i <= len(PERMISSION_SETS):
        pid, name, desc, app, ptype = PERMISSION_SETS[i - 1]
    else:
        pid, name = _uuid(rng), f"Custom set {i}"
        desc, app, ptype = "A custom permission set", rng.choice(_PS_APPS[:3]), "custom"
    counts = {0: 1, 1: max(0, len(USERS) - 1), 2: 1, 3: max(0, len(USERS) - 1), 4: 1}
    return {
        "id": pid,
        "name": name,
        "description": desc,
        "app": app,
        "type": ptype,
        "assignment_count": counts.get(i - 1, 0),
    }


# --- settings-like lists --------------------------------------------------------------------------

_ACTIVITY_TYPES = (  # name, key_string, icon_key
    ("Call", "call", "call"),
    ("Meeting", "meeting", "meeting"),
    ("Task", "task", "task"),
    ("Deadline", "deadline", "deadline"),
    ("Email", "email", "email"),
    ("Lunch", "lunch", "lunch"),
    ("Demo", "demo", "presentation"),
    ("Site visit", "site_visit", "car"),
    ("Follow-up", "follow_up", "bell"),
    ("Contract review", "contract_review", "document"),
)
_ICONS = ("calendar", "downarrow", "document", "smartphone", "camera", "bubble", "cart", "bulb")


def activity_type(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    if i <= len(_ACTIVITY_TYPES):
        name, key, icon = _ACTIVITY_TYPES[i - 1]
    else:
        name, key, icon = f"Custom type {i}", f"custom_type_{i}", rng.choice(_ICONS)
    custom = i > 6
    return {
        "id": i,
        "name": name,
        "icon_key": icon,
        "color": rng.choice(["3F51B5", "E91E63", "00BCD4"]) if custom else "FFFFFF",
        "order_nr": i,
        "key_string": key,
        "active_flag": i != len(_ACTIVITY_TYPES),  # the last built-in custom type was retired
        "is_custom_flag": custom,
        "add_time": fmt_v1(at),
        "update_time": fmt_v1(ut),
    }


_CURRENCIES = (  # code, name, decimal points, symbol
    ("EUR", "Euro", 2, "€"),
    ("USD", "US Dollar", 2, "$"),
    ("GBP", "Pound Sterling", 2, "£"),
    ("SEK", "Swedish Krona", 2, "kr"),
    ("JPY", "Japanese Yen", 0, "¥"),
    ("CHF", "Swiss Franc", 2, "CHF"),
    ("PLN", "Polish Złoty", 2, "zł"),
    ("NOK", "Norwegian Krone", 2, "kr"),
    ("DKK", "Danish Krone", 2, "kr."),
    ("CAD", "Canadian Dollar", 2, "CA$"),
)


def currency(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    if i <= len(_CURRENCIES):
        code, name, dp, symbol = _CURRENCIES[i - 1]
        custom = False
    else:
        code, name, dp, symbol = f"X{i:02d}", f"Loyalty points {i}", 0, "pts"
        custom = True
    return {
        "id": i,
        "code": code,
        "name": name,
        "decimal_points": dp,
        "symbol": symbol,
        "active_flag": True,
        "is_custom_flag": custom,
    }


LEAD_LABEL_DEFS = (  # the ids generate.LEAD_LABELS (and leadFields' label options) use
    ("f08b42a0-4e75-11ea-9643-03698ef1cfd6", "Hot", "red"),
    ("f08b42a1-4e75-11ea-9643-03698ef1cfd6", "Warm", "yellow"),
    ("f08b42a2-4e75-11ea-9643-03698ef1cfd6", "Cold", "blue"),
)
_LABEL_COLORS = ("blue", "brown", "dark-gray", "gray", "green", "orange", "pink", "purple")


def lead_label(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    if i <= len(LEAD_LABEL_DEFS):
        lid, name, color = LEAD_LABEL_DEFS[i - 1]
    else:
        lid, name, color = _uuid(rng), f"Label {i}", rng.choice(_LABEL_COLORS)
    return {
        "id": lid,
        "name": name,
        "color": color,
        "add_time": fmt_ms(at),
        "update_time": fmt_ms(ut),
    }


LEAD_SOURCE_NAMES = ("Manually created", "Deal", "Web forms", "Prospector", "Leadbooster",
                     "Live chat", "Import", "Website visitors", "Workflow automation", "API")  # fmt: skip


def lead_source(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    name = LEAD_SOURCE_NAMES[i - 1] if i <= len(LEAD_SOURCE_NAMES) else f"Custom source {i}"
    return {"name": name}


_FILTERS = (
    ("All open deals", "deals"),
    ("Won this quarter", "deals"),
    ("Hot leads", "leads"),
    ("Key accounts", "org"),
    ("Decision makers", "people"),
    ("Subscriptions", "products"),
    ("Overdue calls", "activity"),
    ("Active projects", "projects"),
)
_FILTER_TYPES = ("deals", "leads", "org", "people", "products", "activity", "projects")


def filter_(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    name, ftype = (
        _FILTERS[i - 1] if i <= len(_FILTERS) else (f"Filter {i}", rng.choice(_FILTER_TYPES))
    )
    used = ut + int(r() * max(0, ctx.now_ms - ut))
    return {
        "id": i,
        "name": name,
        "filter_code": None,
        "is_editable": r() < 0.9,
        "active_flag": True,
        "type": ftype,
        "temporary_flag": None,
        "user_id": rng.choice(USER_IDS),
        "add_time": fmt_v1(at),
        "update_time": fmt_v1(ut),
        "visible_to": rng.choice(["1", "3", "7", "7"]),
        "last_used_time": fmt_v1(used - used % 1000) if i % 2 else None,
        "custom_view_id": 10 + i if i % 3 == 0 else None,
    }


# --- files, goals, call logs ----------------------------------------------------------------------

_FILE_KINDS = (("proposal", "pdf", "pdf"), ("photo", "jpg", "img"), ("contract", "docx", "doc"),
               ("pricing", "xlsx", "xls"), ("notes", "txt", "other"))  # fmt: skip


def file_(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    stem, ext, ftype = rng.choice(_FILE_KINDS)
    file_name = f"{stem}_{i}.{ext}"
    target = rng.choice(["deal", "deal", "person", "org", "activity", "product", "lead"])
    ids: dict[str, Any] = dict.fromkeys(
        ("deal_id", "person_id", "org_id", "product_id", "activity_id", "lead_id", "project_id")
    )
    names = dict.fromkeys(
        ("deal_name", "person_name", "org_name", "product_name", "lead_name", "project_name"), ""
    )
    if target == "deal" and ctx.deal_ids:
        ids["deal_id"] = d = rng.choice(ctx.deal_ids)
        names["deal_name"] = ctx.deal_titles.get(d, "")
    elif target == "person" and ctx.person_ids:
        ids["person_id"] = p = rng.choice(ctx.person_ids)
        names["person_name"] = ctx.person_names.get(p, "")
    elif target == "org" and ctx.org_ids:
        ids["org_id"] = o = rng.choice(ctx.org_ids)
        names["org_name"] = ctx.org_names.get(o, "")
    elif target == "activity" and ctx.activity_ids:
        ids["activity_id"] = rng.choice(ctx.activity_ids)
    elif target == "product" and ctx.product_ids:
        ids["product_id"] = p = rng.choice(ctx.product_ids)
        names["product_name"] = ctx.product_names.get(p, "")
    elif target == "lead" and ctx.lead_ids:
        ids["lead_id"] = rng.choice(ctx.lead_ids)
        names["lead_name"] = "Lead"
    google = r() < 0.2
    return {
        "id": i,
        "user_id": rng.choice(USER_IDS),
        **ids,
        "log_id": None,
        "add_time": fmt_v1(at),
        "update_time": fmt_v1(ut),
        "file_name": file_name,
        "file_type": ftype,
        "file_size": rng.randint(1_000, 9_000_000),
        "active_flag": True,
        "inline_flag": False,
        "remote_location": "googledocs" if google else "s3",
        "remote_id": f"{rng.getrandbits(96):024x}" if google else f"{ctx.company_id}/{file_name}",
        "cid": "",
        "s3_bucket": "",
        "mail_message_id": "",
        "mail_template_id": "",
        **names,
        "url": f"https://{ctx.company_domain}.pipedrive.com/v1/files/{i}/download",
        "name": file_name if r() < 0.7 else f"{stem.capitalize()} {i}",
        "description": None if r() < 0.6 else "Signed copy",
    }


GOAL_TYPES = ("deals_won", "deals_progressed", "activities_completed", "activities_added",
              "deals_started")  # fmt: skip
_INTERVALS = ("weekly", "monthly", "quarterly", "yearly")


def goal(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    gtype = GOAL_TYPES[(i - 1) % len(GOAL_TYPES)]
    # assignees: users 1..3, then the company, then a team; the sixth goal is inactive
    if i <= 3:
        assignee = {"id": i, "type": "person"}
    elif i == 4:
        assignee = {"id": ctx.company_id, "type": "company"}
    elif i == 5:
        assignee = {"id": 1, "type": "team"}
    else:
        assignee = {"id": rng.choice(USER_IDS), "type": "person"}
    params: dict[str, Any] = {"pipeline_id": [1] if r() < 0.5 else [1, 2]}
    if gtype.startswith("activities"):
        params = {"activity_type_id": sorted(rng.sample(range(1, 7), 2))}
    start = ctx.now_ms - rng.randint(10, 200) * DAY
    metric = "sum" if gtype == "deals_won" and r() < 0.5 else "quantity"
    return {
        "id": f"{rng.getrandbits(128):032x}",
        "owner_id": 1,
        "title": f"{gtype.replace('_', ' ').capitalize()} goal {i}",
        "type": {"name": gtype, "params": params},
        "assignee": assignee,
        "interval": rng.choice(_INTERVALS),
        "duration": {"start": fmt_date(start), "end": fmt_date(start + 365 * DAY)},
        "expected_outcome": {
            "target": rng.choice([10, 25, 100]) if metric == "quantity" else 50_000,
            "tracking_metric": metric,
        },
        "is_active": i != 6,
        "report_ids": [f"{rng.getrandbits(128):032x}"],
    }


_OUTCOMES = ("connected", "no_answer", "left_message", "left_voicemail", "wrong_number", "busy")


def call_log(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    outcome = rng.choice(_OUTCOMES)
    seconds = rng.randint(20, 1800) if outcome == "connected" else 0
    start = at + rng.randint(0, 999)
    return {
        "id": f"CA{rng.getrandbits(112):028x}",
        "activity_id": rng.choice(ctx.activity_ids) if ctx.activity_ids else None,
        "person_id": rng.choice(ctx.person_ids) if ctx.person_ids and r() < 0.8 else None,
        "org_id": rng.choice(ctx.org_ids) if ctx.org_ids and r() < 0.5 else None,
        "deal_id": rng.choice(ctx.deal_ids) if ctx.deal_ids and r() < 0.4 else None,
        "lead_id": rng.choice(ctx.lead_ids) if ctx.lead_ids and r() < 0.1 else None,
        "subject": None if r() < 0.3 else rng.choice(["Intro call", "Follow-up", "Pricing 📞"]),
        "duration": str(seconds),
        "outcome": outcome,
        "from_phone_number": None if r() < 0.2 else "+37255501234",
        "to_phone_number": rng.choice(["+4930901820", "+14155550199", "+442079460000"]),
        "has_recording": outcome == "connected" and r() < 0.3,
        "start_time": fmt_ms(start),
        "end_time": fmt_ms(start + seconds * 1000),
        "user_id": rng.choice(USER_IDS),
        "company_id": ctx.company_id,
        "note": None if r() < 0.6 else "Asked for a quote",
    }


# --- projects and tasks -----------------------------------------------------------------------------

PROJECT_STATUSES = ("open", "completed", "canceled", "deleted")
_PROJECT_WORDS = ("Onboarding", "Rollout", "Migration", "Implementation", "Renewal prep")
BOARD_PHASES = {1: (1, 2, 3), 2: (4, 5, 6)}


def project(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    """A project; archived ones have an archive_time (the fake derives `archived` from it)."""
    r = rng.random
    x = r()
    status = (
        "open" if x < 0.6 else "completed" if x < 0.85 else "canceled" if x < 0.95 else "deleted"
    )
    board = 1 if r() < 0.7 else 2
    org = rng.choice(ctx.org_ids) if ctx.org_ids and r() < 0.7 else None
    title = (
        f"{ctx.org_names.get(org, 'Internal') if org else 'Internal'} {rng.choice(_PROJECT_WORDS)}"
    )
    start = at + rng.randint(0, 10) * DAY
    change = at + int(r() * (ut - at))
    archived = r() < 0.1
    return {
        "id": i,
        "title": title,
        "description": None if r() < 0.4 else "Kick-off done.\nNext: training.",
        "status": status,
        "board_id": board,
        "phase_id": rng.choice(BOARD_PHASES[board]),
        "owner_id": rng.choice(USER_IDS),
        "start_date": fmt_date(start) if r() < 0.8 else None,
        "end_date": fmt_date(start + rng.randint(14, 120) * DAY) if r() < 0.6 else None,
        "deal_ids": [rng.choice(ctx.deal_ids)] if ctx.deal_ids and r() < 0.6 else [],
        "person_ids": sorted(
            rng.sample(ctx.person_ids, min(len(ctx.person_ids), rng.randint(0, 2)))
        ),
        "org_ids": [org] if org else [],
        "label_ids": [] if r() < 0.6 else [rng.randint(1, 5)],
        "health_status": None if r() < 0.5 else rng.choice([10, 20, 30]),
        "add_time": fmt_ms(at),
        "update_time": fmt_ms(ut),
        "status_change_time": fmt_ms(change) if status != "open" or r() < 0.3 else None,
        "archive_time": fmt_ms(ut) if archived else None,
        "custom_fields": ctx.custom_values("projects", rng),
    }


def task(ctx: Context, rng: random.Random, i: int, at: int, ut: int) -> dict[str, Any]:
    r = rng.random
    project_id = rng.choice(ctx.project_ids) if ctx.project_ids else 1
    siblings = ctx.project_tasks.setdefault(project_id, [])
    parent = rng.choice(siblings) if siblings and r() < 0.25 else None
    siblings.append(i)
    done = r() < 0.4
    start = at + rng.randint(0, 20) * DAY
    return {
        "id": i,
        "title": f"{rng.choice(['Prepare', 'Review', 'Send', 'Install', 'Train'])} step {i}",
        "creator_id": rng.choice(USER_IDS),
        "description": None if r() < 0.6 else "See the project plan",
        "project_id": project_id,
        "is_done": done,
        "is_milestone": r() < 0.1,
        "due_date": fmt_date(start + rng.randint(1, 30) * DAY) if r() < 0.7 else None,
        "start_date": fmt_date(start) if r() < 0.5 else None,
        "parent_task_id": parent,
        "assignee_ids": sorted(rng.sample(USER_IDS, rng.choice([0, 1, 1, 2]))),
        "priority": None if r() < 0.7 else rng.randint(1, 3),
        "add_time": fmt_ms(at),
        "update_time": fmt_ms(ut),
        "marked_as_done_time": fmt_ms(ut) if done else None,
    }


MAKERS = {
    "users": user,
    "roles": role,
    "permission_sets": permission_set,
    "activity_types": activity_type,
    "currencies": currency,
    "lead_labels": lead_label,
    "lead_sources": lead_source,
    "filters": filter_,
    "files": file_,
    "goals": goal,
    "call_logs": call_log,
    "projects": project,
    "tasks": task,
}


# --- deal products (attachments), generated per deal on first use -------------------------------------

MAX_PRODUCTS_PER_DEAL = 4
_N_PRODUCTS = (0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4)  # 0-4, mostly 0-2


def deal_products(
    seed: int,
    deal: dict[str, Any],
    deal_at: int,
    deal_ut: int,
    product_ids: Sequence[int],
    get_product: Callable[[int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The generated attachments of one deal. Ids are `(deal_id - 1) * 4 + k`, so unique and
    independent of which deals were asked for first."""
    rng = random.Random(f"{seed}/deal_products/{deal['id']}")
    n = min(rng.choice(_N_PRODUCTS), len(product_ids))
    out = []
    for k, product_id in enumerate(rng.sample(product_ids, n)):
        added = deal_at + int(rng.random() * (deal_ut - deal_at))
        added -= added % 1000
        updated = added if rng.random() < 0.7 else added + int(rng.random() * (deal_ut - added))
        updated -= updated % 1000
        att = new_attachment(
            rng,
            (deal["id"] - 1) * MAX_PRODUCTS_PER_DEAL + k + 1,
            deal,
            get_product(product_id),
            order_nr=k + 1,
            at=added,
            ut=updated,
        )
        out.append(att)
    return out


def new_attachment(
    rng: random.Random,
    attachment_id: int,
    deal: dict[str, Any],
    product: dict[str, Any],
    *,
    order_nr: int,
    at: int,
    ut: int,
) -> dict[str, Any]:
    r = rng.random
    currency = deal.get("currency") or "EUR"
    prices = product.get("prices") or []
    price = next((p["price"] for p in prices if p["currency"] == currency), None)
    if price is None:
        price = prices[0]["price"] if prices else rng.choice([10, 99.5, 250])
    freq = product.get("billing_frequency") or "one-time"
    percentage = r() < 0.8
    att = {
        "id": attachment_id,
        "sum": 0.0,
        "tax": product.get("tax") or 0,
        "deal_id": deal["id"],
        "name": product.get("name") or f"Product {product.get('id')}",
        "product_id": product["id"],
        "product_variation_id": None,
        "order_nr": order_nr,
        "add_time": fmt_v2(at),
        "update_time": fmt_v2(ut),
        "comments": None if r() < 0.7 else "Volume deal",
        "currency": currency,
        "discount": 0 if r() < 0.7 else (rng.choice([5, 10, 15]) if percentage else 20),
        "discount_type": "percentage" if percentage else "amount",
        "quantity": rng.choice([1, 1, 1, 2, 5, 10, 0.5]),
        "item_price": price,
        "tax_method": rng.choice(["exclusive", "inclusive", "none"]),
        "is_enabled": r() < 0.95,
        "billing_frequency": freq,
        "billing_frequency_cycles": product.get("billing_frequency_cycles")
        if freq != "one-time"
        else None,
        "billing_start_date": fmt_date(at) if freq != "one-time" else None,
    }
    if not percentage and float(att["quantity"]) * float(price) < 2 * att["discount"]:
        att["discount"] = 0  # an amount discount never exceeds half the price
    att["sum"] = attachment_sum(att)
    return att


def attachment_sum(att: dict[str, Any]) -> float:
    gross = float(att["quantity"]) * float(att["item_price"])
    discount = float(att["discount"] or 0)
    net = gross * (1 - discount / 100) if att["discount_type"] == "percentage" else gross - discount
    if att["tax_method"] == "exclusive":
        net *= 1 + float(att["tax"] or 0) / 100
    return round(net, 2)


# --- followers, generated per record on first use ------------------------------------------------


def followers(
    seed: int, table: str, record_id: int, owner_id: int | None, at: int, ut: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(current followers [{user_id, add_ms}], changelog events [{action, actor, user, ms}])."""
    rng = random.Random(f"{seed}/followers/{table}/{record_id}")
    current: list[dict[str, Any]] = []
    log: list[dict[str, Any]] = []
    owner = owner_id if owner_id in USER_IDS else 1
    current.append({"user_id": owner, "ms": at})
    log.append({"action": "added", "actor": owner, "user": owner, "ms": at})
    others = [u for u in USER_IDS if u != owner]
    for u in rng.sample(others, rng.choice([0, 0, 1, 1, 2])):
        ms = at + int(rng.random() * (ut - at))
        ms -= ms % 1000
        current.append({"user_id": u, "ms": ms})
        log.append({"action": "added", "actor": owner, "user": u, "ms": ms})
    left = [u for u in others if all(f["user_id"] != u for f in current)]
    if left and rng.random() < 0.2:  # someone followed for a while, then stopped
        u = rng.choice(left)
        ms = at + int(rng.random() * (ut - at))
        ms -= ms % 1000
        log.append({"action": "added", "actor": u, "user": u, "ms": ms})
        log.append({"action": "removed", "actor": u, "user": u, "ms": min(ut, ms + DAY)})
    current.sort(key=lambda f: (f["ms"], f["user_id"]))
    log.sort(key=lambda e: e["ms"])
    return current, log
