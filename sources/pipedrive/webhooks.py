"""Registering the listener's webhooks v2 at Pipedrive (`/v1/webhooks`), idempotently.

The listener's registrations are the ones whose `subscription_url` is its public URL; it never
touches any other. On every start it wants one registration per synced object (event action
`*`, version 2.0, its Basic-auth credentials): it keeps those that already match, removes its
own that do not (objects no longer synced, other credentials, duplicates, and those whose last
delivery failed: Pipedrive bans a webhook for 30 minutes after 10 failed first attempts and
drops its events meanwhile, as happens while the listener is down; a new registration is not
banned) and creates what is missing. The listener does this on start and before every poll. Pipedrive allows 40 webhooks per user: when one per object does not fit next to the
user's other webhooks, a single registration for every object (`event_object: *`) is used
(events of objects not synced are then ignored); when not even that fits, `WebhookSetupError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .entities import ME_PATH, ME_TOKEN_COST, WEBHOOKS_PATH, WEBHOOKS_TOKEN_COST, Api
from .http import BadResponse, EntityUnavailable, PipedriveClient, PipedriveError

MAX_WEBHOOKS_PER_USER = 40
ALL_OBJECTS = "*"


class WebhookSetupError(PipedriveError):
    """The webhooks cannot be registered as configured (exit 78: fix the configuration)."""

    exit_code = 78


@dataclass
class Registrations:
    """What `register_webhooks` did."""

    objects: list[str] = field(default_factory=list)  # event objects registered
    kept: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [*self.kept, *self.created]


@dataclass(frozen=True)
class Wanted:
    """The registrations the listener wants."""

    url: str
    objects: tuple[str, ...]
    user: str
    password: str
    name: str


def register_webhooks(client: PipedriveClient, wanted: Wanted) -> Registrations:
    """Make the listener's registrations at Pipedrive match `wanted` (see the module doc)."""
    try:
        me = _my_user_id(client)
        hooks = _list(client)
    except EntityUnavailable as exc:
        raise WebhookSetupError(_forbidden(exc)) from None
    ours = [h for h in hooks if h.get("subscription_url") == wanted.url]
    others = sum(1 for h in hooks if h not in ours and h.get("user_id") == me)
    objects: Sequence[str] = wanted.objects
    keep, stale = _match(ours, objects, wanted)
    if others + len(objects) > MAX_WEBHOOKS_PER_USER:
        objects = (ALL_OBJECTS,)
        keep, stale = _match(ours, objects, wanted)
    if others + len(objects) > MAX_WEBHOOKS_PER_USER:
        raise WebhookSetupError(
            f"Pipedrive allows {MAX_WEBHOOKS_PER_USER} webhooks per user and user {me} has"
            f" {others} others: delete one, or listen without --public-url (then register"
            " the webhooks yourself)"
        )
    done = Registrations(objects=list(objects), kept=[int(h["id"]) for h in keep.values()])
    try:
        for hook in stale:
            _delete(client, int(hook["id"]))
            done.removed.append(int(hook["id"]))
        for obj in objects:
            if obj not in keep:
                done.created.append(_create(client, wanted, obj))
    except EntityUnavailable as exc:
        raise WebhookSetupError(_forbidden(exc)) from None
    return done


def _match(
    ours: list[dict[str, Any]], objects: Sequence[str], wanted: Wanted
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(object → a registration of ours to keep, registrations of ours to remove)."""
    keep: dict[str, dict[str, Any]] = {}
    stale: list[dict[str, Any]] = []
    for hook in sorted(ours, key=lambda h: int(h.get("id") or 0)):
        obj = hook.get("event_object")
        if isinstance(obj, str) and obj in objects and obj not in keep and _current(hook, wanted):
            keep[obj] = hook
        else:
            stale.append(hook)
    return keep, stale


def _current(hook: Mapping[str, Any], wanted: Wanted) -> bool:
    """Registered the way the listener would register it now."""
    password = hook.get("http_auth_password")
    return (
        hook.get("event_action") == "*"
        and str(hook.get("version") or "") == "2.0"
        and hook.get("http_auth_user") == wanted.user
        # Pipedrive may not echo the password (or mask it): only a different one is stale
        and (not isinstance(password, str) or set(password) <= {"*"} or password == wanted.password)
        and hook.get("is_active", 1) not in (0, False)
        and _delivering(hook)
    )


def _delivering(hook: Mapping[str, Any]) -> bool:
    """No failed delivery on record: never tried yet, or its last attempt was answered 2xx."""
    if hook.get("last_delivery_time") is None:
        return True
    status = hook.get("last_http_status")
    return isinstance(status, int) and 200 <= status < 300


def _my_user_id(client: PipedriveClient) -> Any:
    body, _ = client.get_json(Api.V1, ME_PATH, cost=ME_TOKEN_COST, label=ME_PATH)
    return (body.get("data") or {}).get("id")


def _list(client: PipedriveClient) -> list[dict[str, Any]]:
    body, _ = client.get_json(
        Api.V1, WEBHOOKS_PATH, cost=WEBHOOKS_TOKEN_COST["get"], label=WEBHOOKS_PATH
    )
    data = body.get("data")
    return [h for h in data if isinstance(h, dict)] if isinstance(data, list) else []


def _create(client: PipedriveClient, wanted: Wanted, obj: str) -> int:
    body, _ = client.request_json(
        "POST",
        Api.V1,
        WEBHOOKS_PATH,
        body={
            "subscription_url": wanted.url,
            "event_action": "*",
            "event_object": obj,
            "name": wanted.name[:255],
            "http_auth_user": wanted.user,
            "http_auth_password": wanted.password,
            "version": "2.0",
        },
        cost=WEBHOOKS_TOKEN_COST["post"],
        label=WEBHOOKS_PATH,
    )
    created = (body.get("data") or {}).get("id")
    if not isinstance(created, int):
        raise BadResponse(
            f"POST /v1/webhooks: Pipedrive did not say which webhook it created ({str(body)[:200]})"
        )
    return created


def _delete(client: PipedriveClient, webhook_id: int) -> None:
    try:
        client.request_json(
            "DELETE",
            Api.V1,
            f"{WEBHOOKS_PATH}/{webhook_id}",
            cost=WEBHOOKS_TOKEN_COST["delete"],
            label=WEBHOOKS_PATH,
        )
    except EntityUnavailable as exc:
        if exc.status != 404:  # already gone: nothing to remove
            raise


def _forbidden(exc: EntityUnavailable) -> str:
    return (
        f"cannot register webhooks at Pipedrive ({exc}); an OAuth app needs the `admin`"
        " scope, an API token a user allowed to manage webhooks"
    )
