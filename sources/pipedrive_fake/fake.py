"""`FakePipedrive`: an in-process, real-HTTP fake of the Pipedrive API for tests and benchmarks.

    with FakePipedrive(token="t", seed=1, scale={"deals": 500}) as fake:
        requests.get(f"{fake.base_url}/api/v2/deals", headers={"x-api-token": "t"})
        fake.update("deals", 3, title="Renamed")          # stamps update_time, ticks the clock
        key = fake.field_key("deals", "Título")           # custom field hashes by name

See README-style notes in the package docstring (`sources/pipedrive_fake/__init__.py`).
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from . import changelog as clog
from . import extras
from . import generate as gen
from .api import (
    DEAL_STATUSES,
    V1_SORTS,
    V2_LISTS,
    V2_TABLES,
    HttpApi,
    to_ms,
)
from .extras import KINDS, PROJECT_STATUSES
from .fields import (
    CUSTOM_FIELD_ENTITIES,
    FieldDef,
    FieldRegistry,
    check_value,
    flatten_v1,
    fmt_ms,
    fmt_v1,
    fmt_v2,
    render_note_field,
    render_v1,
    render_v2,
    table_name,
)
from .oauth import OAuthInstall, OAuthRegistry
from .server import FaultRule, RateWindow, RequestRecord, Restriction, make_server
from .store import Row, Table, data_sort, seq_sort, time_sort
from .webhooks import WebhookDelivery, WebhookHub

DEFAULT_NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
DEFAULT_SCALE: dict[str, int] = {
    "deals": 200,
    "persons": 100,
    "organizations": 50,
    "activities": 150,
    "products": 30,
    "leads": 60,
    "notes": 80,
    # the smaller entities (users 1-5 are the fixed owners every record refers to)
    "users": 5,
    "activity_types": 10,
    "currencies": 5,
    "lead_labels": 3,
    "lead_sources": 10,
    "filters": 8,
    "files": 40,
    "goals": 6,
    "call_logs": 30,
    "roles": 4,
    "permission_sets": 6,
    "projects": 12,
    "tasks": 60,
}
# the smaller tables, in generation order (each has its own random stream)
EXTRA_TABLES = (
    "users",
    "roles",
    "permission_sets",
    "activity_types",
    "currencies",
    "lead_labels",
    "lead_sources",
    "filters",
    "goals",
    "projects",
    "tasks",
    "files",
    "call_logs",
)
FOLLOWED = ("deals", "persons", "organizations", "products")
N_PIPELINES = 2
STAGES_PER_PIPELINE = 5
ENTITIES = (
    "deals",
    "persons",
    "organizations",
    "activities",
    "products",
    "pipelines",
    "stages",
    "leads",
    "notes",
    *EXTRA_TABLES,
)
DELETED_SHARE = 0.03  # generated persons, orgs, ... that are (soft-)deleted
MERGEABLE = ("deals", "persons", "organizations")


class FakePipedrive(HttpApi):
    """A fake Pipedrive account served over real HTTP on loopback.

    Data is generated deterministically from `seed` at construction; `start()` serves it.
    Thread-safe: tests may mutate records while a client pages through them. `messy`: some
    custom field values the way real accounts hold them (`fields.messy_value`).
    """

    def __init__(
        self,
        token: str = "test-token",
        seed: int = 1,
        scale: Mapping[str, int] | None = None,
        rate_limit: int | None = None,
        daily_budget: int | None = None,
        *,
        custom_field_count: int | Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        now: datetime | None = None,
        compact_threshold: int = 200_000,
        company: Mapping[str, Any] | None = None,
        messy: bool = False,
        deal_stories: bool = False,
    ) -> None:
        unknown = set(scale or {}) - set(DEFAULT_SCALE)
        if unknown:
            raise ValueError(
                f"unknown scale keys {sorted(unknown)}; known: {sorted(DEFAULT_SCALE)}"
            )
        self.token = token
        self.seed = seed
        # generated deals' changelogs tell how they moved up their pipeline and were won or
        # lost (`changelog.deal_story`); otherwise 0-3 changes of random fields
        self.deal_stories = deal_stories
        self.scale = {**DEFAULT_SCALE, **(scale or {})}
        self.rate_limit = rate_limit
        self.daily_budget = daily_budget
        self.host = host
        self.port = port
        self.v1_pagination_mode: str | None = (
            None  # None | "omit_next_start" | "false_with_next_start"
        )
        self._now_ms = to_ms(now or DEFAULT_NOW)
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._hooks: list[Callable[[RequestRecord], Any]] = []
        self._faults: list[FaultRule] = []
        self._window = RateWindow(rate_limit)
        self._budget_lock = threading.Lock()
        self._tokens_used = 0
        self._stop = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._restrictions: list[Restriction] = []
        self.oauth = OAuthRegistry(seed)
        # what /v1/users/me tells: each seed is its own company unless `company` says otherwise
        self.company: dict[str, Any] = {**extras.company_for_seed(seed), **(company or {})}
        self._deal_products: dict[int, list[dict[str, Any]]] = {}  # deal id → attachments
        self._attachment_deal: dict[int, int] = {}  # attachment id → deal id
        self._followers: dict[
            tuple[str, Any], tuple[list[dict[str, Any]], list[dict[str, Any]]]
        ] = {}
        self._changelogs: dict[tuple[str, Any], list[dict[str, Any]]] = {}  # oldest first
        self.webhooks = WebhookHub(  # webhooks v2: registrations and deliveries (webhooks.py)
            seed,
            now_ms=lambda: self._now_ms,
            company=lambda: self.company,
            user_exists=lambda uid: uid in self.tables["users"].rows,
        )

        if isinstance(custom_field_count, int):
            counts = {"deals": custom_field_count}
        else:
            counts = {table_name(k): v for k, v in (custom_field_count or {}).items()}
        self.registry = FieldRegistry(seed, self._now_ms, counts)
        self._cf_keys: dict[str, list[str]] = {}
        self._cf_defs: dict[str, list[FieldDef]] = {}
        for ent in CUSTOM_FIELD_ENTITIES:
            self._refresh_fields(ent)
        self._ctx = gen.Context(seed=seed, now_ms=self._now_ms, registry=self.registry, messy=messy)
        self._ctx.company_id = self.company["id"]
        self._ctx.company_domain = self.company["domain"]
        self.tables: dict[str, Table] = self._make_tables(compact_threshold)
        self._next_id: dict[str, int] = {}
        started = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # millions of new dicts: the cyclic GC would only slow generation down
        try:
            self._generate()
        finally:
            if gc_was_enabled:
                gc.enable()
        if sum(self.scale.values()) > 100_000:
            gc.freeze()  # keep the collector from walking millions of long-lived records
        self.generation_seconds = time.perf_counter() - started
        self._generated_deals = self.scale["deals"]
        self._next_attachment_id = self._generated_deals * extras.MAX_PRODUCTS_PER_DEAL + 1
        self._routes = self._make_routes()
        self._pattern_routes = self._make_pattern_routes()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakePipedrive:
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = make_server(self, self.host, self.port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-pipedrive:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled requests
        self.webhooks.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakePipedrive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake was never started")
        return f"http://{self.host}:{self.port}"  # stays valid after stop(); start() reuses it

    def url(self, path: str) -> str:
        """Full URL of a path like "/api/v2/deals"."""
        return self.base_url + path

    def warm(self) -> None:
        """Render every record and build the common indexes now (before a benchmark)."""
        with self._lock:
            for table in self.tables.values():
                for row in table.by_seq:
                    table.blob(row)
                for sort_by in ("id", "update_time"):
                    if sort_by in table.sort_values:
                        table.index(sort_by, "live")

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now_ms / 1000, tz=UTC)

    @now.setter
    def now(self, value: datetime) -> None:
        with self._lock:
            self._now_ms = to_ms(value)
        self.webhooks.clock_moved()

    def advance(self, seconds: float = 1.0) -> datetime:
        with self._lock:
            self._now_ms += round(seconds * 1000)
            now = self.now
        self.webhooks.clock_moved()
        return now

    def _stamp(self, table: str, at: datetime | str | None) -> int:
        ms = to_ms(at) if at is not None else self._now_ms
        kind = KINDS.get(table)
        if table != "leads" and (kind is None or kind.time_format != "ms"):
            ms -= ms % 1000  # v2 and v1: whole seconds (leads, projects, tasks...: milliseconds)
        return ms

    # ------------------------------------------------------------------ fields

    def _refresh_fields(self, entity: str) -> None:
        defs = self.registry.custom(entity)
        self._cf_defs[entity] = defs
        self._cf_keys[entity] = [f.key for f in defs]

    def _fields_changed(self, entity: str) -> None:
        ent = "deals" if entity == "leads" else entity
        if ent not in CUSTOM_FIELD_ENTITIES:
            return
        self._refresh_fields(ent)
        for t in (ent, "leads") if ent == "deals" else (ent,):
            if t in getattr(self, "tables", {}):
                self.tables[t].fields_changed()

    def custom_field_defs(self, entity: str) -> list[FieldDef]:
        """The active custom fields of an entity (leads: the deal fields). Do not mutate."""
        with self._lock:
            return list(self.registry.custom(entity))

    def field_keys(self, entity: str, name: str) -> list[str]:
        """Keys of the active custom fields named `name` (several for deals' "Source")."""
        with self._lock:
            return self.registry.keys_named(entity, name)

    def field_key(self, entity: str, name: str) -> str:
        """The key of the one active custom field named `name`."""
        keys = self.field_keys(entity, name)
        if len(keys) != 1:
            raise LookupError(f"{len(keys)} custom fields named {name!r} on {entity}: {keys}")
        return keys[0]

    def field_key_for_type(self, entity: str, field_type: str) -> str:
        """The key of the canonical (first) custom field of a type, e.g. "monetary"."""
        for f in self.custom_field_defs(entity):
            if f.field_type == field_type:
                return f.key
        raise LookupError(f"no {field_type} custom field on {entity}")

    def field(self, entity: str, key: str) -> FieldDef:
        with self._lock:
            return self.registry.get(entity, key, include_deleted=True)

    def stale_option_ids(self, entity: str, key: str) -> list[int]:
        """Option ids records may hold although the field no longer defines them."""
        return [o.id for o in self.field(entity, key).deleted_options]

    def add_field(
        self,
        entity: str,
        name: str,
        field_type: str,
        options: list[str] | None = None,
    ) -> str:
        """Add a custom field (records get null for it, update_time unchanged); returns its key."""
        with self._lock:
            f = self.registry.add(entity, name, field_type, options, at_ms=self._now_ms)
            self._fields_changed(table_name(entity))
            return f.key

    def rename_field(self, entity: str, key: str, new_name: str) -> None:
        with self._lock:
            f = self.registry.get(entity, key)
            f.name = new_name
            f.update_time = self._now_ms
            self._fields_changed(table_name(entity))

    def add_option(self, entity: str, key: str, label: str) -> int:
        with self._lock:
            f = self._option_field(entity, key)
            opt = self.registry.add_option(f, label)
            f.update_time = self._now_ms
            self._fields_changed(table_name(entity))
            return opt.id

    def rename_option(self, entity: str, key: str, option_id: int, new_label: str) -> None:
        with self._lock:
            f = self._option_field(entity, key)
            for o in f.options or []:
                if o.id == option_id:
                    o.label = new_label
                    o.update_time = self._now_ms
                    f.update_time = self._now_ms
                    self._fields_changed(table_name(entity))
                    return
            raise LookupError(f"field {key} has no option {option_id}")

    def delete_option(self, entity: str, key: str, option_id: int) -> None:
        """Remove an option from the definition; records keep holding its id (stale)."""
        with self._lock:
            f = self._option_field(entity, key)
            for o in list(f.options or []):
                if o.id == option_id:
                    assert f.options is not None
                    f.options.remove(o)
                    f.deleted_options.append(o)
                    f.update_time = self._now_ms
                    self._fields_changed(table_name(entity))
                    return
            raise LookupError(f"field {key} has no option {option_id}")

    def delete_field(self, entity: str, key: str) -> None:
        """Delete a custom field: it vanishes from the *Fields lists (v2 and v1 alike) and its
        values vanish from the records, whose update_time does not change."""
        with self._lock:
            f = self.registry.get(entity, key)
            if not f.custom:
                raise ValueError(f"{key} is a standard field; only custom fields can be deleted")
            f.deleted = True
            self._fields_changed(table_name(entity))

    def change_field_type(
        self, entity: str, key: str, field_type: str, options: list[str] | None = None
    ) -> None:
        """Give a custom field another type under the same key.

        Pipedrive's own UI offers no type change; this is the plausible worst if it happens
        (an admin tool, an API Pipedrive adds): the values stored in records are converted in
        place where they can be (text → the option of that label, an option → a one-option
        set, a number → that amount in EUR) and dropped where not, and no record's update_time
        changes. Enum → set keeps the options; `options` gives a new enum/set its labels.
        """
        with self._lock:
            f = self.registry.get(entity, key)
            if not f.custom:
                raise ValueError(f"{key} is a standard field")
            convert = self.registry.retype(f, field_type, options)
            f.update_time = self._now_ms
            t = table_name(entity)
            for holder in ("deals", "leads") if t == "deals" else (t,):
                self._convert_values(holder, key, convert)
            self._fields_changed(t)

    def _convert_values(self, t: str, key: str, convert: Callable[[Any], Any]) -> None:
        """Rewrite one custom field's stored value in every record of `t` (times unchanged)."""
        table = self.tables.get(t)
        if table is None:
            return
        for row in list(table.by_seq):
            data = table.data(row)
            values = data.get("custom_fields") or {}
            if values.get(key) is None:
                continue
            before = table.snapshot(row)
            table.replace(
                row, {**data, "custom_fields": {**values, key: convert(values[key])}}, before
            )

    def _option_field(self, entity: str, key: str) -> FieldDef:
        f = self.registry.get(entity, key)
        if f.options is None:
            raise ValueError(f"{key} ({f.field_type}) has no options")
        return f

    def field_definitions(self, entity: str) -> list[dict[str, Any]]:
        """The field definitions exactly as the *Fields endpoint serves them (all pages)."""
        with self._lock:
            t = table_name(entity)
            if t == "leads":
                return [render_v1(f) for f in self.registry.active("leads")]
            if t == "notes":
                return [render_note_field(f) for f in self.registry.active("notes")]
            return [render_v2(f, with_description=t == "deals") for f in self.registry.active(t)]

    # ------------------------------------------------------------------ tables

    def _make_tables(self, compact_threshold: int) -> dict[str, Table]:
        def v2_render(entity: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
            keys_by_entity = self._cf_keys

            def render(d: dict[str, Any]) -> dict[str, Any]:
                cf = d.get("custom_fields") or {}
                keys = keys_by_entity[entity]
                if len(cf) == len(keys) and list(cf) == keys:
                    return d  # already exactly the active fields, in order
                out = dict(d)
                out["custom_fields"] = {k: cf.get(k) for k in keys}
                return out

            return render

        def lead_render(d: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in d.items() if k != "custom_fields"}
            flatten_v1(self._cf_defs["deals"], d.get("custom_fields") or {}, out)
            return out

        def listed(r: Row) -> str | None:
            return None if r.deleted else "live"

        def with_archive(r: Row) -> str | None:
            return "archived" if r.archived else "live"

        def lead_part(r: Row) -> str | None:
            return None if r.deleted else ("archived" if r.archived else "live")

        std_sorts = {
            "id": seq_sort,
            "seq": seq_sort,
            "update_time": time_sort("update_time"),
            "add_time": time_sort("add_time"),
        }
        tables: dict[str, Table] = {}
        for t in V2_TABLES:
            tables[t] = Table(
                t,
                render=v2_render(t) if t in CUSTOM_FIELD_ENTITIES else None,
                partition=with_archive if t == "deals" else listed,
                sort_values=_v2_sorts(t, std_sorts),
            )
        for t in ("leads", "notes"):
            tables[t] = Table(
                t,
                render=lead_render if t == "leads" else None,
                partition=lead_part if t == "leads" else listed,
                sort_values=_v1_sorts(t),
                compactable=t != "leads",
            )
        for t in EXTRA_TABLES:
            sorts = dict(std_sorts)
            if t == "files":
                sorts["update_time"] = time_sort("update_time")
            tables[t] = Table(
                t,
                render=v2_render(t) if t in CUSTOM_FIELD_ENTITIES else None,
                partition=with_archive if t == "projects" else listed,
                sort_values=sorts,
                compactable=False,
            )
        for t, table in tables.items():
            table.compact = self.scale.get(t, 0) > compact_threshold and table.compactable
        return tables

    def _insert(self, t: str, row: Row) -> None:
        table = self.tables[t]
        table.insert(row)
        if table.compact:
            table.blob(row)  # render now and drop the dict: big tables live as bytes

    def _generate(self) -> None:
        ctx = self._ctx
        seed = self.seed
        n = self.scale
        now = self._now_ms
        ctx.org_ids = list(range(1, n["organizations"] + 1))
        ctx.person_ids = list(range(1, n["persons"] + 1))
        ctx.deal_ids = list(range(1, n["deals"] + 1))
        ctx.activity_ids = list(range(1, n["activities"] + 1))
        ctx.product_ids = list(range(1, n["products"] + 1))
        ctx.bulk_times = gen.make_bulk_times(random.Random(f"{seed}/bulk"), now)

        self._generate_pipelines(now)

        for ent in CUSTOM_FIELD_ENTITIES:
            ctx.build_pools(ent, random.Random(f"{seed}/pools/{ent}"))

        def simple(
            t: str, maker: Callable[..., dict[str, Any]], count: int, names: dict[int, str] | None
        ) -> None:
            r = random.Random(f"{seed}/{t}")
            for i in range(1, count + 1):
                at, ut = ctx.times(r)
                d = maker(ctx, r, i, at, ut)
                if names is not None:
                    names[i] = d["name"]
                deleted = r.random() < DELETED_SHARE
                if deleted:
                    d["is_deleted"] = True
                self._insert(t, Row(i, i, d, at, ut, deleted=deleted))

        simple("organizations", gen.organization, n["organizations"], ctx.org_names)
        simple("persons", gen.person, n["persons"], ctx.person_names)
        simple("products", gen.product, n["products"], ctx.product_names)

        r = random.Random(f"{seed}/leads")
        for i in range(1, n["leads"] + 1):
            at, ut = ctx.times(r)
            d, archived = gen.lead(ctx, r, i, at, ut)
            ctx.lead_ids.append(d["id"])
            deleted = r.random() < DELETED_SHARE
            self._insert("leads", Row(d["id"], i, d, at, ut, archived=archived, deleted=deleted))
        self._fix_lead_times()

        r = random.Random(f"{seed}/deals")
        for i in range(1, n["deals"] + 1):
            at, ut = ctx.times(r)
            d, status, archived = gen.deal(ctx, r, i, at, ut)
            ctx.deal_titles[i] = d["title"]
            self._insert(
                "deals",
                Row(i, i, d, at, ut, status=status, archived=archived, deleted=status == "deleted"),
            )

        simple("activities", gen.activity, n["activities"], None)

        r = random.Random(f"{seed}/notes")
        for i in range(1, n["notes"] + 1):
            at, ut = ctx.times(r)
            d = gen.note(ctx, r, i, at, ut)
            deleted = r.random() < DELETED_SHARE
            if deleted:
                d["active_flag"] = False
            self._insert("notes", Row(i, i, d, at, ut, deleted=deleted))

        for t in EXTRA_TABLES:
            self._generate_extra(t, now)

        for t in ENTITIES:
            self._next_id[t] = len(self.tables[t].rows) + 1

    def _generate_pipelines(self, now: int) -> None:
        """The account's pipelines and their stages, created long before its records."""
        ctx = self._ctx
        rng = random.Random(f"{self.seed}/pipelines")
        created = now - 800 * gen.DAY
        for p in range(1, N_PIPELINES + 1):
            at = created + p * 1000
            d = gen.pipeline(ctx, rng, p, at, at + p * gen.DAY)
            self._insert("pipelines", Row(p, p, d, at, at + p * gen.DAY))
        sid = 0
        for p in range(1, N_PIPELINES + 1):
            for order in range(1, STAGES_PER_PIPELINE + 1):
                sid += 1
                at = created + sid * 60_000
                d = gen.stage(ctx, rng, sid, at, at + sid * 1000, p, order)
                ctx.stage_pipeline[sid] = p
                ctx.stage_ids.append(sid)
                self._insert("stages", Row(sid, sid, d, at, at + sid * 1000))

    def _generate_extra(self, t: str, now: int) -> None:
        """The records of one of the extra entities (see `extras`)."""
        ctx = self._ctx
        r = random.Random(f"{self.seed}/{t}")
        maker = extras.MAKERS[t]
        id_key = KINDS[t].id_key
        for i in range(1, self.scale[t] + 1):
            at, ut = ctx.times(r)
            if t == "users":  # the account's users predate its records
                at = now - (1000 - 3 * min(i, 300)) * gen.DAY
                ut = max(at, ut)
            d = maker(ctx, r, i, at, ut)
            row = Row(d[id_key], i, d, at, ut)
            self._sync_flags(t, row, d)
            self._insert(t, row)
            if t == "projects":
                ctx.project_ids.append(i)

    def _fix_lead_times(self) -> None:
        """Lead rows carry millisecond timestamps: make Row.at/ut match the served strings."""
        for row in self.tables["leads"].by_seq:
            d = self.tables["leads"].data(row)
            row.at = to_ms(d["add_time"])
            row.ut = to_ms(d["update_time"])

    # ------------------------------------------------------------------ records

    def _table(self, entity: str) -> tuple[str, Table]:
        t = table_name(entity) if entity not in self.tables else entity
        if t not in self.tables:
            raise ValueError(f"unknown entity {entity!r}; known: {', '.join(self.tables)}")
        return t, self.tables[t]

    def _row(self, entity: str, id: Any) -> tuple[str, Table, Row]:
        t, table = self._table(entity)
        row = table.rows.get(id)
        if row is None:
            raise KeyError(f"no {t} record with id {id!r}")
        return t, table, row

    def records(
        self, entity: str, *, deleted: bool | None = False, archived: bool | None = None
    ) -> list[dict[str, Any]]:
        """Records exactly as the list endpoints serve them, in id order.

        deleted: False → not deleted (default), True → only deleted ones, None → both.
        archived: None → both (default), True → only archived, False → only not archived.
        "deal_products": every deal's attachments (`deal_products()`; the flags do not apply).
        """
        if entity == "deal_products":
            return self.deal_products()
        with self._lock:
            _t, table = self._table(entity)
            return [
                table.served(r)
                for r in table.by_seq
                if (deleted is None or r.deleted == deleted)
                and (archived is None or r.archived == archived)
            ]

    def record(self, entity: str, id: Any) -> dict[str, Any]:
        """One record as served (even a deleted one)."""
        with self._lock:
            _t, table, row = self._row(entity, id)
            return table.served(row)

    def ids(
        self, entity: str, *, deleted: bool | None = False, archived: bool | None = None
    ) -> list[Any]:
        with self._lock:
            _t, table = self._table(entity)
            return [
                r.id
                for r in table.by_seq
                if (deleted is None or r.deleted == deleted)
                and (archived is None or r.archived == archived)
            ]

    def _fmt(self, t: str, ms: int) -> str:
        if t in KINDS:
            return extras.fmt(KINDS[t].time_format, ms)
        if t == "leads":
            return fmt_ms(ms)
        if t == "notes":
            return fmt_v1(ms)
        return fmt_v2(ms)

    def _apply(self, t: str, data: dict[str, Any], fields: dict[str, Any], ms: int) -> None:
        allowed = set(data)
        bad = [k for k in fields if k not in allowed]
        if bad:
            raise ValueError(f"{t} records have no field(s) {bad}; known: {sorted(allowed)}")
        old_status = data.get("status")
        old_stage = data.get("stage_id")
        for key, value in fields.items():
            if key == "custom_fields":
                data["custom_fields"] = self._merged_custom_fields(t, data, value)
            elif isinstance(value, datetime):
                data[key] = self._fmt(t, to_ms(value))
            elif isinstance(value, date):
                data[key] = value.isoformat()
            else:
                data[key] = value
        if t == "deals":
            self._apply_deal(data, fields, ms, old_status, old_stage)
        elif t == "projects":
            if data["status"] not in PROJECT_STATUSES:
                raise ValueError(f"project status must be one of {PROJECT_STATUSES}")
            if data["status"] != old_status and "status_change_time" not in fields:
                data["status_change_time"] = self._fmt(t, ms)
        elif t == "tasks" and "is_done" in fields and "marked_as_done_time" not in fields:
            data["marked_as_done_time"] = self._fmt(t, ms) if data["is_done"] else None

    def _merged_custom_fields(
        self, t: str, data: dict[str, Any], values: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The record's custom fields with `values` set (each checked against its field)."""
        cf_ent = "deals" if t == "leads" else t
        defs = {f.key: f for f in self._cf_defs.get(cf_ent, [])}
        merged = dict(data.get("custom_fields") or {})
        for k, v in (values or {}).items():
            if k not in defs:
                raise ValueError(f"{k!r} is not an active custom field of {cf_ent}")
            check_value(defs[k], v)
            merged[k] = v
        return merged

    def _apply_deal(
        self,
        data: dict[str, Any],
        fields: dict[str, Any],
        ms: int,
        old_status: Any,
        old_stage: Any,
    ) -> None:
        """What Pipedrive changes along with a deal's status or stage."""
        status = data["status"]
        if status not in DEAL_STATUSES:
            raise ValueError(f"deal status must be one of {DEAL_STATUSES}")
        if "status" in fields and status != old_status:
            _deal_status_changed(data, fields, status, fmt_v2(ms))
        if "stage_id" in fields and "pipeline_id" not in fields:
            data["pipeline_id"] = self._ctx.stage_pipeline.get(data["stage_id"])
        # Pipedrive stamps a stage change (stage_change_time: "the last updated date and time
        # of the deal stage")
        moved = "stage_id" in fields and fields["stage_id"] != old_stage
        if moved and "stage_change_time" not in fields:
            data["stage_change_time"] = fmt_v2(ms)

    def _sync_flags(self, t: str, row: Row, data: dict[str, Any]) -> None:
        if t == "deals":
            row.status = data["status"]
            row.archived = bool(data["is_archived"])
            row.deleted = bool(data["is_deleted"]) or data["status"] == "deleted"
        elif t == "leads":
            row.archived = bool(data["is_archived"])
        elif t == "notes":
            row.deleted = not data["active_flag"]
        elif t == "projects":
            row.status = data["status"]
            row.archived = data["archive_time"] is not None
            row.deleted = data["status"] == "deleted"
        elif t in KINDS:
            if KINDS[t].delete == "flag_vanish":
                row.deleted = not data["active_flag"]
            # "deactivate": inactive records stay listed; "vanish": only delete() sets the flag
        else:
            row.deleted = bool(data.get("is_deleted"))

    def _new_record(
        self, t: str, table: Table, i: int, ms: int, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """A new record's random realistic values, as Pipedrive would create it at `ms`."""
        ctx = self._ctx
        rng = random.Random(f"{self.seed}/add/{t}/{i}")
        if t == "deals":
            data, _, _ = gen.deal(ctx, rng, i, ms, ms)
            data.update(
                status="open", is_deleted=False, is_archived=False, won_time=None,
                lost_time=None, close_time=None, lost_reason=None, stage_change_time=None,
            )  # fmt: skip
            return data  # a new deal is open until a test says otherwise
        if t == "leads":
            data, _ = gen.lead(ctx, rng, i, ms, ms)
            data.update(add_time=fmt_ms(ms), update_time=fmt_ms(ms), is_archived=False)
            return data
        if t == "stages":
            pipeline_id = fields.get("pipeline_id", 1)
            order = 1 + sum(1 for r in table.by_seq if table.data(r)["pipeline_id"] == pipeline_id)
            return gen.stage(ctx, rng, i, ms, ms, pipeline_id, order)
        if t in extras.MAKERS:
            data = extras.MAKERS[t](ctx, rng, i, ms, ms)
            self._new_extra(t, data)
            return data
        data = _MAKERS[t](ctx, rng, i, ms, ms)
        if t == "activities" and data["done"]:
            data["marked_as_done_time"] = fmt_v2(ms)
        return data

    def _remember_new(self, t: str, rid: Any, data: dict[str, Any]) -> None:
        """The generator's pools learn a new record (so later records can refer to it)."""
        ctx = self._ctx
        ids: dict[str, list[Any]] = {
            "organizations": ctx.org_ids,
            "persons": ctx.person_ids,
            "deals": ctx.deal_ids,
            "leads": ctx.lead_ids,
            "activities": ctx.activity_ids,
            "stages": ctx.stage_ids,
            "products": ctx.product_ids,
            "projects": ctx.project_ids,
        }
        names: dict[str, tuple[dict[Any, Any], str]] = {
            "organizations": (ctx.org_names, "name"),
            "persons": (ctx.person_names, "name"),
            "deals": (ctx.deal_titles, "title"),
            "products": (ctx.product_names, "name"),
            "stages": (ctx.stage_pipeline, "pipeline_id"),
        }
        if t in names:
            mapping, key = names[t]
            mapping[rid] = data[key]
        if t in ids:
            ids[t].append(rid)

    def add(
        self,
        entity: str,
        *,
        at: datetime | str | None = None,
        tick: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create a record (random realistic values, overridden by `fields`); returns it as
        served. add_time = update_time = `at` or now; then the clock ticks 1 s unless tick=False.
        Custom field values are given in the v2 shape: custom_fields={key: value}."""
        with self._lock:
            t, table = self._table(entity)
            ms = self._stamp(t, fields.pop("update_time", None) or at)
            i = self._next_id[t]
            self._next_id[t] += 1
            data = self._new_record(t, table, i, ms, fields)
            status = data["status"] if t == "deals" else None
            archived = False
            if "custom_fields" in data:
                data["custom_fields"] = dict.fromkeys(data["custom_fields"])  # start empty
            self._apply(t, data, fields, ms)
            if t == "deals" and "stage_change_time" not in fields:
                data["stage_change_time"] = None  # a new deal's stage never changed
            rid = data[KINDS[t].id_key] if t in KINDS else data["id"]
            row = Row(rid, i, data, ms, ms, status=status, archived=archived)
            self._sync_flags(t, row, data)
            if rid in table.rows:
                raise ValueError(f"{t} id {rid!r} exists already")
            self._insert(t, row)
            self._remember_new(t, rid, data)
            self._webhook(t, "create", rid, None, data)
            if tick:
                self._now_ms += 1000
            return table.served(row)

    def update(
        self,
        entity: str,
        id: Any,
        *,
        at: datetime | str | None = None,
        tick: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Change fields of a record (custom_fields={key: v2 value} merges); update_time =
        `at` or now, then the clock ticks 1 s unless tick=False. Returns the record as served.

        On deals, persons and organizations every field whose value changed gets one entry in
        `changelog(entity, id)` (actor user 1, source "app", time = the new update_time)."""
        return self._mutate(entity, id, at, tick, fields, log=True)

    def _mutate(
        self,
        entity: str,
        id: Any,
        at: datetime | str | None,
        tick: bool,
        fields: dict[str, Any],
        deleted: bool | None = None,
        *,
        log: bool = False,
        event: str = "change",
        hook_meta: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change a record; `event` is the webhook action it sends (`hook_meta`: extra meta)."""
        with self._lock:
            t, table, row = self._row(entity, id)
            if "id" in fields:
                raise ValueError("ids cannot change")
            if t in KINDS and KINDS[t].id_key in fields:
                raise ValueError(f"{t} are identified by {KINDS[t].id_key}, which cannot change")
            update_key = KINDS[t].update_key if t in KINDS else "update_time"
            # generate the record's lazily made data now, from its times before this change
            if t == "deals" and row.id not in self._deal_products:
                self._attachments(row.id)
            if t in FOLLOWED and (t, row.id) not in self._followers:
                self._follow_state(t, row.id)
            history = self._changelog_state(t, row.id) if t in clog.CHANGELOG_ENTITIES else None
            ms = self._stamp(t, fields.pop("update_time", None) or at)
            old = table.data(row)
            data = dict(old)
            self._apply(t, data, fields, ms)
            if update_key is not None:
                data[update_key] = self._fmt(t, ms)
            if log and history is not None:
                seq = history[-1]["seq"] if history else 0
                skip = (update_key,) if update_key else ()
                for n, (key, a, b) in enumerate(clog.diff(t, old, data, skip), 1):
                    history.append(clog.entry(seq + n, key, a, b, ms))
            before = table.snapshot(row)
            row.ut = ms
            self._sync_flags(t, row, data)
            if deleted is not None:
                row.deleted = deleted
            table.replace(row, data, before)
            if t == "stages" and "pipeline_id" in fields:
                self._ctx.stage_pipeline[row.id] = data["pipeline_id"]
            self._webhook(t, event, row.id, old, data, hook_meta)
            if tick:
                self._now_ms += 1000
            return table.served(row)

    def delete(
        self, entity: str, id: Any, *, at: datetime | str | None = None, tick: bool = True
    ) -> None:
        """Delete a record. Deals and projects stay listed with status "deleted" (only when
        asked for); users and activity types are deactivated (active_flag false, still listed);
        everything else vanishes from the lists but is kept (see `records(deleted=True)`).
        Webhooks send a delete (a change for users, which are deactivated)."""
        t, _table = self._table(entity)
        fields, deleted, event = self._deletion(t)
        self._mutate(t, id, at, tick, fields, deleted, event=event)

    @staticmethod
    def _deletion(t: str) -> tuple[dict[str, Any], bool | None, str]:
        """What deleting a record of `t` changes: (fields, Row.deleted, webhook action)."""
        kind = KINDS.get(t)
        if t == "deals":
            return {"status": "deleted", "is_deleted": True}, None, "delete"
        if t == "notes":
            return {"active_flag": False}, None, "delete"
        if t == "leads":
            return {}, True, "delete"
        if kind is None:
            return {"is_deleted": True}, None, "delete"
        if kind.delete == "status":
            return {"status": "deleted"}, None, "delete"
        if kind.delete == "deactivate":
            return {"active_flag": False}, None, "change"
        if kind.delete == "flag_vanish":
            return {"active_flag": False}, None, "delete"
        return {}, True, "delete"

    def merge(
        self,
        entity: str,
        id: Any,
        *,
        into: Any,
        at: datetime | str | None = None,
        tick: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Merge record `id` into record `into` (deals, persons, organizations): `id` is
        deleted and `into` changes (`fields`, and its update_time). Webhooks v2 send a delete
        with meta.merged_to_id and a change with meta.merged_from_id. Records that refer to
        `id` are not moved. Returns the surviving record as served."""
        with self._lock:
            t, _table = self._table(entity)
            if t not in MERGEABLE:
                raise ValueError(f"only {', '.join(MERGEABLE)} can be merged, not {t}")
            if id == into:
                raise ValueError("a record cannot be merged into itself")
            if self._row(t, id)[2].deleted or self._row(t, into)[2].deleted:
                raise ValueError("deleted records cannot be merged")
            gone, deleted, _event = self._deletion(t)
            self._mutate(t, id, at, False, gone, deleted, event="delete",
                         hook_meta={"merged_to_id": str(into)})  # fmt: skip
            return self._mutate(
                t, into, at, tick, fields, log=True, hook_meta={"merged_from_id": str(id)}
            )

    def _webhook(
        self,
        t: str,
        action: str,
        rid: Any,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Queue the webhook v2 event of a change (nothing to do when no webhook listens)."""
        if self.webhooks.wants(t):
            defs = self._cf_defs.get("deals" if t == "leads" else t, [])
            self.webhooks.emit(t, action, rid, before, after, defs, extra_meta=meta)

    def archive(
        self, entity: str, id: Any, *, at: datetime | str | None = None, tick: bool = True
    ) -> dict[str, Any]:
        """Archive a deal, lead or project: it leaves /deals (/leads, /projects) for
        /deals/archived (/leads/archived, /projects/archived)."""
        return self._set_archived(entity, id, True, at, tick)

    def unarchive(
        self, entity: str, id: Any, *, at: datetime | str | None = None, tick: bool = True
    ) -> dict[str, Any]:
        return self._set_archived(entity, id, False, at, tick)

    def _set_archived(
        self, entity: str, id: Any, value: bool, at: datetime | str | None, tick: bool
    ) -> dict[str, Any]:
        t, _table = self._table(entity)
        if t == "projects":
            ms = self._stamp(t, at)
            return self.update(
                t, id, at=at, tick=tick, archive_time=self._fmt(t, ms) if value else None
            )
        if t not in ("deals", "leads"):
            raise ValueError(f"only deals, leads and projects can be archived, not {t}")
        return self.update(t, id, at=at, tick=tick, is_archived=value)

    @staticmethod
    def _new_extra(t: str, data: dict[str, Any]) -> None:
        """A record made by `add` starts in its plain state (tests override with fields)."""
        if t == "projects":
            data.update(status="open", archive_time=None, status_change_time=None)
        elif t == "tasks":
            data.update(is_done=False, marked_as_done_time=None, parent_task_id=None)
        elif t in ("activity_types", "users", "currencies", "filters", "files", "roles"):
            data["active_flag"] = True
        elif t == "goals":
            data["is_active"] = True

    # ------------------------------------------------------------------ deal products

    def _product_data(self, product_id: int) -> dict[str, Any]:
        row = self.tables["products"].rows.get(product_id)
        if row is None:
            raise KeyError(f"no products record with id {product_id!r}")
        return self.tables["products"].data(row)

    def _generated_product(self, product_id: int) -> dict[str, Any]:
        """A product with the name it was generated with (attachments keep that name)."""
        data = self._product_data(product_id)
        name = self._ctx.product_names.get(product_id)
        return data if name is None else {**data, "name": name}

    def _attachments(self, deal_id: int) -> list[dict[str, Any]]:
        """The attachments of a deal (generated on first use); [] for unknown deals."""
        atts = self._deal_products.get(deal_id)
        if atts is not None:
            return atts
        table = self.tables["deals"]
        row = table.rows.get(deal_id)
        atts = []
        generated_products = range(1, self.scale["products"] + 1)  # not later additions
        if row is not None and deal_id <= self._generated_deals and generated_products:
            atts = extras.deal_products(
                self.seed,
                table.data(row),
                row.at,
                row.ut,
                generated_products,
                self._generated_product,
            )
        if row is not None:
            self._deal_products[deal_id] = atts
            for a in atts:
                self._attachment_deal[a["id"]] = deal_id
        return atts

    def _find_attachment(self, attachment_id: int) -> tuple[int, dict[str, Any]]:
        deal_id = self._attachment_deal.get(attachment_id)
        if deal_id is None and 0 < attachment_id < self._next_attachment_id:
            guess = (attachment_id - 1) // extras.MAX_PRODUCTS_PER_DEAL + 1
            if guess <= self._generated_deals:
                self._attachments(guess)
                deal_id = self._attachment_deal.get(attachment_id)
        if deal_id is not None:
            for a in self._attachments(deal_id):
                if a["id"] == attachment_id:
                    return deal_id, a
        raise KeyError(f"no deal product attachment with id {attachment_id!r}")

    def deal_products(self, deal_ids: Any = None) -> list[dict[str, Any]]:
        """Deal-product attachments as /api/v2/deals/products serves them, by id: of the given
        deal ids (an int or an iterable), or of every deal (deleted and archived ones too)."""
        with self._lock:
            if deal_ids is None:
                ids = list(self.tables["deals"].rows)
            elif isinstance(deal_ids, int):
                ids = [deal_ids]
            else:
                ids = list(deal_ids)
            out = [dict(a) for d in ids for a in self._attachments(d)]
            return sorted(out, key=lambda a: a["id"])

    def _bump_deal(self, deal_id: int, at: datetime | str | None) -> int:
        """Stamp the deal's update_time (a change of its products changes the deal)."""
        self._mutate("deals", deal_id, at, False, {})
        return self.tables["deals"].rows[deal_id].ut

    def add_deal_product(
        self,
        deal_id: int,
        product_id: int,
        *,
        at: datetime | str | None = None,
        tick: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Attach a product to a deal (realistic values, overridden by `fields`). The deal's
        update_time becomes `at` or now, like the attachment's add/update_time; the clock then
        ticks 1 s unless tick=False. Returns the attachment as served."""
        with self._lock:
            _t, _table, _row = self._row("deals", deal_id)
            product = self._product_data(product_id)
            atts = self._attachments(deal_id)
            ms = self._bump_deal(deal_id, at)
            aid = self._next_attachment_id
            self._next_attachment_id += 1
            rng = random.Random(f"{self.seed}/add/deal_products/{aid}")
            deal = self.tables["deals"].data(self.tables["deals"].rows[deal_id])
            order = max((a["order_nr"] or 0 for a in atts), default=0) + 1
            att = extras.new_attachment(rng, aid, deal, product, order_nr=order, at=ms, ut=ms)
            att.update(discount=0, comments=None, is_enabled=True)
            self._set_attachment_fields(att, fields)
            atts.append(att)
            self._attachment_deal[aid] = deal_id
            self._webhook("deal_products", "create", aid, None, att)
            if tick:
                self._now_ms += 1000
            return dict(att)

    def update_deal_product(
        self,
        attachment_id: int,
        *,
        at: datetime | str | None = None,
        tick: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Change an attachment (sum is recomputed unless given); stamps its update_time and
        its deal's update_time. Returns the attachment as served."""
        with self._lock:
            deal_id, att = self._find_attachment(attachment_id)
            for key in ("id", "deal_id"):
                if key in fields:
                    raise ValueError(f"an attachment's {key} cannot change")
            ms = self._bump_deal(deal_id, at)
            old = dict(att)
            self._set_attachment_fields(att, fields)
            att["update_time"] = fmt_v2(ms)
            self._webhook("deal_products", "change", attachment_id, old, att)
            if tick:
                self._now_ms += 1000
            return dict(att)

    def remove_deal_product(
        self, attachment_id: int, *, at: datetime | str | None = None, tick: bool = True
    ) -> None:
        """Detach a product from its deal (stamps the deal's update_time)."""
        with self._lock:
            deal_id, att = self._find_attachment(attachment_id)
            self._bump_deal(deal_id, at)
            self._deal_products[deal_id].remove(att)
            del self._attachment_deal[attachment_id]
            self._webhook("deal_products", "delete", attachment_id, att, None)
            if tick:
                self._now_ms += 1000

    def _set_attachment_fields(self, att: dict[str, Any], fields: dict[str, Any]) -> None:
        bad = [k for k in fields if k not in att]
        if bad:
            raise ValueError(f"deal products have no field(s) {bad}; known: {sorted(att)}")
        if "product_id" in fields and "name" not in fields:
            att["name"] = self._product_data(fields["product_id"])["name"]
        for key, value in fields.items():
            att[key] = value.isoformat() if isinstance(value, date) else value
        if "sum" not in fields:
            att["sum"] = extras.attachment_sum(att)

    # ------------------------------------------------------------------ followers

    def _follow_state(
        self, entity: str, id: Any
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self._table(entity)[0] not in FOLLOWED:
            raise ValueError(f"followers are served for {', '.join(FOLLOWED)}, not {entity}")
        t, table, row = self._row(entity, id)
        state = self._followers.get((t, row.id))
        if state is None:
            owner = table.data(row).get("owner_id")
            state = extras.followers(self.seed, t, row.id, owner, row.at, row.ut)
            self._followers[(t, row.id)] = state
        return state

    def followers(self, entity: str, id: Any) -> list[dict[str, Any]]:
        """The followers of a deal, person, organization or product as
        /api/v2/{entity}/{id}/followers serves them."""
        with self._lock:
            current, _log = self._follow_state(entity, id)
            return [{"user_id": f["user_id"], "add_time": fmt_v2(f["ms"])} for f in current]

    def follower_changelog(self, entity: str, id: Any) -> list[dict[str, Any]]:
        """As /api/v2/{entity}/{id}/followers/changelog serves it (oldest first)."""
        with self._lock:
            _current, log = self._follow_state(entity, id)
            return [
                {
                    "action": e["action"],
                    "actor_user_id": e["actor"],
                    "follower_user_id": e["user"],
                    "time": fmt_v2(e["ms"]),
                }
                for e in log
            ]

    def add_follower(
        self,
        entity: str,
        id: Any,
        user_id: int,
        *,
        actor_user_id: int = 1,
        at: datetime | str | None = None,
        tick: bool = True,
    ) -> None:
        """Make a user follow a record (the record's update_time does not change)."""
        self._change_follower(entity, id, user_id, True, actor_user_id, at, tick)

    def remove_follower(
        self,
        entity: str,
        id: Any,
        user_id: int,
        *,
        actor_user_id: int = 1,
        at: datetime | str | None = None,
        tick: bool = True,
    ) -> None:
        self._change_follower(entity, id, user_id, False, actor_user_id, at, tick)

    def _change_follower(
        self,
        entity: str,
        id: Any,
        user_id: int,
        follow: bool,
        actor: int,
        at: datetime | str | None,
        tick: bool,
    ) -> None:
        with self._lock:
            current, log = self._follow_state(entity, id)
            if user_id not in self.tables["users"].rows:
                raise KeyError(f"no users record with id {user_id!r}")
            following = any(f["user_id"] == user_id for f in current)
            if follow == following:
                raise ValueError(
                    f"user {user_id} {'already follows' if follow else 'does not follow'} it"
                )
            ms = self._stamp("deals", at)
            if follow:
                current.append({"user_id": user_id, "ms": ms})
            else:
                current[:] = [f for f in current if f["user_id"] != user_id]
            log.append(
                {"action": "added" if follow else "removed", "actor": actor, "user": user_id,
                 "ms": ms}
            )  # fmt: skip
            if tick:
                self._now_ms += 1000

    # ------------------------------------------------------------------ field-change history

    def _changelog_state(self, entity: str, id: Any) -> list[dict[str, Any]]:
        """The record's changelog entries, oldest first (a generated record's 0-3 past changes
        are made on first use, from its values and times at that moment)."""
        t = self._table(entity)[0]
        if t not in clog.CHANGELOG_ENTITIES:
            raise ValueError(
                f"changelogs are served for {', '.join(clog.CHANGELOG_ENTITIES)}, not {entity}"
            )
        t, table, row = self._row(t, id)
        log = self._changelogs.get((t, row.id))
        if log is None:
            log = []
            if row.seq <= self.scale[t] and t == "deals" and self.deal_stories:
                log = clog.deal_story(
                    self.seed, row.id, table.data(row), row.at, row.ut, self._pipeline_stages(row)
                )
            elif row.seq <= self.scale[t]:  # generated, not added by a test
                log = clog.history(
                    self.seed,
                    t,
                    row.id,
                    table.data(row),
                    row.at,
                    row.ut,
                    self._cf_defs.get(t, []),
                    self._ctx.stage_pipeline,
                    self.scale["organizations"],
                )
            self._changelogs[(t, row.id)] = log
        return log

    def _pipeline_stages(self, row: Row) -> list[int]:
        """The stages of a deal's pipeline, in pipeline order."""
        stages = self.tables["stages"]
        pipeline = self.tables["deals"].data(row).get("pipeline_id")
        found = [stages.data(r) for r in stages.by_seq]
        return [
            s["id"]
            for s in sorted(found, key=lambda s: s["order_nr"])
            if s["pipeline_id"] == pipeline
        ]

    def changelog(self, entity: str, id: Any) -> list[dict[str, Any]]:
        """The field-change history of a deal, person or organization as
        /v1/{entity}/{id}/changelog serves it: newest first (all pages).

        Each `update()` that changes fields adds one entry per changed field: field_key is the
        field's name (`changelog.V1_FIELD_KEYS` renames a few to their v1 key: a deal's owner_id
        is user_id, a person's emails/phones are email/phone) or a custom field's hash (parts of
        composite values as `<hash>_<part>`); old_value/new_value are text ("500", "3",
        "true"), null stays null; time is the new update_time as "YYYY-MM-DD HH:MM:SS"."""
        with self._lock:
            return [clog.render(e) for e in reversed(self._changelog_state(entity, id))]

    # ------------------------------------------------------------------ plan restrictions

    def restrict(self, path: str, status: int = 402, message: str | None = None) -> Restriction:
        """Answer requests whose path matches the regex `path` with Pipedrive's error envelope:
        402 (the feature is not on the company's plan) or 403 (the user may not see it).
        Checked after authentication and OAuth scopes, before the daily budget (not charged)."""
        rule = Restriction(path, status, message)
        with self._lock:
            self._restrictions.append(rule)
        return rule

    def unrestrict(self, path: str | None = None) -> None:
        """Lift the restrictions made with this exact `path` regex (None: all of them)."""
        with self._lock:
            self._restrictions = [
                r for r in self._restrictions if path is not None and r.path != path
            ]

    # ------------------------------------------------------------------ OAuth

    def oauth_client(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        scopes: list[str] | tuple[str, ...] | None = None,
        access_ttl: float = 3600,
    ) -> OAuthInstall:
        """Register an app install: POST /oauth/token with these client credentials and this
        refresh token then gives access tokens (valid for `access_ttl` seconds of the fake
        clock) with these scopes ("base" is always granted; None: every scope the fake
        knows). Refresh tokens rotate: the returned object's `refresh_token` follows."""
        return self.oauth.register(client_id, client_secret, refresh_token, scopes, access_ttl)

    def issue_access_token(
        self, scopes: list[str] | tuple[str, ...] | None = None, access_ttl: float = 3600
    ) -> str:
        """A bearer token without the refresh dance (for tests of scopes and expiry)."""
        return self.oauth.issue(scopes, access_ttl, self._now_ms)

    def revoke_refresh_token(self, token: str) -> None:
        """The refresh token stops working (the user uninstalled the app, or an admin revoked
        it); access tokens already issued keep working until they expire."""
        self.oauth.revoke_refresh(token)

    def revoke_access_token(self, token: str) -> None:
        self.oauth.revoke_access(token)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now: the next API call with one gets 401."""
        self.oauth.expire_all(self._now_ms)

    # ------------------------------------------------------------------ webhooks

    def webhook_deliveries(self, **filters: Any) -> list[WebhookDelivery]:
        """What the webhooks were sent so far (`webhooks.deliveries` filters: webhook_id,
        entity, action, state)."""
        return self.webhooks.deliveries(**filters)

    def wait_webhooks(self, timeout: float = 30.0, *, drained: bool = True) -> None:
        """Block until every webhook delivery is settled (see `WebhookHub.wait`)."""
        self.webhooks.wait(timeout, drained=drained)

    # ------------------------------------------------------------------ requests, hooks, faults

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received so far."""
        with self._log_lock:
            return list(self._log)

    def reset_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    @property
    def token_leaked_in_url(self) -> bool:
        return any(r.token_in_url for r in self.requests)

    def on_request(self, hook: Callable[[RequestRecord], Any] | None) -> None:
        """Call `hook(record)` for every request before its response is built (None: clear)."""
        with self._lock:
            if hook is None:
                self._hooks.clear()
            else:
                self._hooks.append(hook)

    def add_fault(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def tokens_used(self) -> int:
        with self._budget_lock:
            return self._tokens_used

    def reset_budget(self) -> None:
        with self._budget_lock:
            self._tokens_used = 0

    def reset_rate_window(self) -> None:
        self._window.reset()


_MAKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "persons": gen.person,
    "organizations": gen.organization,
    "products": gen.product,
    "activities": gen.activity,
    "pipelines": gen.pipeline,
    "notes": gen.note,
}


def _v2_sorts(t: str, std_sorts: dict[str, Any]) -> dict[str, Any]:
    """The sort keys of a v2 table: the standard ones and those its list accepts."""
    sorts = dict(std_sorts)
    for extra in V2_LISTS[t].sort_by:
        if extra not in sorts:
            sorts[extra] = data_sort(extra, -1 if extra == "order_nr" else "")
    return sorts


def _v1_sorts(t: str) -> dict[str, Any]:
    """The sort keys of a v1 table (leads, notes)."""
    sorts: dict[str, Any] = {"seq": seq_sort}
    for key, default in V1_SORTS[t].items():
        if key in ("add_time", "update_time"):
            sorts[key] = time_sort(key)
        elif t == "notes" and key == "id":
            sorts[key] = seq_sort
        else:
            sorts[key] = data_sort(key, default)
    return sorts


def _deal_status_changed(
    data: dict[str, Any], fields: dict[str, Any], status: str, stamp: str
) -> None:
    """The times and flags Pipedrive sets when a deal's status changes (unless given)."""
    if status in ("open", "won", "lost"):
        for k in ("won_time", "lost_time", "close_time"):
            if k not in fields:
                data[k] = None
        if status != "lost" and "lost_reason" not in fields:
            data["lost_reason"] = None
    if status in ("won", "lost"):
        data.setdefault("close_time", None)
        if "close_time" not in fields:
            data["close_time"] = stamp
        k = "won_time" if status == "won" else "lost_time"
        if k not in fields:
            data[k] = stamp
    if "is_deleted" not in fields:
        data["is_deleted"] = status == "deleted"
