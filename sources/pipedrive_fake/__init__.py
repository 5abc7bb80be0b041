"""A fake Pipedrive API (v2 + the v1 lists the sync reads) over real HTTP, for tests and benchmarks.

    from sources.pipedrive_fake import FakePipedrive, FaultRule

    with FakePipedrive(token="test-token", seed=1, scale={"deals": 200}) as fake:
        fake.base_url                           # http://127.0.0.1:PORT
        fake.update("deals", 3, title="New")    # stamps update_time = fake.now, clock +1 s
        fake.field_key("deals", "Título")       # custom field hash by name
        fake.add_fault(FaultRule(path=r"/deals$", kind="status", status=502, times=2))

Behaviour worth knowing (see FakePipedrive's docstrings for the rest):

* Data is deterministic for a seed. Generated timestamps lie before `fake.now`
  (2024-06-01T12:00:00Z by default); every mutation stamps `update_time = fake.now` and then
  advances the clock by 1 s (`tick=False` or `at=` to give several records one timestamp).
* Custom fields: every type on deals, persons, organizations, products and activities
  (`fake.field_key_for_type(entity, "monetary")` finds the canonical one); deals also have the
  tricky names of `fields.TRICKY_DEAL_FIELDS` (`Título`, `Größe`, `价格`, `Title`, two `Source`,
  `🔥🔥`). Enum and set fields whose definitions have more than three options lost their last
  option after records chose it: records hold ids `fake.stale_option_ids(...)` lists.
  Leads use the deal fields (served flat, v1 style). Values are always given to `add`/`update`
  in the v2 shape.
* Deleting a custom field removes it from the *Fields lists (v1 and v2 alike: the real API
  does not list deleted fields) and its values from the records, without touching their
  update_time. Deleting an option keeps the id in records (stale) and, in v1 leadFields,
  lists it under `options_deleted`.
* Deleted deals are served with status "deleted" only when asked for (`status=...,deleted`);
  other deleted records vanish from the lists and stay visible through
  `fake.records(entity, deleted=True)`.
* The `Date` header and the daily budget's midnight follow the fake clock; the burst window
  (2 s) follows the wall clock.
* Smaller entities (`EXTRA_TABLES`: users, activity_types, currencies, lead_labels,
  lead_sources, filters, files, goals, call_logs, roles, permission_sets, projects, tasks) are
  tables like the others: `scale` sizes them, `add`/`update`/`delete` change them (users and
  activity types are deactivated, staying listed; projects get status "deleted"; the rest
  vanish), `archive("projects", id)` moves a project to /projects/archived.
* Deal products (`/api/v2/deals/products?deal_ids=...`) and followers are generated per record
  on first use (deterministic); `add_deal_product`/`update_deal_product`/`remove_deal_product`
  also stamp the deal's update_time; `add_follower`/`remove_follower` do not touch the record.
* Field-change history (`/v1/{deals,persons,organizations}/{id}/changelog`, `fake.changelog(entity,
  id)`): served newest first, like the spec's examples, with a cursor (base64 "id:<n>") in
  `additional_data.next_cursor`. Generated records start with 0-3 past changes (deterministic,
  ending with the current values at update_time); every `update()` then adds one entry per
  changed field (values as text, time = the new update_time as "YYYY-MM-DD HH:MM:SS", actor 1,
  source "app"); `add`, `delete` and deal-product changes add none. See `changelog.py`.
* `GET /v1/leads/{id}` and `/v1/notes/{id}` serve one record (2 tokens, as the spec says): an
  archived lead too, a deleted lead is 404, a deleted note comes back with `active_flag: false`.
* `restrict(path_regex, 402|403)` answers matching requests with Pipedrive's error envelope.
* OAuth: `oauth_client(...)` registers an app install; `POST /oauth/token` refreshes (refresh
  tokens rotate); `Authorization: Bearer` works instead of x-api-token, with scope checks
  (`ROUTE_SCOPES`); access tokens expire on the fake clock (`advance`) or at once with
  `expire_access_tokens()`. See `oauth.py` for the shapes.
* Webhooks v2: `POST/GET /v1/webhooks`, `DELETE /v1/webhooks/{id}` (or `fake.webhooks.register`)
  register a URL; every `add`/`update`/`delete`/`archive`/`merge` is then POSTed to it in the v2
  shape by background senders, with Pipedrive's retries (3, 30, 150 s), ban (10 failed first
  attempts: 30 min) and 3-day deletion, on a scaled or the fake clock
  (`fake.webhooks.configure`). `fake.webhook_deliveries()`, `fake.wait_webhooks()`, faults
  (`WebhookFault`), `pause`/`resume`: see WEBHOOKS.md.
"""

from .api import ROUTE_SCOPES, TOKEN_COSTS
from .fake import DEFAULT_NOW, DEFAULT_SCALE, EXTRA_TABLES, FakePipedrive
from .fields import CUSTOM_FIELD_TYPES, TRICKY_DEAL_FIELDS, FieldDef
from .oauth import ALL_SCOPES, OAuthInstall
from .server import FaultRule, RequestRecord, Restriction
from .webhooks import (
    Webhook,
    WebhookDelivery,
    WebhookError,
    WebhookFault,
    WebhookHub,
    WebhookPolicy,
)

__all__ = [
    "ALL_SCOPES",
    "CUSTOM_FIELD_TYPES",
    "DEFAULT_NOW",
    "DEFAULT_SCALE",
    "EXTRA_TABLES",
    "ROUTE_SCOPES",
    "TOKEN_COSTS",
    "TRICKY_DEAL_FIELDS",
    "FakePipedrive",
    "FaultRule",
    "FieldDef",
    "OAuthInstall",
    "RequestRecord",
    "Restriction",
    "Webhook",
    "WebhookDelivery",
    "WebhookError",
    "WebhookFault",
    "WebhookHub",
    "WebhookPolicy",
]
