"""Pipedrive webhooks v2 in the fake: `/v1/webhooks` registrations and delivery of the events.

Every change the fake makes (`add`, `update`, `delete`, `archive`, `merge`, deal products)
becomes one event per matching registration, POSTed as JSON by background sender threads to
the registration's `subscription_url` (HTTP Basic auth when `http_auth_user` is set), under
Pipedrive's documented policy (see WEBHOOKS.md for the sources):

* success is a 2xx within `timeout` (10 s); otherwise 3 more attempts after 3, 30 and 150 s
  (`meta.attempt` 1-4, the same `meta.id`), then the event is dropped;
* every failed *first* attempt adds one to the webhook's ban counter; at 10 the webhook is
  banned for 30 minutes: its pending retries and the events of the ban are lost; the counter
  is back at zero when the ban ends;
* a webhook that has had no successful delivery for 3 days when an attempt fails is deleted.

Times follow `WebhookPolicy`: the wall clock scaled by `time_scale` (0.001: a 30 min ban is
1.8 s), or the fake clock (`clock="fake"`: retries wait for `fake.advance()`).

Test controls: `pause()`/`resume(order=...)` hold deliveries and release them in another
order, `add_fault(WebhookFault(...))` fails, delays or duplicates deliveries,
`deliveries()` shows what was sent, delivered, dropped or lost, and `wait()` /
`wait_until()` block until the queue is drained (no sleeping in tests).
"""

from __future__ import annotations

import base64
import copy
import heapq
import http.client
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from .fields import FieldDef
from .oauth import parse_form
from .server import Response
from .webhook_payloads import (
    WEBHOOK_ENTITIES,
    changed_fields,
    event_timestamp,
    permitted_user_ids,
    webhook_data,
)

if TYPE_CHECKING:
    from .oauth import AccessGrant
    from .server import RequestRecord

EVENT_ACTIONS = ("create", "change", "delete", "*")
# the v1 spec's `event_object` values, plus the objects added in 2026 (changelog, WEBHOOKS.md)
EVENT_OBJECTS = (
    "activity", "deal", "lead", "note", "organization", "person", "pipeline", "product", "stage",
    "user", "deal_product", "deal_installment", "project", "task", "board", "phase", "*",
)  # fmt: skip
VERSIONS = ("1.0", "2.0")
MAX_PER_USER = 40
ADMIN_USER_ID = 1  # the token's user (`is_you`), owner of every webhook it creates
USER_AGENT = "Pipedrive-Webhook"
# (method, path template) → (x-token-cost, OAuth scopes), as the v1 spec says
WEBHOOK_ROUTES: dict[tuple[str, str], tuple[int, tuple[str, ...]]] = {
    ("GET", "/v1/webhooks"): (10, ("admin",)),
    ("POST", "/v1/webhooks"): (10, ("admin",)),
    ("DELETE", "/v1/webhooks/{id}"): (6, ("admin",)),
}
FAULT_KINDS = ("fail", "delay", "duplicate")
PENDING, DELIVERED, DROPPED, LOST = "pending", "delivered", "dropped", "lost"


