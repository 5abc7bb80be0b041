"""The HTTP side of the fake: routing, auth, limits, faults and the list endpoints.

`HttpApi` is a mixin of `FakePipedrive`; it reads the fake's tables, field registry, clock,
fault rules and counters, and never changes records.
"""

from __future__ import annotations

import base64
import calendar
import hmac
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import orjson

from . import jsonio
from .changelog import render as render_change
from .extras import GOAL_TYPES, PROJECT_STATUSES
from .fields import (
    CUSTOM_FIELD_ENTITIES,
    ENTITY_SINGULAR,
    FieldRegistry,
    fmt_v2,
)
from .oauth import AccessGrant, OAuthError, OAuthRegistry, parse_form
from .server import (
    ERROR_INFO,
    MAINTENANCE_HTML,
    UNAUTHORIZED_BODY,
    FaultRule,
    RateWindow,
    RequestRecord,
    Response,
    Restriction,
    fault_body,
    json_error,
)
from .spec import is_rfc3339
from .store import Row, Table
from .webhooks import WebhookHub, is_webhook_path, webhook_route
from .webhooks import handle as handle_webhooks

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
    "/v1/leads/{id}": 2,
    "/v1/notes/{id}": 2,
    "/v1/leadFields": 20,
    "/v1/noteFields": 20,
    "/api/v2/projectFields": 10,
    "/api/v2/projects": 10,
    "/api/v2/projects/archived": 10,
    "/api/v2/tasks": 10,
    "/api/v2/deals/products": 10,
    "/api/v2/deals/{id}/followers": 10,
    "/api/v2/persons/{id}/followers": 10,
    "/api/v2/organizations/{id}/followers": 10,
    "/api/v2/products/{id}/followers": 10,
    "/api/v2/deals/{id}/followers/changelog": 10,
    "/api/v2/persons/{id}/followers/changelog": 10,
    "/api/v2/organizations/{id}/followers/changelog": 10,
    "/api/v2/products/{id}/followers/changelog": 10,
    "/v1/deals/{id}/changelog": 20,
    "/v1/persons/{id}/changelog": 20,
    "/v1/organizations/{id}/changelog": 20,
    "/v1/users/me": 2,
    "/v1/users": 20,
    "/v1/activityTypes": 20,
    "/v1/currencies": 20,
    "/v1/leadLabels": 10,
    "/v1/leadSources": 2,
    "/v1/filters": 20,
    "/v1/files": 20,
    "/v1/goals/find": 20,
    "/v1/callLogs": 20,
    "/v1/roles": 20,
    "/v1/permissionSets": 20,
    "/v1/webhooks": 10,  # POST and DELETE: webhooks.WEBHOOK_ROUTES
}

