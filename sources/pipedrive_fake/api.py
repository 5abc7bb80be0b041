"""The HTTP side of the fake: routing, auth, limits, faults and the list endpoints.

`HttpApi` is a mixin of `FakePipedrive`; it reads the fake's tables, field registry, clock,
fault rules and counters, and never changes records.
"""

from __future__ import annotations

import base64
import calendar
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import orjson

from .fields import (
    CUSTOM_FIELD_ENTITIES,
    ENTITY_SINGULAR,
    FieldRegistry,
    fmt_v2,
)
from .server import (
    ERROR_INFO,
    MAINTENANCE_HTML,
    UNAUTHORIZED_BODY,
    FaultRule,
    RateWindow,
    RequestRecord,
    Response,
    fault_body,
    json_error,
)
from .spec import is_rfc3339
from .store import Row, Table

if TYPE_CHECKING:
    from .generate import Context

V2_TABLES = ("deals", "persons", "organizations", "activities", "products", "pipelines", "stages")

DEAL_STATUSES = ("open", "won", "lost", "deleted")
MAX_LIMIT = 500

# x-token-cost of each served GET, as the official specs say (a test checks them against it)
TOKEN_COSTS: dict[str, int] = {
    "/api/v2/deals": 10,
    "/api/v2/deals/archived": 20,
    "/api/v2/persons": 10,
    "/api/v2/organizations": 10,
    "/api/v2/activities": 10,
    "/api/v2/products": 10,
    "/api/v2/pipelines": 5,
    "/api/v2/stages": 5,
    "/api/v2/dealFields": 10,
    "/api/v2/personFields": 10,
    "/api/v2/organizationFields": 10,
    "/api/v2/productFields": 10,
    "/api/v2/activityFields": 10,
    "/v1/leads": 20,
    "/v1/leads/archived": 40,
    "/v1/notes": 20,
    "/v1/leadFields": 20,
    "/v1/noteFields": 20,
}


class BadRequest(Exception):
    pass


class _V2List:
    """What the spec allows on one v2 list endpoint."""

    def __init__(
        self,
        sort_by: tuple[str, ...] = ("id", "update_time", "add_time"),
        since: bool = True,
        until: bool = True,
        ids: bool = True,
        filters: Mapping[str, type] | None = None,
        custom_fields: bool = True,
    ) -> None:
        self.sort_by = sort_by
        self.since = since
        self.until = until
        self.ids = ids
        self.filters = dict(filters or {})
        self.custom_fields = custom_fields


V2_LISTS: dict[str, _V2List] = {
    "deals": _V2List(
        filters={
            "owner_id": int,
            "person_id": int,
            "org_id": int,
            "pipeline_id": int,
            "stage_id": int,
        }
    ),
    "persons": _V2List(filters={"owner_id": int, "org_id": int}),
    "organizations": _V2List(filters={"owner_id": int}),
    "activities": _V2List(
        sort_by=("id", "update_time", "add_time", "due_date"),
        filters={
            "owner_id": int,
            "deal_id": int,
            "lead_id": str,
            "person_id": int,
            "org_id": int,
            "done": bool,
        },
        custom_fields=False,
    ),
    "products": _V2List(
        sort_by=("id", "name", "add_time", "update_time"),
        until=False,
        filters={"owner_id": int},
    ),
    "pipelines": _V2List(since=False, until=False, ids=False, custom_fields=False),
    "stages": _V2List(
        sort_by=("id", "update_time", "add_time", "order_nr"),
        since=False,
        until=False,
        ids=False,
        filters={"pipeline_id": int},
        custom_fields=False,
    ),
}

V1_SORTS: dict[str, dict[str, Any]] = {
    "leads": {
        "id": "",
        "title": "",
        "owner_id": -1,
        "creator_id": -1,
        "was_seen": False,
        "expected_close_date": "",
        "next_activity_id": -1,
        "add_time": None,
        "update_time": None,
    },
    "notes": {
        "id": None,
        "user_id": -1,
        "deal_id": -1,
        "person_id": -1,
        "org_id": -1,
        "content": "",
        "add_time": None,
        "update_time": None,
    },
}
V1_FILTERS: dict[str, dict[str, type]] = {
    "leads": {"owner_id": int, "person_id": int, "organization_id": int},
    "notes": {"user_id": int, "deal_id": int, "person_id": int, "org_id": int, "lead_id": str},
}