class WebhookError(ValueError):
    """A registration Pipedrive would refuse: `errors` is the 400 body's `errors` object."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass
class WebhookPolicy:
    """Pipedrive's delivery rules, and how the fake measures their times.

    clock="wall": a policy second lasts `time_scale` wall seconds; clock="fake": they are the
    fake's clock (`FakePipedrive.now`), so retries, bans and the 3-day rule wait for
    `advance()`. `timeout` is always wall seconds. `senders`: parallel delivery threads
    (1 keeps deliveries in event order unless a fault reorders them).
    """

    retry_delays: tuple[float, ...] = (3.0, 30.0, 150.0)
    timeout: float = 10.0
    ban_after: int = 10
    ban_seconds: float = 1800.0
    delete_after: float = 3 * 86_400.0
    time_scale: float = 1.0
    clock: str = "wall"
    senders: int = 1

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "fake"):
            raise ValueError("clock is 'wall' or 'fake'")
        if self.time_scale <= 0 or self.timeout <= 0 or self.senders < 1:
            raise ValueError("time_scale and timeout must be positive, senders at least 1")


@dataclass
class Webhook:
    """One registration (what GET /v1/webhooks lists, plus the delivery state)."""

    id: int
    user_id: int
    owner_id: int
    event_action: str
    event_object: str
    subscription_url: str
    name: str
    version: str
    http_auth_user: str | None
    http_auth_password: str | None
    app: str | None  # the OAuth app that created it (type "application"); None: "general"
    add_ms: int  # fake clock
    created: float  # policy clock
    last_success: float | None = None
    last_delivery_ms: int | None = None
    last_http_status: int | None = None
    ban_counter: int = 0
    banned_until: float | None = None
    bans: int = 0
    removed: str | None = None  # why it was deleted (None: it is not)

    @property
    def type(self) -> str:
        return "general" if self.app is None else "application"

    def matches(self, entity: str, action: str) -> bool:
        return self.event_action in ("*", action) and self.event_object in ("*", entity)

    def banned(self, now: float) -> bool:
        """True during a ban; a ban that is over resets the ban counter."""
        if self.banned_until is None:
            return False
        if now < self.banned_until:
            return True
        self.banned_until = None
        self.ban_counter = 0
        return False

    def render(self, company_id: int) -> dict[str, Any]:
        """The webhook object of the v1 API (BaseWebhook)."""
        last = self.last_delivery_ms
        return {
            "id": self.id,
            "company_id": company_id,
            "owner_id": self.owner_id,
            "user_id": self.user_id,
            "event_action": self.event_action,
            "event_object": self.event_object,
            "subscription_url": self.subscription_url,
            "version": self.version,
            "is_active": 1,
            "add_time": event_timestamp(self.add_ms),
            "remove_time": None,
            "type": self.type,
            "http_auth_user": self.http_auth_user,
            "http_auth_password": self.http_auth_password,
            "remove_reason": None,
            "last_delivery_time": event_timestamp(last) if last is not None else None,
            "last_http_status": self.last_http_status,
            "admin_id": self.owner_id,
            "name": self.name,
        }


@dataclass
class Attempt:
    """One POST of an event (or a fault standing in for it)."""

    n: int  # meta.attempt: 1 is the first try, 2-4 the retries
    ok: bool
    status: int | None  # the HTTP status (None: no answer)
    error: str | None  # why it failed ("HTTP 500", "timeout", "ConnectionRefusedError: ...")
    at_ms: int  # fake clock
    fault: str | None = None  # the WebhookFault kind that shaped it
    duplicate: bool = False  # a second copy of a delivered attempt


@dataclass
class WebhookDelivery:
    """One event for one webhook: its body and what became of it.

    state: "pending" (queued or in flight), "delivered", "dropped" (retries exhausted, or
    the webhook was deleted) or "lost" (the webhook was banned); `reason` says why.
    """

    seq: int
    webhook_id: int
    entity: str
    action: str
    entity_id: str
    event_id: str
    body: dict[str, Any]  # as sent on the first attempt
    state: str = PENDING
    reason: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    def payload(self, attempt: int) -> dict[str, Any]:
        """The body of attempt `attempt` (only `meta.attempt` differs)."""
        return {**self.body, "meta": {**self.body["meta"], "attempt": attempt}}

    @property
    def sent(self) -> int:
        """POSTs that reached (or tried to reach) the subscription URL."""
        return sum(1 for a in self.attempts if a.fault != "fail")


@dataclass
class WebhookFault:
    """Make matching deliveries misbehave (`entity`/`action`: None matches any).

    kind: fail | delay | duplicate
      fail       the attempt is not sent and counts as failed (`status`, default none: as if
                 the URL refused the connection); `attempt` limits it to one attempt number
      delay      the first attempt waits `delay` more policy seconds (later events overtake it)
      duplicate  a delivered attempt is POSTed a second time (same meta.id and attempt)
    after: let the first `after` matching attempts through; times: how many to affect (None:
    all).
    """

    kind: str
    entity: str | None = None
    action: str | None = None
    attempt: int | None = None
    times: int | None = 1
    after: int = 0
    delay: float = 0.0
    status: int | None = None
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown webhook fault {self.kind!r}; known: {FAULT_KINDS}")

    def take(self, kind: str, d: WebhookDelivery, n: int) -> bool:
        if kind != self.kind or self.entity not in (None, d.entity):
            return False
        if self.action not in (None, d.action) or self.attempt not in (None, n):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    delivery: WebhookDelivery = field(compare=False)
    attempt: int = field(compare=False)


def _basic_auth(user: str, password: str | None) -> str:
    raw = f"{user}:{password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def post(url: str, body: bytes, auth: str | None, timeout: float) -> tuple[int | None, str | None]:
    """POST `body` as JSON: (status, None) or (None, why it failed). Redirects are not followed."""
    parts = urlsplit(url)
    conn_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_class(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if auth is not None:
        headers["Authorization"] = auth
    started = time.monotonic()
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
    except TimeoutError:
        return None, "timeout"
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if time.monotonic() - started > timeout:
        return response.status, "timeout"
    return response.status, None


def _outcome(status: int | None, error: str | None) -> tuple[int | None, str | None]:
    """A non-2xx answer is a failure too."""
    if error is None and not 200 <= (status or 0) < 300:
        error = f"HTTP {status}"
    return status, error


class WebhookHub:
    """Registrations, the delivery queue and its sender threads (thread-safe)."""

    def __init__(
        self,
        seed: int,
        now_ms: Callable[[], int],
        company: Callable[[], Mapping[str, Any]],
        user_exists: Callable[[int], bool],
    ) -> None:
        self._now_ms = now_ms
        self._company = company
        self._user_exists = user_exists
        self._rng = random.Random(f"{seed}/webhooks")
        self._cond = threading.Condition()
        self.policy = WebhookPolicy()
        self.change_source = "app"  # meta.change_source: "app" or "api"
        self._hooks: dict[int, Webhook] = {}
        self._removed: list[Webhook] = []
        self._next_id = 1
        self._deliveries: list[WebhookDelivery] = []
        self._queue: list[_Job] = []
        self._seq = itertools.count(1)
        self._inflight = 0
        self._paused = False
        self._faults: list[WebhookFault] = []
        self._threads: list[threading.Thread] = []
        self._running = False
        self._wall_origin = time.monotonic()

    # ------------------------------------------------------------------ clock and lifecycle

    def _now(self) -> float:
        if self.policy.clock == "fake":
            return self._now_ms() / 1000
        return (time.monotonic() - self._wall_origin) / self.policy.time_scale

    def configure(self, **changes: Any) -> WebhookPolicy:
        """Change the policy (fields of WebhookPolicy); only before any webhook exists."""
        with self._cond:
            if self._hooks or self._removed or self._queue:
                raise RuntimeError("configure the webhook policy before registering webhooks")
            self.policy = WebhookPolicy(**{**self.policy.__dict__, **changes})
            self._wall_origin = time.monotonic()
            restart = self._running
        if restart:
            self.stop()
            self.start()
        return self.policy

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
            self._threads = [
                threading.Thread(target=self._run, name=f"fake-webhooks-{i}", daemon=True)
                for i in range(self.policy.senders)
            ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop sending (the queue is kept and goes on after `start`)."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(timeout=self.policy.timeout + 5)

    def clock_moved(self) -> None:
        """The fake clock moved: retries waiting for it may be due."""
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ registrations

    def register(
        self,
        subscription_url: str,
        event_action: str = "*",
        event_object: str = "*",
        name: str = "webhook",
        *,
        user_id: int | None = None,
        http_auth_user: str | None = None,
        http_auth_password: str | None = None,
        version: str = "2.0",
        app: str | None = None,
    ) -> Webhook:
        """Register a webhook like POST /v1/webhooks (raises WebhookError when it would 400)."""
        fields = {
            "subscription_url": subscription_url, "event_action": event_action,
            "event_object": event_object, "name": name, "user_id": user_id,
            "http_auth_user": http_auth_user, "http_auth_password": http_auth_password,
            "version": version,
        }  # fmt: skip
        return self._register(fields, app)

    def _register(self, fields: Mapping[str, Any], app: str | None) -> Webhook:
        clean = self._validate(fields)
        with self._cond:
            user_id = clean["user_id"]
            mine = [w for w in self._hooks.values() if w.user_id == user_id and w.app == app]
            if len(mine) >= MAX_PER_USER:
                raise WebhookError(
                    {"user_id": [f"a user can have at most {MAX_PER_USER} webhooks"]}
                )
            hook = Webhook(
                id=self._next_id,
                owner_id=ADMIN_USER_ID,
                app=app,
                add_ms=self._now_ms(),
                created=self._now(),
                **clean,
            )
            self._next_id += 1
            self._hooks[hook.id] = hook
            return copy.copy(hook)

    def _validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        out: dict[str, Any] = {}
        for key in ("subscription_url", "event_action", "event_object", "name"):
            value = body.get(key)
            if value is None or value == "":
                errors[key] = ["is required"]
            elif not isinstance(value, str):
                errors[key] = ["must be a string"]
            else:
                out[key] = value
        self._check_url(out.get("subscription_url"), errors)
        for key, allowed in (("event_action", EVENT_ACTIONS), ("event_object", EVENT_OBJECTS)):
            if key in out and out[key] not in allowed:
                errors[key] = [f"must be one of {', '.join(allowed)}"]
        if len(out.get("name", "")) > 255:
            errors["name"] = ["must be at most 255 characters"]
        out["version"] = str(body.get("version") or "2.0")
        if out["version"] not in VERSIONS:
            errors["version"] = [f"must be one of {', '.join(VERSIONS)}"]
        out["user_id"] = self._user_param(body.get("user_id"), errors)
        for key in ("http_auth_user", "http_auth_password"):
            value = body.get(key)
            out[key] = None if value in (None, "") else str(value)
        if errors:
            raise WebhookError(errors)
        return out

    def _check_url(self, url: str | None, errors: dict[str, list[str]]) -> None:
        if url is None:
            return
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            errors["subscription_url"] = ["invalid or non-reachable URL"]
        elif host == "pipedrive.com" or host.endswith(".pipedrive.com"):
            errors["subscription_url"] = ["Pipedrive API endpoints cannot be used"]

    def _user_param(self, raw: Any, errors: dict[str, list[str]]) -> int:
        if raw in (None, ""):
            return ADMIN_USER_ID
        try:
            user_id = int(raw)
        except (TypeError, ValueError):
            errors["user_id"] = ["must be an integer"]
            return ADMIN_USER_ID
        if not self._user_exists(user_id):
            errors["user_id"] = ["not found"]
        return user_id

    def unregister(self, webhook_id: int, app: str | None = None) -> None:
        """DELETE /v1/webhooks/{id}: KeyError when unknown, PermissionError when not `app`'s."""
        with self._cond:
            hook = self._hooks.get(webhook_id)
            if hook is None:
                raise KeyError(webhook_id)
            if hook.app != app:
                raise PermissionError(webhook_id)
            self._remove(hook, "deleted by the user")

    def registrations(self, app: str | None = None, *, everyone: bool = True) -> list[Webhook]:
        """Copies of the live registrations (everyone=False: only what `app` may see)."""
        with self._cond:
            return [copy.copy(w) for w in self._hooks.values() if everyone or w.app == app]

    def removed(self) -> list[Webhook]:
        """Webhooks deleted so far (by the user, or for 3 days without success)."""
        with self._cond:
            return [copy.copy(w) for w in self._removed]

    def _remove(self, hook: Webhook, reason: str) -> None:
        hook.removed = reason
        self._hooks.pop(hook.id, None)
        self._removed.append(hook)
        self._drop_queued(hook.id, DROPPED, "webhook deleted")

    def _drop_queued(self, webhook_id: int, state: str, reason: str) -> None:
        keep: list[_Job] = []
        for job in self._queue:
            if job.delivery.webhook_id == webhook_id:
                job.delivery.state, job.delivery.reason = state, reason
            else:
                keep.append(job)
        heapq.heapify(keep)
        self._queue = keep
        self._cond.notify_all()

    # ------------------------------------------------------------------ events

    def wants(self, table: str) -> bool:
        """Cheap check before building an event: does any v2 webhook listen to this table?"""
        entity = WEBHOOK_ENTITIES.get(table)
        if entity is None or not self._hooks:
            return False
        return any(w.event_object in ("*", entity) for w in list(self._hooks.values()))

    def emit(
        self,
        table: str,
        action: str,
        entity_id: Any,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        defs: Iterable[FieldDef],
        *,
        extra_meta: Mapping[str, str] | None = None,
    ) -> None:
        """Queue one event (create/change/delete of a record of `table`) for every webhook
        that listens to it. `before`/`after` are the record's internal data."""
        entity = WEBHOOK_ENTITIES.get(table)
        if entity is None:
            return
        with self._cond:
            targets = [
                w for w in self._hooks.values() if w.version == "2.0" and w.matches(entity, action)
            ]
            if not targets:
                return
            defs = list(defs)
            data, previous = self._blocks(table, action, before, after, defs)
            record = after if after is not None else before
            assert record is not None
            context = {
                "entity": entity,
                "entity_id": str(entity_id),
                "action": action,
                "correlation_id": self._uuid(),
                "at_ms": self._now_ms(),
                "record": record,
                "extra": dict(extra_meta or {}),
            }
            for hook in targets:
                self._enqueue(hook, data, previous, context)
            self._cond.notify_all()

    @staticmethod
    def _blocks(
        table: str,
        action: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        defs: list[FieldDef],
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if action == "delete":
            assert before is not None
            return None, webhook_data(table, before, defs)
        assert after is not None
        data = webhook_data(table, after, defs)
        if action == "create" or before is None:
            return data, None
        return data, changed_fields(webhook_data(table, before, defs), data)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _meta(self, hook: Webhook, event_id: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
        company = self._company()
        meta: dict[str, Any] = {
            "action": ctx["action"],
            "company_id": str(company["id"]),
            "correlation_id": ctx["correlation_id"],
            "entity_id": ctx["entity_id"],
            "entity": ctx["entity"],
            "id": event_id,
            "is_bulk_edit": False,
            "timestamp": event_timestamp(ctx["at_ms"]),
            "type": hook.type,
            "user_id": str(ADMIN_USER_ID),
            "version": "2.0",
            "webhook_id": str(hook.id),
            "webhook_owner_id": str(hook.owner_id),
            "change_source": self.change_source,
            "attempt": 1,
            "host": f"{company['domain']}.pipedrive.com",
        }
        if ctx["entity"] == "user":  # as in the documented user examples
            meta["id"] = ctx["entity_id"]
            meta["timestamp"] = ctx["at_ms"] // 1000
        else:
            meta["permitted_user_ids"] = permitted_user_ids(ctx["record"], ADMIN_USER_ID)
        meta.update(ctx["extra"])
        return meta

    def _enqueue(
        self,
        hook: Webhook,
        data: dict[str, Any] | None,
        previous: dict[str, Any] | None,
        ctx: Mapping[str, Any],
    ) -> None:
        event_id = self._uuid()
        body = {"data": data, "previous": previous, "meta": self._meta(hook, event_id, ctx)}
        d = WebhookDelivery(
            seq=next(self._seq),
            webhook_id=hook.id,
            entity=ctx["entity"],
            action=ctx["action"],
            entity_id=ctx["entity_id"],
            event_id=event_id,
            body=body,
        )
        self._deliveries.append(d)
        now = self._now()
        if hook.banned(now):
            d.state, d.reason = LOST, "banned"
            return
        delay = sum(f.delay for f in self._faults if f.take("delay", d, 1))
        self._schedule(d, 1, now + delay)

    def _schedule(self, d: WebhookDelivery, attempt: int, due: float) -> None:
        heapq.heappush(self._queue, _Job(due, next(self._seq), d, attempt))
        self._cond.notify_all()

    # ------------------------------------------------------------------ delivery

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
                if job is None:
                    return
                self._inflight += 1
            try:
                self._attempt(job.delivery, job.attempt)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _next_job(self) -> _Job | None:
        """The next due job (under the lock), waiting for it; None when stopping."""
        while self._running:
            if self._paused or not self._queue:
                self._cond.wait()
                continue
            wait = self._queue[0].due - self._now()
            if wait > 0:
                fake = self.policy.clock == "fake"
                self._cond.wait(0.1 if fake else max(0.001, wait * self.policy.time_scale))
                continue
            return heapq.heappop(self._queue)
        return None

    def _attempt(self, d: WebhookDelivery, n: int) -> None:
        with self._cond:
            hook = self._hooks.get(d.webhook_id)
            if hook is None:
                d.state, d.reason = DROPPED, "webhook deleted"
                return
            if hook.banned(self._now()):
                d.state, d.reason = LOST, "banned"
                return
            fail = next((f for f in self._faults if f.take("fail", d, n)), None)
            body = orjson.dumps(d.payload(n))
            url, timeout = hook.subscription_url, self.policy.timeout
            auth = None
            if hook.http_auth_user is not None:
                auth = _basic_auth(hook.http_auth_user, hook.http_auth_password)
        status: int | None
        error: str | None
        if fail is not None:
            reason = f"HTTP {fail.status}" if fail.status else "connection refused"
            status, error = fail.status, f"fault: {reason}"
        else:
            status, error = _outcome(*post(url, body, auth, timeout))
        ok = error is None
        attempt = Attempt(n, ok, status, error, self._now_ms(), "fail" if fail else None)
        with self._cond:
            self._settle(d, hook, attempt)
            again = ok and any(f.take("duplicate", d, n) for f in self._faults)
        if again:
            status, error = _outcome(*post(url, body, auth, timeout))
            dup = Attempt(n, error is None, status, error, self._now_ms(), "duplicate", True)
            with self._cond:
                d.attempts.append(dup)

    def _settle(self, d: WebhookDelivery, hook: Webhook, attempt: Attempt) -> None:
        """Record an attempt and decide what comes next (under the lock)."""
        d.attempts.append(attempt)
        hook.last_delivery_ms = attempt.at_ms
        hook.last_http_status = attempt.status
        now = self._now()
        if attempt.ok:
            d.state = DELIVERED
            hook.last_success = now
            return
        policy = self.policy
        if attempt.n == 1:
            hook.ban_counter += 1
            if hook.ban_counter >= policy.ban_after:
                self._ban(hook, d, now)
                return
        since = hook.last_success if hook.last_success is not None else hook.created
        if now - since >= policy.delete_after and hook.id in self._hooks:
            d.state, d.reason = DROPPED, "webhook deleted"
            self._remove(hook, f"no successful delivery for {policy.delete_after:g} s")
            return
        if attempt.n <= len(policy.retry_delays):
            self._schedule(d, attempt.n + 1, now + policy.retry_delays[attempt.n - 1])
        else:
            d.state, d.reason = DROPPED, "retries exhausted"

    def _ban(self, hook: Webhook, d: WebhookDelivery, now: float) -> None:
        hook.banned_until = now + self.policy.ban_seconds
        hook.bans += 1
        d.state, d.reason = LOST, "banned"
        self._drop_queued(hook.id, LOST, "banned")

    # ------------------------------------------------------------------ test controls

    def pause(self) -> None:
        """Hold every delivery (events keep queueing) until `resume`."""
        with self._cond:
            self._paused = True

    def resume(self, order: str = "queued", seed: int = 0) -> None:
        """Release held deliveries: "queued" (as scheduled), "reverse" (newest first) or
        "shuffle" (random, from `seed`); reordered ones are all due at once."""
        if order not in ("queued", "reverse", "shuffle"):
            raise ValueError("order is 'queued', 'reverse' or 'shuffle'")
        with self._cond:
            if order != "queued":
                jobs = sorted(self._queue, reverse=order == "reverse")
                if order == "shuffle":
                    random.Random(seed).shuffle(jobs)
                now = self._now()
                self._queue = [_Job(now, next(self._seq), j.delivery, j.attempt) for j in jobs]
                heapq.heapify(self._queue)
            self._paused = False
            self._cond.notify_all()

    def add_fault(self, fault: WebhookFault) -> WebhookFault:
        with self._cond:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def deliveries(
        self,
        *,
        webhook_id: int | None = None,
        entity: str | None = None,
        action: str | None = None,
        state: str | None = None,
    ) -> list[WebhookDelivery]:
        """Copies of the deliveries so far, in event order (filters: None matches all)."""
        with self._cond:
            return [
                copy.deepcopy(d)
                for d in self._deliveries
                if webhook_id in (None, d.webhook_id)
                and entity in (None, d.entity)
                and action in (None, d.action)
                and state in (None, d.state)
            ]

    def forget_settled(self) -> int:
        """Drop the settled deliveries from memory (long benchmarks); returns how many."""
        with self._cond:
            before = len(self._deliveries)
            self._deliveries = [d for d in self._deliveries if d.state == PENDING]
            return before - len(self._deliveries)

    def _idle(self, drained: bool) -> bool:
        if self._inflight:
            return False
        if drained:
            return not self._queue
        return self._paused or not self._queue or self._queue[0].due > self._now()

    def wait(self, timeout: float = 30.0, *, drained: bool = True) -> None:
        """Block until every delivery is settled (drained=False: until nothing is due or in
        flight, retries may wait for later). TimeoutError says what is still pending."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._idle(drained), timeout):
                raise TimeoutError(self._pending_summary())

    def wait_until(
        self, predicate: Callable[[list[WebhookDelivery]], bool], timeout: float = 30.0
    ) -> None:
        """Block until `predicate(deliveries)` is true; it runs under the hub's lock on the
        live list (read it, do not keep or change it)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._deliveries), timeout):
                raise TimeoutError(self._pending_summary())

    def _pending_summary(self) -> str:
        pending = [d for d in self._deliveries if d.state == PENDING]
        state = "paused, " if self._paused else ""
        return (
            f"webhooks: {state}{len(pending)} pending, {self._inflight} in flight, "
            f"{len(self._queue)} queued"
        )