# OAuth scopes each served GET accepts (any one of them): the spec's `security: oauth2`, plus
# SCOPE_EXTRAS (a test checks both against the spec)
ROUTE_SCOPES: dict[str, tuple[str, ...]] = {
    "/api/v2/deals": ("deals:read", "deals:full"),
    "/api/v2/deals/archived": ("deals:read", "deals:full"),
    "/api/v2/persons": ("contacts:read", "contacts:full"),
    "/api/v2/organizations": ("contacts:read", "contacts:full"),
    "/api/v2/activities": ("activities:read", "activities:full"),
    "/api/v2/products": ("products:read", "products:full"),
    "/api/v2/pipelines": ("deals:read", "deals:full", "admin"),
    "/api/v2/stages": ("deals:read", "deals:full", "admin"),
    "/api/v2/dealFields": ("deals:read", "deals:full", "admin", "deal-fields:full"),
    "/api/v2/personFields": ("contacts:read", "contacts:full", "admin", "contact-fields:full"),
    "/api/v2/organizationFields": (
        "contacts:read", "contacts:full", "admin", "contact-fields:full",
    ),
    "/api/v2/productFields": ("products:read", "products:full", "product-fields:full"),
    "/api/v2/activityFields": ("admin", "activities:read", "activities:full"),
    "/api/v2/projectFields": ("projects:read", "projects:full", "project-fields:full"),
    "/api/v2/deals/products": ("products:read", "products:full", "deals:read", "deals:full"),
    "/api/v2/projects": ("projects:read", "projects:full"),
    "/api/v2/projects/archived": ("projects:read", "projects:full"),
    "/api/v2/tasks": ("projects:read", "projects:full"),
    "/api/v2/deals/{id}/followers": ("deals:read", "deals:full"),
    "/api/v2/persons/{id}/followers": ("contacts:read", "contacts:full"),
    "/api/v2/organizations/{id}/followers": ("contacts:read", "contacts:full"),
    "/api/v2/products/{id}/followers": ("products:read", "products:full"),
    "/api/v2/deals/{id}/followers/changelog": ("deals:read", "deals:full"),
    "/api/v2/persons/{id}/followers/changelog": ("contacts:read", "contacts:full"),
    "/api/v2/organizations/{id}/followers/changelog": ("contacts:read", "contacts:full"),
    "/api/v2/products/{id}/followers/changelog": ("products:read", "products:full"),
    "/v1/deals/{id}/changelog": ("recents:read",),
    "/v1/persons/{id}/changelog": ("recents:read",),
    "/v1/organizations/{id}/changelog": ("recents:read",),
    "/v1/leads": ("leads:read", "leads:full"),
    "/v1/leads/archived": ("leads:read", "leads:full"),
    "/v1/notes": ("deals:read", "deals:full", "contacts:read", "contacts:full"),
    "/v1/leads/{id}": ("leads:read", "leads:full"),
    "/v1/notes/{id}": ("deals:read", "deals:full", "contacts:read", "contacts:full"),
    "/v1/leadFields": ("leads:read", "leads:full", "admin"),
    "/v1/noteFields": ("deals:read", "deals:full", "contacts:read", "contacts:full"),
    "/v1/users/me": ("base",),
    "/v1/users": ("users:read",),
    "/v1/activityTypes": ("activities:read", "activities:full", "admin"),
    "/v1/currencies": ("base",),
    "/v1/leadLabels": ("leads:read", "leads:full"),
    "/v1/leadSources": ("leads:read", "leads:full"),
    "/v1/filters": (
        "deals:read", "deals:full", "activities:read", "activities:full", "contacts:read",
        "contacts:full",
    ),
    "/v1/files": (
        "deals:read", "deals:full", "activities:read", "activities:full", "contacts:read",
        "contacts:full",
    ),
    "/v1/goals/find": ("goals:read", "goals:full"),
    "/v1/callLogs": ("phone-integration",),
    "/v1/roles": ("admin",),
    "/v1/permissionSets": ("admin",),
    "/v1/webhooks": ("admin",),
}  # fmt: skip
# scopes granted beyond the spec's `security`, with the reason
SCOPE_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "/api/v2/activityFields": (
        ("activities:read", "activities:full"),
        "the v2 spec lists only `admin`, but Pipedrive's scope documentation grants "
        "GET /activityFields to activities:read and activities:full",
    ),
}


# a path with a record id: (pattern, match → the spec's path template, handler(match, query))
PatternRoute = tuple[
    re.Pattern[str],
    Callable[[re.Match[str]], str],
    Callable[[re.Match[str], dict[str, str]], Response],
]


class BadRequest(Exception):
    pass


class NotFound(Exception):
    pass


class _V2List:
    """What the spec allows on one v2 list endpoint.

    sortable=False: the spec has no sort_by/sort_direction (they are ignored, id order).
    statuses: the `status` filter's values (the default leaves "deleted" out).
    members: filter parameter → list field that must contain the value (projects' deal_id).
    """

    def __init__(
        self,
        sort_by: tuple[str, ...] = ("id", "update_time", "add_time"),
        since: bool = True,
        until: bool = True,
        ids: bool = True,
        filters: Mapping[str, type] | None = None,
        custom_fields: bool = True,
        *,
        sortable: bool = True,
        statuses: tuple[str, ...] | None = None,
        members: Mapping[str, str] | None = None,
    ) -> None:
        self.sort_by = sort_by
        self.since = since
        self.until = until
        self.ids = ids
        self.filters = dict(filters or {})
        self.custom_fields = custom_fields
        self.sortable = sortable
        self.statuses = statuses
        self.members = dict(members or {})


