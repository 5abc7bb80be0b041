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
"""

from .api import TOKEN_COSTS
from .fake import DEFAULT_NOW, DEFAULT_SCALE, FakePipedrive
from .fields import CUSTOM_FIELD_TYPES, TRICKY_DEAL_FIELDS, FieldDef
from .server import FaultRule, RequestRecord

__all__ = [
    "CUSTOM_FIELD_TYPES",
    "DEFAULT_NOW",
    "DEFAULT_SCALE",
    "TOKEN_COSTS",
    "TRICKY_DEAL_FIELDS",
    "FakePipedrive",
    "FaultRule",
    "FieldDef",
    "RequestRecord",
]