# ---------------------------------------------------------------------- HTTP (/v1/webhooks)


def is_webhook_path(path: str) -> bool:
    return path == "/v1/webhooks" or path.startswith("/v1/webhooks/")


def webhook_route(method: str, path: str) -> tuple[str, int, tuple[str, ...]] | Response:
    """(path template, token cost, OAuth scopes) of a /v1/webhooks request, or its error."""
    template = "/v1/webhooks" if path == "/v1/webhooks" else "/v1/webhooks/{id}"
    found = WEBHOOK_ROUTES.get((method, template))
    if found is None:
        return _error(405, {"method": [f"{method} is not allowed on {template}"]})
    cost, scopes = found
    return template, cost, scopes


def _ok(status: int, data: Any = None, with_data: bool = True) -> Response:
    body: dict[str, Any] = {"status": "ok", "success": True}
    if with_data:
        body["data"] = data
    return Response(status, orjson.dumps(body))


def _error(status: int, errors: dict[str, list[str]]) -> Response:
    return Response(status, orjson.dumps({"status": "error", "success": False, "errors": errors}))


def _app_of(grant: AccessGrant | None) -> str | None:
    """Which OAuth app is asking (None: an API token, which manages general webhooks)."""
    if grant is None:
        return None
    return grant.install.client_id if grant.install is not None else "(issued token)"


