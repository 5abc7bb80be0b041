"""The listener's parts on their own: webhooks v2 bodies → events → plans, and the journal."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
from conftest import CORE_ENTITIES

from pipelines.pipedrive_sync import journal as journal_module
from pipelines.pipedrive_sync.journal import Journal
from pipelines.pipedrive_sync.listen import BatchDurations, events_to_apply
from sources.pipedrive.events import InvalidEvent, WebhookEvent, parse_event, plan_events
from sources.pipedrive_fake import FakePipedrive

SYNCED = frozenset([*CORE_ENTITIES, "leads", "notes", "deal_products", "deal_followers"])


@pytest.fixture
def bodies(fake: FakePipedrive) -> dict[str, dict]:
    """Real webhooks v2 bodies from the fake, one per kind of change (sent nowhere)."""
    fake.webhooks.configure(clock="fake")  # undelivered events wait for `advance`: never sent
    fake.webhooks.register("http://127.0.0.1:9/", "*", "*")
    deal = fake.records("deals", archived=False)[0]["id"]
    persons = [p["id"] for p in fake.records("persons")[:2]]
    fake.update("deals", deal, title="x")
    fake.archive("deals", deal)
    fake.merge("persons", persons[0], into=persons[1])
    fake.delete("leads", fake.records("leads")[0]["id"])
    fake.update("users", fake.records("users")[0]["id"], name="Renamed")
    fake.add_deal_product(deal, fake.records("products")[0]["id"])
    found: dict[str, dict] = {}
    for d in fake.webhook_deliveries():
        key = f"{d.entity}.{d.action}"
        if d.body["meta"].get("merged_to_id"):
            key += ".merged"
        if d.entity == "deal" and (d.body["previous"] or {}).get("is_archived") is False:
            key += ".archive"
        found.setdefault(key, d.body)
    return found


def test_webhooks_v2_bodies_become_events(bodies: dict[str, dict]) -> None:
    change = parse_event(orjson.dumps(bodies["deal.change"]))
    assert (change.entity, change.action, change.archived) == ("deals", "change", False)
    assert isinstance(change.record_id, int) and change.event_id and change.occurred_at
    archive = parse_event(orjson.dumps(bodies["deal.change.archive"]))
    assert archive.archived is True
    merged = parse_event(orjson.dumps(bodies["person.delete.merged"]))
    assert (merged.entity, merged.action) == ("persons", "delete")
    lead = parse_event(orjson.dumps(bodies["lead.delete"]))
    assert isinstance(lead.record_id, str) and lead.entity == "leads"
    user = parse_event(orjson.dumps(bodies["user.change"]))  # epoch seconds, id as text
    assert isinstance(user.record_id, int) and user.occurred_at and user.occurred_at > 1e9
    product = parse_event(orjson.dumps(bodies["deal_product.create"]))
    assert product.entity == "deal_products" and isinstance(product.parent_id, int)
    roundtrip = WebhookEvent.from_json(orjson.loads(orjson.dumps(product.to_json())))
    assert roundtrip == product


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"nope", "not JSON"),
        (b"[1, 2]", "no `meta`"),
        (b'{"meta": {"entity": "deal"}}', "meta.action"),
        (b'{"meta": {"entity": "deal", "action": "change"}}', "entity_id"),
        (b'{"meta": {"entity": "deal", "action": "change", "entity_id": "x1"}}', "not a number"),
    ],
)
def test_bodies_that_are_not_webhooks_v2_events_are_invalid(body: bytes, why: str) -> None:
    with pytest.raises(InvalidEvent, match=why):
        parse_event(body)


def _event(obj: str, action: str, record: int | str, **extra: object) -> WebhookEvent:
    return WebhookEvent(f"{obj}-{action}-{record}", obj, action, record, **extra)  # type: ignore[arg-type]


def test_a_batch_plan_reads_by_id_lists_or_flags_as_each_entity_allows() -> None:
    plan = plan_events(
        [
            _event("deal", "change", 1),
            _event("deal", "change", 1),  # a retry: read once
            _event("deal", "delete", 2),
            _event("person", "delete", 7),  # merged away: read, found missing
            _event("person", "change", 8),
            _event("lead", "change", "l-1", archived=True),
            _event("lead", "delete", "l-2"),
            _event("note", "create", 5),
            _event("note", "delete", 6),
            _event("stage", "change", 3),
            _event("deal_product", "create", 90, parent_id=4),
            _event("deal_installment", "create", 1),  # unknown object
            _event("project", "change", 1),  # not synced
            _event("deal", "merged", 1),  # an action webhooks v2 does not send
        ],
        SYNCED,
    )
    # few v1 records: 2 tokens each by id (a lead's detail says whether it is archived)
    assert plan.by_ids == {"deals": {1, 2, 4}, "persons": {7, 8}, "leads": {"l-1"}, "notes": {5}}
    assert plan.lists == {"stages"} and plan.due_now == {"stages"}
    assert plan.deleted == {"leads": {"l-2"}, "notes": {6}}
    assert plan.parents == {"deal_products": {2, 4}, "deal_followers": {1, 2, 4}}
    assert plan.ignored == 3
    assert plan.entities == [
        "deal_followers",
        "deal_products",
        "deals",
        "leads",
        "notes",
        "persons",
        "stages",
    ]


def test_many_changed_v1_records_are_read_through_their_lists() -> None:
    """Ten notes by id cost as much as a page of /v1/notes (20 tokens); an archived lead adds
    the archived list (40) to the alternative."""
    notes = plan_events([_event("note", "change", n) for n in range(10)], SYNCED)
    assert notes.lists == {"notes"} and "notes" not in notes.by_ids
    leads = [_event("lead", "change", f"l-{n}", archived=n == 0) for n in range(29)]
    assert plan_events(leads, SYNCED).by_ids["leads"] == {f"l-{n}" for n in range(29)}
    leads.append(_event("lead", "change", "l-29"))
    many = plan_events(leads, SYNCED)
    assert many.lists == {"leads"} and many.due_now == {"leads"}


# -- the journal ---------------------------------------------------------------------------------
def test_the_journal_replays_what_was_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    entries = [journal.append(_event("deal", "change", n)) for n in range(5)]
    assert [e.seq for e in journal.pending() if e] == [1, 2, 3, 4, 5]
    journal.mark_applied(3)
    assert [e.seq for e in journal.pending()] == [4, 5]
    journal.close()  # a kill: nothing more written
    again = Journal(path)
    assert again.replayed == 2
    assert [e.event for e in again.pending()] == [e.event for e in entries[3:] if e]
    assert again.append(_event("deal", "change", 9)).seq == 6  # type: ignore[union-attr]
    assert path.read_bytes().count(b"\n") == 4  # compacted on open: the mark and 2 + 1 events


def test_a_torn_last_line_is_dropped_and_retries_are_journaled_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append(_event("deal", "change", 1))
    assert journal.append(_event("deal", "change", 1)) is None  # the same meta.id: a retry
    journal.close()
    with path.open("ab") as file:
        file.write(b'{"seq": 2, "at": 1.0, "ev')  # a write the kill interrupted
    again = Journal(path)
    assert (again.replayed, again.dropped_lines) == (1, 1)
    assert again.append(_event("deal", "change", 1)) is None  # still recognised


def test_the_journal_is_compacted_once_everything_is_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 2_000)
    journal = Journal(tmp_path / "journal.jsonl")
    for n in range(40):
        journal.append(_event("deal", "change", n))
    grown = journal.size
    journal.mark_applied(40)
    assert journal.size < grown and journal.size < 100
    assert Journal(tmp_path / "journal.jsonl").replayed == 0


def test_concurrent_appends_are_all_durable_and_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")

    def append_some(n: int) -> None:
        for k in range(20):
            journal.append(_event("deal", "change", n * 100 + k))

    threads = [threading.Thread(target=append_some, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in journal.pending()] == list(range(1, 81))
    journal.close()
    assert Journal(tmp_path / "journal.jsonl").replayed == 80


def test_every_change_is_its_own_event_and_every_retry_the_same() -> None:
    """User events carry the user's id as `meta.id` (as Pipedrive's examples do): two changes
    of one user are two events; a retry (only `meta.attempt` differs) is the same event."""

    def body(name: str, attempt: int) -> bytes:
        meta = {"action": "change", "entity": "user", "entity_id": "5", "id": "5",
                "timestamp": 1717243200, "attempt": attempt}  # fmt: skip
        return orjson.dumps({"meta": meta, "data": {"id": "5", "name": name}, "previous": None})

    first, retry = parse_event(body("Ann", 1)), parse_event(body("Ann", 2))
    second = parse_event(body("Anna", 1))
    assert first.event_id == retry.event_id
    assert second.event_id != first.event_id


def test_the_batch_estimate_follows_the_slow_batches_not_the_mean_nor_one_outlier() -> None:
    durations = BatchDurations(first_guess=1.0)
    assert durations.estimate == 1.0  # nothing measured yet
    durations.add(0.6)
    assert durations.estimate == 0.6
    for seconds in (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 4.0):  # one outlier in ten
        durations.add(seconds)
    assert durations.estimate == 0.5
    for seconds in (0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5):  # a noisy machine
        durations.add(seconds)
    assert durations.estimate == 1.5  # a mean (1.0) would let half the batches overshoot
    for _ in range(10):
        durations.add(0.4)
    assert durations.estimate == 0.4  # only the recent batches count


@pytest.mark.parametrize(
    ("pending", "due", "applied"),
    [
        (0, False, 0),
        (0, True, 0),
        (40, False, 0),
        (40, True, 40),
        (100, False, 100),
        (170, False, 100),
        (170, True, 170),
        (299, False, 200),
    ],
)
def test_before_the_oldest_event_is_due_only_whole_requests_are_applied(
    pending: int, due: bool, applied: int
) -> None:
    assert events_to_apply(pending, due) == applied