V2_LISTS: dict[str, _V2List] = {
    "deals": _V2List(
        filters={
            "owner_id": int,
            "person_id": int,
            "org_id": int,
            "pipeline_id": int,
            "stage_id": int,
        },
        statuses=DEAL_STATUSES,
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
    "projects": _V2List(
        sort_by=("id",),
        since=False,
        until=False,
        ids=False,
        filters={"phase_id": int},
        custom_fields=False,
        sortable=False,
        statuses=PROJECT_STATUSES,
        members={"deal_id": "deal_ids", "person_id": "person_ids", "org_id": "org_ids"},
    ),
    "projects/archived": _V2List(
        sort_by=("id",),
        since=False,
        until=False,
        ids=False,
        filters={"phase_id": int},
        custom_fields=False,
        sortable=False,
        statuses=PROJECT_STATUSES,
    ),
    "tasks": _V2List(
        sort_by=("id",),
        since=False,
        until=False,
        ids=False,
        filters={"is_done": bool, "is_milestone": bool, "project_id": int},
        custom_fields=False,
        sortable=False,
        members={"assignee_id": "assignee_ids"},
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
    "files": {"id": None, "update_time": None},
}
V1_FILTERS: dict[str, dict[str, type]] = {
    "leads": {"owner_id": int, "person_id": int, "organization_id": int},
    "notes": {
        "user_id": int,
        "deal_id": int,
        "person_id": int,
        "org_id": int,
        "lead_id": str,
        "project_id": int,
        "task_id": int,
        "pinned_to_lead_flag": bool,
        "pinned_to_deal_flag": bool,
        "pinned_to_organization_flag": bool,
        "pinned_to_person_flag": bool,
        "pinned_to_project_flag": bool,
        "pinned_to_task_flag": bool,
    },
    "files": {},
    "call_logs": {},
    "roles": {},
}
V1_SINCE = ("leads", "notes")  # v1 lists with updated_since (not /leads/archived)
V1_MAX_LIMIT = {"files": 100, "call_logs": 50}  # larger limits are cut to these
# goals/find parameters after which "everyone's goals" are returned (else only yours)
GOAL_EVERYONE_PARAMS = (
    "type.name",
    "assignee.type",
    "expected_outcome.target",
    "expected_outcome.tracking_metric",
    "expected_outcome.currency_id",
    "type.params.pipeline_id",
    "type.params.stage_id",
    "type.params.activity_type_id",
)
FOLLOWER_PATH = re.compile(
    r"^/api/v2/(deals|persons|organizations|products)/([^/]+)/followers(/changelog)?$"
)
CHANGELOG_PATH = re.compile(r"^/v1/(deals|persons|organizations)/([^/]+)/changelog$")
V1_RECORD_PATH = re.compile(r"^/v1/(leads|notes)/([^/]+)$")  # one record (exact paths first)
MAX_DEAL_IDS = 100
INVALID_TOKEN_BODY = orjson.dumps(
    {
        "success": False,
        "error": "Invalid token: access token is invalid",
        "errorCode": 401,
        "error_info": ERROR_INFO,
    }
)


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
    _pattern_routes: list[PatternRoute]
    _restrictions: list[Restriction]
    oauth: OAuthRegistry
    company: dict[str, Any]
    webhooks: WebhookHub

    def field_definitions(self, entity: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _attachments(self, deal_id: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def followers(self, entity: str, id: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def follower_changelog(self, entity: str, id: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _changelog_state(self, entity: str, id: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
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
                body=getattr(h, "body", b"") or b"",
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
        if path.startswith("/oauth/"):
            return self._oauth_respond(method, path, rec)
        over, rl_headers, reset = self._window.hit()
        common = [("Date", formatdate(self._now_ms / 1000, usegmt=True)), *rl_headers]
        fault = self._take_fault(path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "stall":
                self._stop.wait(fault.delay)
            elif fault.kind not in ("malformed", "bom"):
                response = self._fault_response(fault)
                response.headers = common + response.headers
                return response
        response = self._serve(method, path, query, rec, over, reset)
        if fault is not None and fault.kind == "malformed":
            raw = fault_body(fault.body)[0] if fault.body is not None else response.payload
            response = Response(200, raw[: max(1, len(raw) // 2)])
        elif fault is not None and fault.kind == "bom":
            response.body = b"\xef\xbb\xbf" + response.payload
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
        grant: AccessGrant | None = None
        if authorized:
            rec.auth = "api_token"
        elif "authorization" in rec.headers:
            scheme, _, credential = rec.headers["authorization"].strip().partition(" ")
            rec.auth = "bearer"
            if scheme.lower() != "bearer" or not credential.strip():
                return json_error(400, "Invalid request: malformed authorization header")
            grant = self.oauth.authenticate(credential.strip(), self._now_ms)
            if grant is None:
                return Response(401, INVALID_TOKEN_BODY)
        else:
            if "x-api-token" in rec.headers or "api_token" in query:
                rec.auth = "api_token"
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
        found = self._route(method, path, rec, grant)
        if isinstance(found, Response):
            return found
        route, needed = found
        if (
            grant is not None
            and route is not None
            and needed
            and not grant.scopes.intersection(needed)
        ):
            return self._scope_mismatch(method, path, needed, grant)
        with self._lock:
            restriction = next((r for r in self._restrictions if r.matches(path)), None)
        if restriction is not None:
            return restriction.response()
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
        except NotFound as exc:
            return json_error(404, str(exc), "ERR_NOT_FOUND")

    def _route(
        self, method: str, path: str, rec: RequestRecord, grant: AccessGrant | None
    ) -> tuple[tuple[int, Callable[[dict[str, str]], Response]] | None, tuple[str, ...]] | Response:
        """((cost, handler) or None when unknown, the OAuth scopes it needs) of a request."""
        if is_webhook_path(path):
            found = webhook_route(method, path)
            if isinstance(found, Response):
                return found
            _template, cost, scopes = found
            handler = partial(
                handle_webhooks, self.webhooks, self.company["id"], method, path, rec, grant
            )
            return (cost, handler), scopes
        if method != "GET":
            return json_error(405, f"The fake serves GET only, not {method}")
        route = self._routes.get(path)
        template = path
        if route is None:
            for pattern, make, pattern_handler in self._pattern_routes:
                m = pattern.match(path)
                if m is not None:
                    template = make(m)
                    route = (TOKEN_COSTS[template], partial(pattern_handler, m))
                    break
        return route, ROUTE_SCOPES.get(template, ())

    @staticmethod
    def _scope_mismatch(
        method: str, path: str, needed: tuple[str, ...], grant: AccessGrant
    ) -> Response:
        body = {
            "success": False,
            "error": "Scope and URL mismatch",
            "errorCode": 403,
            "error_info": "Not allowed to access requested resource by application scope that "
            f"is defined by owner: {method} {path} needs one of {', '.join(needed)}; the token "
            f"has {', '.join(sorted(grant.scopes))}",
            "data": None,
            "additional_data": None,
        }
        return Response(403, orjson.dumps(body))

    def _oauth_respond(self, method: str, path: str, rec: RequestRecord) -> Response:
        """POST /oauth/token (Pipedrive's is on oauth.pipedrive.com; here on the same server).
        Faults apply; the API's rate window, budget and restrictions do not."""
        common = [("Date", formatdate(self._now_ms / 1000, usegmt=True))]
        fault = self._take_fault(path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "stall":
                self._stop.wait(fault.delay)
            elif fault.kind != "malformed":
                response = self._fault_response(fault)
                response.headers = common + response.headers
                return response
        response = self._oauth_token(method, path, rec)
        if fault is not None and fault.kind == "malformed":
            response = Response(200, response.payload[: max(1, len(response.payload) // 2)])
        response.headers = [*common, ("Cache-Control", "no-store"), *response.headers]
        return response

    def _oauth_token(self, method: str, path: str, rec: RequestRecord) -> Response:
        if path.rstrip("/") != "/oauth/token":
            return Response(404, orjson.dumps({"success": False, "message": "Not found"}))
        if method != "POST":
            return Response(405, orjson.dumps({"success": False, "message": "Method not allowed"}))
        ctype = rec.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype != "application/x-www-form-urlencoded":
                raise OAuthError(
                    400,
                    "invalid_request",
                    "Invalid request: content must be application/x-www-form-urlencoded",
                )
            body = self.oauth.token_request(
                parse_form(rec.body),
                rec.headers.get("authorization"),
                self._now_ms,
                self.base_url,
            )
        except OAuthError as exc:
            return Response(exc.status, orjson.dumps(exc.body()))
        return Response(200, orjson.dumps(body))

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
        extra: dict[str, Callable[[dict[str, str]], Response]] = {
            "/api/v2/projects": partial(self._v2_list, "projects", "live"),
            "/api/v2/projects/archived": partial(self._v2_list, "projects", "archived"),
            "/api/v2/tasks": partial(self._v2_list, "tasks", "live"),
            "/api/v2/deals/products": self._v2_deal_products,
            "/v1/users/me": self._v1_users_me,
            "/v1/users": partial(self._v1_plain, "users", None),
            "/v1/activityTypes": partial(self._v1_plain, "activity_types", None),
            "/v1/currencies": partial(self._v1_plain, "currencies", _currency_pred),
            "/v1/leadLabels": partial(self._v1_plain, "lead_labels", None),
            "/v1/leadSources": partial(self._v1_plain, "lead_sources", None),
            "/v1/filters": partial(self._v1_plain, "filters", _filter_pred),
            "/v1/permissionSets": partial(self._v1_plain, "permission_sets", _app_pred),
            "/v1/files": partial(self._v1_list, "files", "live"),
            "/v1/callLogs": partial(self._v1_list, "call_logs", "live"),
            "/v1/roles": partial(self._v1_list, "roles", "live"),
            "/v1/goals/find": self._v1_goals,
        }
        for p, handler in extra.items():
            routes[p] = (TOKEN_COSTS[p], handler)
        return routes

    def _make_pattern_routes(self) -> list[PatternRoute]:
        """Paths with a record id: (pattern, match → the spec's path template, handler)."""

        def follower_template(m: re.Match[str]) -> str:
            return f"/api/v2/{m.group(1)}/{{id}}/followers" + (m.group(3) or "")

        def changelog_template(m: re.Match[str]) -> str:
            return f"/v1/{m.group(1)}/{{id}}/changelog"

        def record_template(m: re.Match[str]) -> str:
            return f"/v1/{m.group(1)}/{{id}}"

        return [
            (FOLLOWER_PATH, follower_template, self._v2_record_list),
            (CHANGELOG_PATH, changelog_template, self._v1_changelog),
            (V1_RECORD_PATH, record_template, self._v1_record),
        ]

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
        spec = V2_LISTS.get(f"{t}/{partition}") or V2_LISTS[t]
        limit, sort_by, direction = _v2_order(spec, q)
        since = self._time_param(q, "updated_since", spec.since, strict=True)
        until = self._time_param(q, "updated_until", spec.until, strict=True)
        table = self.tables[t]
        preds = _v2_preds(t, table, spec, q)
        wanted_cf: list[str] | None = None
        if spec.custom_fields and q.get("custom_fields"):
            wanted_cf = [k.strip() for k in q["custom_fields"].split(",") if k.strip()]
        with self._lock:
            preds += self._filters(t, table, q, spec.filters)
            start_key = (
                self._cursor_key(t, sort_by, direction, q["cursor"]) if q.get("cursor") else None
            )
            rows, nxt, _ = table.page(
                sort_by=sort_by,
                descending=direction == "desc",
                partition=partition,
                start_key=start_key,
                limit=limit,
                since=since,
                until=until,
                pred=_all_of(preds),
            )
            chunks = _v2_items(table, rows, wanted_cf)
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
        return self._v2_offset_page(self.field_definitions(entity), q)

    def _v2_offset_page(self, items: list[dict[str, Any]], q: Mapping[str, str]) -> Response:
        """A v2 page of a small list held in memory (cursor: the next item's index)."""
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
        page = items[offset : offset + limit]
        nxt = offset + limit
        cursor = (
            _b64({"field": "index", "fieldValue": nxt, "sortDirection": "asc", "id": nxt})
            if nxt < len(items)
            else None
        )
        return Response(
            200,
            jsonio.dumps(
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

    def _v1_paging(self, q: Mapping[str, str], max_limit: int = MAX_LIMIT) -> tuple[int, int]:
        start = _int_param(q, "start", 0)
        limit = _int_param(q, "limit", min(100, max_limit))
        assert start is not None and limit is not None
        if start < 0:
            raise BadRequest("start must be 0 or more")
        if limit < 1:
            raise BadRequest("limit must be 1 or more")
        return start, min(limit, max_limit)

    def _v1_list(self, t: str, partition: str, q: dict[str, str]) -> Response:
        start, limit = self._v1_paging(q, V1_MAX_LIMIT.get(t, MAX_LIMIT))
        sort_by, descending = "seq", False
        if q.get("sort") and V1_SORTS.get(t):
            first = q["sort"].split(",")[0].strip().split()
            if not first or first[0] not in V1_SORTS[t] or len(first) > 2:
                raise BadRequest(f"Invalid sort field {q['sort']!r}")
            sort_by = first[0]
            if len(first) == 2:
                if first[1].upper() not in ("ASC", "DESC"):
                    raise BadRequest(f"Invalid sort direction {first[1]!r}")
                descending = first[1].upper() == "DESC"
        since_allowed = t in V1_SINCE and partition == "live"
        since = self._time_param(q, "updated_since", since_allowed, strict=False)
        table = self.tables[t]
        with self._lock:
            preds = self._filters(t, table, q, V1_FILTERS[t])
            if t == "notes":
                for name, op in (("start_date", "ge"), ("end_date", "le")):
                    day = q.get(name)
                    if day:
                        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                            raise BadRequest(f"Validation failed: {name}: Expected YYYY-MM-DD")
                        preds.append(_day_pred(table, day, op == "ge"))
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
        data = jsonio.dumps(page) if page else None
        return self._v1_envelope(
            data, self._v1_pagination(start, limit, len(items) > start + limit)
        )

    def _v1_plain(
        self,
        t: str,
        make_pred: Callable[[Mapping[str, str]], Callable[[dict[str, Any]], bool] | None] | None,
        q: dict[str, str],
    ) -> Response:
        """A v1 list without pagination: `{"success": true, "data": [...]}` ([] when empty)."""
        pred = make_pred(q) if make_pred is not None else None
        table = self.tables[t]
        with self._lock:
            rows = table.listing(sort_by="seq", descending=False, partition="live")
            if pred is not None:
                rows = [r for r in rows if pred(table.data(r))]
            data = b"[" + table.join(rows) + b"]"
        return Response(200, b'{"success":true,"data":' + data + b"}")

    def _v1_users_me(self, q: dict[str, str]) -> Response:
        table = self.tables["users"]
        with self._lock:
            row = (
                next((r for r in table.by_seq if table.data(r).get("is_you")), None)
                or table.by_seq[0]
            )
            me = table.served(row)
        c = self.company
        lang, _, country = me["locale"].partition("_")
        me.update(
            company_id=c["id"],
            company_name=c["name"],
            company_domain=c["domain"],
            company_country=c["country"],
            company_industry=c["industry"],
            language={"language_code": lang, "country_code": country or None},
        )
        return Response(200, orjson.dumps({"success": True, "data": me}))

    def _v1_goals(self, q: dict[str, str]) -> Response:
        """/v1/goals/find: `data.goals`, no pagination. Without any of GOAL_EVERYONE_PARAMS or
        assignee.id only "your" goals (assigned to the user with is_you) are returned."""
        raw_active = (q.get("is_active") or "true").lower()
        if raw_active not in ("true", "false", "1", "0"):
            raise BadRequest("Validation failed: is_active: Expected boolean")
        active = raw_active in ("true", "1")
        gtype = q.get("type.name")
        if gtype and gtype not in GOAL_TYPES:
            raise BadRequest(f"Validation failed: type.name: Expected {' | '.join(GOAL_TYPES)}")
        assignee_id = _int_param(q, "assignee.id", None)
        assignee_type = q.get("assignee.type")
        if assignee_type and assignee_type not in ("person", "company", "team"):
            raise BadRequest("Validation failed: assignee.type: Expected person | company | team")
        everyone = any(q.get(p) for p in GOAL_EVERYONE_PARAMS)
        start, end = q.get("period.start"), q.get("period.end")
        if bool(start) != bool(end):
            raise BadRequest("period.start and period.end must be given together")
        title = q.get("title")

        def keep(g: dict[str, Any]) -> bool:
            a = g["assignee"]
            if g["is_active"] != active:
                return False
            if gtype and g["type"]["name"] != gtype:
                return False
            if assignee_type and a["type"] != assignee_type:
                return False
            if assignee_id is not None:
                if a["id"] != assignee_id:
                    return False
            elif not everyone and not (a["type"] == "person" and a["id"] == 1):
                return False
            if title and g["title"] != title:
                return False
            if start and end:
                d = g["duration"]
                if d["end"] < start or d["start"] > end:
                    return False
            return True

        table = self.tables["goals"]
        with self._lock:
            rows = table.listing(sort_by="seq", descending=False, partition="live")
            goals = b",".join(table.blob(r) for r in rows if keep(table.data(r)))
        return Response(
            200,
            b'{"success":true,"statusCode":20000,"statusText":"OK",'
            b'"service":"statistics-goals-api","data":{"goals":[' + goals + b"]}}",
        )

    # ------------------------------------------------------------------ v2: deal products, followers

    def _v2_deal_products(self, q: dict[str, str]) -> Response:
        raw = q.get("deal_ids")
        if not raw:
            raise BadRequest("Validation failed: deal_ids: Required")
        try:
            deal_ids = list(dict.fromkeys(int(x) for x in raw.split(",") if x.strip()))
        except ValueError:
            raise BadRequest(
                "Validation failed: deal_ids: Expected a comma separated list of numbers"
            ) from None
        if not deal_ids:
            raise BadRequest("Validation failed: deal_ids: Required")
        if len(deal_ids) > MAX_DEAL_IDS:
            raise BadRequest(
                f"Validation failed: deal_ids: Array must contain at most {MAX_DEAL_IDS} "
                f"element(s) (got {len(deal_ids)})"
            )
        limit = _int_param(q, "limit", 100)
        assert limit is not None
        if limit < 1 or limit > MAX_LIMIT:
            raise BadRequest(f"Validation failed: limit: Number must be between 1 and {MAX_LIMIT}")
        sorts = ("id", "deal_id", "add_time", "update_time", "order_nr")
        sort_by = q.get("sort_by") or "id"
        if sort_by not in sorts:
            raise BadRequest(
                f"Validation failed: sort_by: Invalid enum value. Expected {' | '.join(sorts)}"
            )
        direction = q.get("sort_direction") or "asc"
        if direction not in ("asc", "desc"):
            raise BadRequest("Validation failed: sort_direction: Expected 'asc' | 'desc'")

        def key(a: dict[str, Any]) -> tuple[Any, int]:
            v = a[sort_by]
            return (-1 if v is None else v) if sort_by == "order_nr" else v, a["id"]

        with self._lock:
            items = [dict(a) for d in deal_ids for a in self._attachments(d)]
        items.sort(key=key, reverse=direction == "desc")
        if q.get("cursor"):
            obj = _unb64(q["cursor"])
            if (
                not isinstance(obj, dict)
                or obj.get("field") != sort_by
                or obj.get("sortDirection") != direction
                or not isinstance(obj.get("id"), int)
            ):
                raise BadRequest("Invalid cursor")
            value = obj.get("fieldValue")
            mark = ((-1 if value is None else value) if sort_by == "order_nr" else value, obj["id"])
            try:
                if direction == "asc":
                    items = [a for a in items if key(a) >= mark]
                else:
                    items = [a for a in items if key(a) <= mark]
            except TypeError:
                raise BadRequest("Invalid cursor") from None
        page, rest = items[:limit], items[limit:]
        cursor = None
        if rest:
            nxt = rest[0]
            cursor = _b64(
                {
                    "field": sort_by,
                    "fieldValue": nxt[sort_by],
                    "sortDirection": direction,
                    "id": nxt["id"],
                }
            )
        return Response(
            200,
            jsonio.dumps(
                {"success": True, "data": page, "additional_data": {"next_cursor": cursor}}
            ),
        )

    def _v2_record_list(self, m: re.Match[str], q: dict[str, str]) -> Response:
        """/api/v2/{entity}/{id}/followers and .../followers/changelog."""
        entity, raw_id, changelog = m.group(1), m.group(2), m.group(3)
        try:
            rid = int(raw_id)
        except ValueError:
            raise BadRequest("Validation failed: id: Expected number, received string") from None
        with self._lock:
            if rid not in self.tables[entity].rows:
                raise NotFound(f"{ENTITY_SINGULAR[entity].capitalize()} not found")
            items = (
                self.follower_changelog(entity, rid) if changelog else self.followers(entity, rid)
            )
        return self._v2_offset_page(items, q)

    def _v1_record(self, m: re.Match[str], q: dict[str, str]) -> Response:
        """GET /v1/leads/{id} (archived ones too; a deleted lead is 404, as the spec lists)
        and /v1/notes/{id} (a deleted note comes back with `active_flag: false`)."""
        t, raw_id = m.group(1), m.group(2)
        rid: Any = raw_id
        if t == "notes":
            try:
                rid = int(raw_id)
            except ValueError:
                raise BadRequest("Validation failed: id: Expected number") from None
        with self._lock:
            table = self.tables[t]
            row = table.rows.get(rid)
            if row is None or (t == "leads" and row.deleted):
                raise NotFound(f"{ENTITY_SINGULAR[t].capitalize()} not found")
            data = table.served(row)
        return Response(200, orjson.dumps({"success": True, "data": data}))

    def _v1_changelog(self, m: re.Match[str], q: dict[str, str]) -> Response:
        """/v1/{deals,persons,organizations}/{id}/changelog: newest first; the cursor is, like
        Pipedrive's, base64 of "id:<entry id>" (the first entry of the next page)."""
        entity, raw_id = m.group(1), m.group(2)
        try:
            rid = int(raw_id)
        except ValueError:
            raise BadRequest("Validation failed: id: Expected number, received string") from None
        limit = _int_param(q, "limit", 100)
        assert limit is not None
        if limit < 1:
            raise BadRequest("Validation failed: limit: Number must be greater than 0")
        limit = min(limit, MAX_LIMIT)
        below: int | None = None
        if q.get("cursor"):
            below = _changelog_cursor(q["cursor"])
        with self._lock:
            if rid not in self.tables[entity].rows:
                raise NotFound(f"{ENTITY_SINGULAR[entity].capitalize()} not found")
            log = self._changelog_state(entity, rid)
            end = len(log)
            if below is not None:  # entries are numbered 1, 2, ... in order
                end = max(0, min(end, below))
            page = [render_change(e) for e in reversed(log[max(0, end - limit) : end])]
            nxt = log[end - limit - 1]["seq"] if end - limit > 0 else None
        cursor = base64.b64encode(f"id:{nxt}".encode()).decode() if nxt is not None else None
        return Response(
            200,
            jsonio.dumps(
                {"success": True, "data": page, "additional_data": {"next_cursor": cursor}}
            ),
        )


def _changelog_cursor(text: str) -> int:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode()
        kind, _, value = raw.partition(":")
        if kind != "id" or not value.isdigit():
            raise ValueError(raw)
        return int(value)
    except ValueError:
        raise BadRequest("Invalid cursor") from None


def _member_pred(table: Table, list_field: str, value: int) -> Callable[[Row], bool]:
    return lambda r: value in (table.data(r).get(list_field) or ())


def _day_pred(table: Table, day: str, on_or_after: bool) -> Callable[[Row], bool]:
    if on_or_after:
        return lambda r: table.data(r)["add_time"][:10] >= day
    return lambda r: table.data(r)["add_time"][:10] <= day


def _currency_pred(q: Mapping[str, str]) -> Callable[[dict[str, Any]], bool] | None:
    term = (q.get("term") or "").strip().lower()
    if not term:
        return None
    return lambda d: term in d["code"].lower() or term in d["name"].lower()


def _filter_pred(q: Mapping[str, str]) -> Callable[[dict[str, Any]], bool] | None:
    wanted = q.get("type")
    if not wanted:
        return None
    known = ("deals", "leads", "org", "people", "products", "activity", "projects")
    if wanted not in known:
        raise BadRequest(f"Validation failed: type: Expected {' | '.join(known)}")
    return lambda d: d["type"] == wanted


def _app_pred(q: Mapping[str, str]) -> Callable[[dict[str, Any]], bool] | None:
    app = q.get("app")
    if not app:
        return None
    known = ("sales", "projects", "campaigns", "global", "account_settings", "partnership", "nova")
    if app not in known:
        raise BadRequest(f"Validation failed: app: Expected {' | '.join(known)}")
    return lambda d: d["app"] == app


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _v2_order(spec: _V2List, q: Mapping[str, str]) -> tuple[int, str, str]:
    """A v2 list's `limit`, `sort_by` and `sort_direction`, validated as Pipedrive does."""
    limit = _int_param(q, "limit", 100)
    assert limit is not None
    if limit < 1 or limit > MAX_LIMIT:
        raise BadRequest(
            f"Validation failed: limit: Number must be between 1 and {MAX_LIMIT} (got {limit})"
        )
    sort_by = (q.get("sort_by") or "id") if spec.sortable else "id"
    if sort_by not in spec.sort_by:
        raise BadRequest(
            f"Validation failed: sort_by: Invalid enum value. Expected {' | '.join(spec.sort_by)}"
        )
    direction = (q.get("sort_direction") or "asc") if spec.sortable else "asc"
    if direction not in ("asc", "desc"):
        raise BadRequest("Validation failed: sort_direction: Expected 'asc' | 'desc'")
    return limit, sort_by, direction


def _v2_status_pred(known: tuple[str, ...], q: Mapping[str, str]) -> Callable[[Row], bool] | None:
    """The `status` filter of a list that has one (by default every status but deleted)."""
    raw = q.get("status")
    wanted = {s.strip() for s in raw.split(",") if s.strip()} if raw else set()
    if wanted - set(known):
        raise BadRequest(
            f"Validation failed: status: Invalid enum value {sorted(wanted - set(known))}"
        )
    statuses = frozenset(wanted or (s for s in known if s != "deleted"))
    if statuses == frozenset(known):
        return None
    return lambda r: r.status in statuses


def _v2_ids(raw: str) -> set[int]:
    try:
        return {int(x) for x in raw.split(",") if x.strip()}
    except ValueError:
        raise BadRequest(
            "Validation failed: ids: Expected a comma separated list of numbers"
        ) from None


def _v2_preds(
    t: str, table: Table, spec: _V2List, q: Mapping[str, str]
) -> list[Callable[[Row], bool]]:
    """The row filters a v2 list's parameters ask for (the entity filters come later)."""
    preds: list[Callable[[Row], bool]] = []
    status = _v2_status_pred(spec.statuses, q) if spec.statuses else None
    if status is not None:
        preds.append(status)
    for param, list_field in spec.members.items():
        member = _int_param(q, param, None)
        if member is not None:
            preds.append(_member_pred(table, list_field, member))
    if t == "tasks" and q.get("parent_task_id"):
        raw_parent = q["parent_task_id"]
        parent = None if raw_parent == "null" else _int_param(q, "parent_task_id", None)
        preds.append(lambda r: table.data(r).get("parent_task_id") == parent)
    if spec.ids and q.get("ids"):
        ids = _v2_ids(q["ids"])
        preds.append(lambda r: r.id in ids)
    return preds


def _all_of(preds: list[Callable[[Row], bool]]) -> Callable[[Row], bool] | None:
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]
    return lambda r: all(p(r) for p in preds)


def _v2_items(table: Table, rows: list[Row], wanted_cf: list[str] | None) -> list[bytes]:
    """The start of a v2 list body up to its items (only the wanted custom fields, if named)."""
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
            chunks.append(jsonio.dumps(d))
    return chunks