def _request_body(rec: RequestRecord) -> dict[str, Any]:
    ctype = rec.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_form(rec.body))
    try:
        body = orjson.loads(rec.body or b"{}")
    except orjson.JSONDecodeError:
        raise WebhookError({"body": ["is not valid JSON"]}) from None
    if not isinstance(body, dict):
        raise WebhookError({"body": ["must be a JSON object"]})
    return body


def handle(
    hub: WebhookHub,
    company_id: int,
    method: str,
    path: str,
    rec: RequestRecord,
    grant: AccessGrant | None,
    _query: Mapping[str, str],
) -> Response:
    """Answer GET/POST /v1/webhooks and DELETE /v1/webhooks/{id}."""
    app = _app_of(grant)
    if method == "GET":
        hooks = hub.registrations(app, everyone=False)
        return _ok(200, [w.render(company_id) for w in hooks])
    if method == "POST":
        try:
            hook = hub._register(_request_body(rec), app)
        except WebhookError as exc:
            return _error(400, exc.errors)
        return _ok(201, hook.render(company_id))
    raw_id = path.rsplit("/", 1)[-1]
    try:
        hub.unregister(int(raw_id), app)
    except (KeyError, ValueError):
        return _error(404, {"id": ["not found"]})
    except PermissionError:
        return Response(403, orjson.dumps({"success": False, "message": "Forbidden"}))
    return _ok(200, with_data=False)