def to_ms(value: datetime | str | int | float) -> int:
    """Epoch milliseconds from an aware datetime, an ISO/RFC 3339 string or epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1000)
    if isinstance(value, str):
        value = parse_time(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; give a timezone (UTC)")
    value = value.astimezone(UTC)
    return calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000


def parse_time(text: str, *, strict: bool = False) -> datetime:
    """RFC 3339 (strict) or also "YYYY-MM-DD HH:MM:SS" / "YYYY-MM-DD" as UTC (lenient)."""
    if strict and not is_rfc3339(text):
        raise ValueError(f"{text!r} is not RFC 3339")
    dt = datetime.fromisoformat(text.replace("z", "Z"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()


def _unb64(text: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return orjson.loads(raw)
    except Exception as exc:
        raise BadRequest("Invalid cursor") from exc


def _int_param(q: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Validation failed: {name}: Expected number, received string") from None


class HttpApi:
    """Request handling for `FakePipedrive` (a mixin: the attributes below live on the fake)."""

    token: str
    daily_budget: int | None
    v1_pagination_mode: str | None
    tables: dict[str, Table]
    registry: FieldRegistry
    _ctx: Context
    _now_ms: int
    _lock: threading.RLock
    _log_lock: threading.Lock
    _log: list[RequestRecord]
    _hooks: list[Callable[[RequestRecord], Any]]
    _faults: list[FaultRule]
    _window: RateWindow
    _budget_lock: threading.Lock
    _tokens_used: int
    _stop: threading.Event
    _routes: dict[str, tuple[int, Callable[[dict[str, str]], Response]]]

    def field_definitions(self, entity: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ HTTP handling

    def _handle(self, h: Any) -> Response:
        split = urlsplit(h.path)
        path = split.path
        if len(path) > 1:
            path = path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        header_token = h.headers.get("x-api-token")
        token_valid = header_token is not None and hmac.compare_digest(
            header_token.encode(), self.token.encode()
        )
        in_url = "api_token" in query or (bool(self.token) and self.token in unquote_plus(h.path))
        with self._log_lock:
            rec = RequestRecord(
                n=len(self._log) + 1,
                method=h.command,
                path=path,
                query=query,
                raw_query=split.query,
                headers={k.lower(): v for k, v in h.headers.items()},
                token_valid=token_valid,
                token_in_url=in_url,
                started=time.monotonic(),
            )
            self._log.append(rec)
        response = self._respond(h.command, path, query, rec)
        rec.status = None if response.drop else response.status
        return response

    def _take_fault(self, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self._faults:
                if rule.take(path):
                    return rule
        return None

    def _respond(
        self, method: str, path: str, query: dict[str, str], rec: RequestRecord
    ) -> Response:
        for hook in list(self._hooks):
            hook(rec)
        over, rl_headers, reset = self._window.hit()
        common = [("Date", formatdate(self._now_ms / 1000, usegmt=True)), *rl_headers]
        fault = self._take_fault(path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "stall":
                self._stop.wait(fault.delay)
            elif fault.kind != "malformed":
                response = self._fault_response(fault)
                response.headers = common + response.headers
                return response
        response = self._serve(method, path, query, rec, over, reset)
        if fault is not None and fault.kind == "malformed":
            raw = fault_body(fault.body)[0] if fault.body is not None else response.payload
            response = Response(200, raw[: max(1, len(raw) // 2)])
        response.headers = common + response.headers
        return response

    def _fault_response(self, fault: FaultRule) -> Response:
        kind = fault.kind
        if kind == "drop":
            return Response(0, drop=True)
        if kind == "html":
            raw, _ = fault_body(fault.body) if fault.body is not None else (MAINTENANCE_HTML, "")
            return Response(
                fault.status or 200,
                raw,
                content_type=fault.content_type or "text/html; charset=utf-8",
            )
        if kind == "rate_limit":
            body = orjson.dumps(
                {
                    "success": False,
                    "error": "Request over limit",
                    "errorCode": 429,
                    "error_info": ERROR_INFO,
                }
            )
            return Response(
                fault.status or 429,
                fault_body(fault.body)[0] if fault.body is not None else body,
                headers=[("Retry-After", _num(fault.retry_after))],
            )
        if kind == "body":
            raw, ctype = fault_body(fault.body)
            return Response(fault.status or 200, raw, content_type=fault.content_type or ctype)
        # kind == "status"
        status = fault.status or 500
        if fault.body is None:
            response = json_error(
                status, "Internal server error" if status == 500 else "Service unavailable"
            )
        else:
            raw, ctype = fault_body(fault.body)
            response = Response(status, raw, content_type=fault.content_type or ctype)
        if status in (429, 503) and fault.retry_after is not None:
            response.headers.append(("Retry-After", _num(fault.retry_after)))
        return response

    def _serve(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        rec: RequestRecord,
        over: bool,
        reset: int,
    ) -> Response:
        authorized = rec.token_valid or (
            "api_token" in query
            and hmac.compare_digest(query["api_token"].encode(), self.token.encode())
        )
        if not authorized:
            return Response(401, UNAUTHORIZED_BODY)
        if over:
            body = orjson.dumps(
                {
                    "success": False,
                    "error": "Request over limit",
                    "errorCode": 429,
                    "error_info": ERROR_INFO,
                }
            )
            return Response(429, body, headers=[("Retry-After", str(reset))])
        if method != "GET":
            return json_error(405, f"The fake serves GET only, not {method}")
        route = self._routes.get(path)
        if route is None:
            return json_error(404, "Unknown method .")
        cost, handler = route
        with self._budget_lock:
            if self.daily_budget is not None and self._tokens_used + cost > self.daily_budget:
                wait = self._seconds_to_midnight()
                body = orjson.dumps(
                    {
                        "success": False,
                        "error": "Daily API token budget exceeded: the company's daily token "
                        f"budget of {self.daily_budget} is used up; it resets at 00:00 UTC",
                        "errorCode": 429,
                        "error_info": ERROR_INFO,
                    }
                )
                return Response(429, body, headers=[("Retry-After", str(wait))])
            self._tokens_used += cost
        rec.cost = cost
        try:
            return handler(query)
        except BadRequest as exc:
            return json_error(400, str(exc), "ERR_SCHEMA_VALIDATION_FAILED")

    def _seconds_to_midnight(self) -> int:
        now = datetime.fromtimestamp(self._now_ms / 1000, tz=UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return max(1, int((midnight - now).total_seconds()))

    def _make_routes(self) -> dict[str, tuple[int, Callable[[dict[str, str]], Response]]]:
        routes: dict[str, tuple[int, Callable[[dict[str, str]], Response]]] = {}
        for t in V2_TABLES:
            routes[f"/api/v2/{t}"] = (
                TOKEN_COSTS[f"/api/v2/{t}"],
                partial(self._v2_list, t, "live"),
            )
        routes["/api/v2/deals/archived"] = (
            TOKEN_COSTS["/api/v2/deals/archived"],
            partial(self._v2_list, "deals", "archived"),
        )
        for ent in CUSTOM_FIELD_ENTITIES:
            p = f"/api/v2/{ENTITY_SINGULAR[ent]}Fields"
            routes[p] = (TOKEN_COSTS[p], partial(self._v2_fields, ent))
        routes["/v1/leads"] = (TOKEN_COSTS["/v1/leads"], partial(self._v1_list, "leads", "live"))
        routes["/v1/leads/archived"] = (
            TOKEN_COSTS["/v1/leads/archived"],
            partial(self._v1_list, "leads", "archived"),
        )
        routes["/v1/notes"] = (TOKEN_COSTS["/v1/notes"], partial(self._v1_list, "notes", "live"))
        routes["/v1/leadFields"] = (
            TOKEN_COSTS["/v1/leadFields"],
            partial(self._v1_fields, "leads"),
        )
        routes["/v1/noteFields"] = (
            TOKEN_COSTS["/v1/noteFields"],
            partial(self._v1_fields, "notes"),
        )
        return routes

    # ------------------------------------------------------------------ v2 lists

    def _cursor_value(self, t: str, sort_by: str, row: Row) -> Any:
        if sort_by == "id":
            return row.id
        if sort_by == "update_time":
            return fmt_v2(row.ut)
        if sort_by == "add_time":
            return fmt_v2(row.at)
        return self.tables[t].data(row).get(sort_by)

    def _cursor_key(self, t: str, sort_by: str, direction: str, cursor: str) -> tuple[Any, int]:
        obj = _unb64(cursor)
        if not isinstance(obj, dict) or not {"field", "fieldValue", "sortDirection", "id"} <= set(
            obj
        ):
            raise BadRequest("Invalid cursor")
        if obj["field"] != sort_by or obj["sortDirection"] != direction:
            raise BadRequest("Invalid cursor: it was made for another sort_by/sort_direction")
        rid, value = obj["id"], obj["fieldValue"]
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise BadRequest("Invalid cursor")
        try:
            if sort_by in ("update_time", "add_time"):
                key: Any = to_ms(parse_time(value, strict=True))
            elif sort_by == "id":
                if value != rid:
                    raise ValueError
                key = rid
            else:
                default = -1 if sort_by == "order_nr" else ""
                key = default if value is None else value
                if not isinstance(key, type(default)):
                    raise ValueError
        except (ValueError, TypeError) as exc:
            raise BadRequest("Invalid cursor") from exc
        return key, rid

    def _time_param(
        self, q: Mapping[str, str], name: str, allowed: bool, strict: bool
    ) -> int | None:
        raw = q.get(name)
        if not allowed or raw is None or raw == "":
            return None
        try:
            return to_ms(parse_time(raw, strict=strict))
        except ValueError:
            raise BadRequest(
                f"Validation failed: {name}: Invalid datetime, expected RFC 3339 (got {raw!r})"
            ) from None

    def _filters(
        self, t: str, table: Table, q: Mapping[str, str], allowed: Mapping[str, type]
    ) -> list[Callable[[Row], bool]]:
        preds: list[Callable[[Row], bool]] = []
        for name, kind in allowed.items():
            raw = q.get(name)
            if raw is None or raw == "":
                continue
            value: Any
            if kind is int:
                value = _int_param(q, name, None)
            elif kind is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise BadRequest(f"Validation failed: {name}: Expected boolean")
                value = raw.lower() in ("true", "1")
            else:
                value = raw

            def pred(r: Row, name: str = name, value: Any = value) -> bool:
                return table.data(r).get(name) == value

            preds.append(pred)
        return preds

    def _v2_list(self, t: str, partition: str, q: dict[str, str]) -> Response:
        spec = V2_LISTS[t]
        limit = _int_param(q, "limit", 100)
        assert limit is not None
        if limit < 1 or limit > MAX_LIMIT:
            raise BadRequest(
                f"Validation failed: limit: Number must be between 1 and {MAX_LIMIT} (got {limit})"
            )
        sort_by = q.get("sort_by") or "id"
        if sort_by not in spec.sort_by:
            raise BadRequest(
                f"Validation failed: sort_by: Invalid enum value. Expected {' | '.join(spec.sort_by)}"
            )
        direction = q.get("sort_direction") or "asc"
        if direction not in ("asc", "desc"):
            raise BadRequest("Validation failed: sort_direction: Expected 'asc' | 'desc'")
        since = self._time_param(q, "updated_since", spec.since, strict=True)
        until = self._time_param(q, "updated_until", spec.until, strict=True)
        table = self.tables[t]
        preds: list[Callable[[Row], bool]] = []
        if t == "deals":
            raw = q.get("status")
            wanted = {s.strip() for s in raw.split(",") if s.strip()} if raw else set()
            if wanted - set(DEAL_STATUSES):
                raise BadRequest(
                    f"Validation failed: status: Invalid enum value {sorted(wanted - set(DEAL_STATUSES))}"
                )
            statuses = frozenset(wanted or ("open", "won", "lost"))
            if statuses != frozenset(DEAL_STATUSES):
                preds.append(lambda r: r.status in statuses)
        if spec.ids and q.get("ids"):
            try:
                ids = {int(x) for x in q["ids"].split(",") if x.strip()}
            except ValueError:
                raise BadRequest(
                    "Validation failed: ids: Expected a comma separated list of numbers"
                ) from None
            preds.append(lambda r: r.id in ids)
        wanted_cf: list[str] | None = None
        if spec.custom_fields and q.get("custom_fields"):
            wanted_cf = [k.strip() for k in q["custom_fields"].split(",") if k.strip()]
        with self._lock:
            preds += self._filters(t, table, q, spec.filters)
            start_key = (
                self._cursor_key(t, sort_by, direction, q["cursor"]) if q.get("cursor") else None
            )
            pred = None
            if len(preds) == 1:
                pred = preds[0]
            elif preds:
                pred = lambda r: all(p(r) for p in preds)  # noqa: E731
            rows, nxt, _ = table.page(
                sort_by=sort_by,
                descending=direction == "desc",
                partition=partition,
                start_key=start_key,
                limit=limit,
                since=since,
                until=until,
                pred=pred,
            )
            chunks: list[bytes] = [b'{"success":true,"data":[']
            for n, r in enumerate(rows):
                if n:
                    chunks.append(b",")
                if wanted_cf is None:
                    chunks.append(table.blob(r))
                else:
                    d = table.served(r)
                    cf = d["custom_fields"]
                    d["custom_fields"] = {k: cf[k] for k in wanted_cf if k in cf}
                    chunks.append(orjson.dumps(d))
            next_cursor = None
            if nxt is not None:
                next_cursor = _b64(
                    {
                        "field": sort_by,
                        "fieldValue": self._cursor_value(t, sort_by, nxt),
                        "sortDirection": direction,
                        "id": nxt.id,
                    }
                )
        chunks.append(b'],"additional_data":{"next_cursor":')
        chunks.append(orjson.dumps(next_cursor) if next_cursor else b"null")
        chunks.append(b"}}")
        return Response(200, chunks)  # joined once, with the headers, when written

    def _v2_fields(self, entity: str, q: dict[str, str]) -> Response:
        limit = _int_param(q, "limit", 100)
        assert limit is not None
        if limit < 1 or limit > MAX_LIMIT:
            raise BadRequest(f"Validation failed: limit: Number must be between 1 and {MAX_LIMIT}")
        offset = 0
        if q.get("cursor"):
            obj = _unb64(q["cursor"])
            if (
                not isinstance(obj, dict)
                or obj.get("field") != "index"
                or not isinstance(obj.get("id"), int)
            ):
                raise BadRequest("Invalid cursor")
            offset = obj["id"]
        items = self.field_definitions(entity)
        page = items[offset : offset + limit]
        nxt = offset + limit
        cursor = (
            _b64({"field": "index", "fieldValue": nxt, "sortDirection": "asc", "id": nxt})
            if nxt < len(items)
            else None
        )
        return Response(
            200,
            orjson.dumps(
                {"success": True, "data": page, "additional_data": {"next_cursor": cursor}}
            ),
        )

    # ------------------------------------------------------------------ v1 lists

    def _v1_pagination(self, start: int, limit: int, more: bool) -> dict[str, Any]:
        pagination: dict[str, Any] = {
            "start": start,
            "limit": limit,
            "more_items_in_collection": more,
        }
        mode = self.v1_pagination_mode
        if (more and mode != "omit_next_start") or (not more and mode == "false_with_next_start"):
            pagination["next_start"] = start + limit
        return pagination

    def _v1_envelope(self, data: bytes | None, pagination: dict[str, Any]) -> Response:
        return Response(
            200,
            b'{"success":true,"data":'
            + (data if data is not None else b"null")
            + b',"additional_data":{"pagination":'
            + orjson.dumps(pagination)
            + b"}}",
        )

    def _v1_paging(self, q: Mapping[str, str]) -> tuple[int, int]:
        start = _int_param(q, "start", 0)
        limit = _int_param(q, "limit", 100)
        assert start is not None and limit is not None
        if start < 0:
            raise BadRequest("start must be 0 or more")
        if limit < 1:
            raise BadRequest("limit must be 1 or more")
        return start, min(limit, MAX_LIMIT)

    def _v1_list(self, t: str, partition: str, q: dict[str, str]) -> Response:
        start, limit = self._v1_paging(q)
        sort_by, descending = "seq", False
        if q.get("sort"):
            first = q["sort"].split(",")[0].strip().split()
            if not first or first[0] not in V1_SORTS[t] or len(first) > 2:
                raise BadRequest(f"Invalid sort field {q['sort']!r}")
            sort_by = first[0]
            if len(first) == 2:
                if first[1].upper() not in ("ASC", "DESC"):
                    raise BadRequest(f"Invalid sort direction {first[1]!r}")
                descending = first[1].upper() == "DESC"
        since_allowed = not (t == "leads" and partition == "archived")
        since = self._time_param(q, "updated_since", since_allowed, strict=False)
        table = self.tables[t]
        with self._lock:
            preds = self._filters(t, table, q, V1_FILTERS[t])
            pred = (lambda r: all(p(r) for p in preds)) if preds else None
            rows = table.listing(
                sort_by=sort_by, descending=descending, partition=partition, since=since, pred=pred
            )
            page = rows[start : start + limit]
            data = b"[" + table.join(page) + b"]" if page else None
        return self._v1_envelope(data, self._v1_pagination(start, limit, len(rows) > start + limit))

    def _v1_fields(self, entity: str, q: dict[str, str]) -> Response:
        items = self.field_definitions(entity)
        if entity == "notes":
            start, limit = 0, max(100, len(items))
        else:
            start, limit = self._v1_paging(q)
        page = items[start : start + limit]
        data = orjson.dumps(page) if page else None
        return self._v1_envelope(
            data, self._v1_pagination(start, limit, len(items) > start + limit)
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
