"""Deletes: deals via status=deleted, everything else by id reconciliation on a cadence."""

from __future__ import annotations

from datetime import timedelta

from conftest import Syncer, table_rows


def _delete_some(syncer: Syncer) -> dict[str, int]:
    fake = syncer.fake
    gone = {}
    for table in ("persons", "organizations", "activities", "products"):
        record_id = fake.records(table)[3]["id"]
        fake.delete(table, record_id)
        gone[table] = record_id
    return gone


def test_hidden_deletions_are_flagged_by_reconciliation(syncer: Syncer) -> None:
    syncer.run()
    gone = _delete_some(syncer)
    archived_deal = syncer.fake.records("deals", archived=True)[0]["id"]

    plain = syncer.run()  # not due yet: deletions are invisible to updated_since
    assert all(plain.vanished.get(t, 0) == 0 for t in gone)
    for table, record_id in gone.items():
        assert table_rows(syncer, table)[record_id]["is_deleted"] is not True

    reconciled = syncer.run(reconcile=True)
    assert reconciled.code == 0
    for table, record_id in gone.items():
        assert reconciled.vanished[table] == 1, table
        assert table_rows(syncer, table)[record_id]["is_deleted"] is True
    # archived deals are listed by /deals/archived: not mistaken for deleted ones
    assert reconciled.vanished.get("deals", 0) == 0
    assert table_rows(syncer, "deals")[archived_deal]["is_deleted"] is not True
    runs = syncer.query(
        "SELECT entity, flagged_deleted, reconciled FROM sync_runs"
        " WHERE run_id = (SELECT run_id FROM sync_runs ORDER BY finished_at DESC LIMIT 1)"
    )
    assert {e: (n, r) for e, n, r in runs}["persons"] == (1, True)


def test_reconciliation_runs_on_its_cadence_without_a_flag(syncer: Syncer) -> None:
    syncer.run()
    gone = _delete_some(syncer)
    syncer.fake.reset_requests()
    settings = syncer.settings()
    settings.reconcile_interval = timedelta(0)  # every run is due
    from pipelines.pipedrive_sync.runner import run_sync

    result = run_sync(settings)
    assert {table: result.vanished[table] for table in gone} == dict.fromkeys(gone, 1)
    listings = [
        r
        for r in syncer.fake.requests
        if r.endpoint == "persons" and "updated_since" not in r.query
    ]
    assert listings, "the id listing reads the whole list"


def test_hard_deletes_remove_rows(syncer: Syncer) -> None:
    syncer.run()
    gone = _delete_some(syncer)
    deal_id = syncer.fake.records("deals")[0]["id"]
    syncer.fake.delete("deals", deal_id)
    result = syncer.run(reconcile=True, hard_deletes=True)
    assert result.code == 0
    for table, record_id in gone.items():
        assert record_id not in table_rows(syncer, table)
    assert deal_id not in table_rows(syncer, "deals")


def test_deleted_deals_need_no_reconciliation(syncer: Syncer) -> None:
    syncer.run()
    deal_id = syncer.fake.records("deals")[5]["id"]
    syncer.fake.delete("deals", deal_id)
    result = syncer.run()
    assert {r.name: r.rows for r in result.reports}["deals"] == 1
    assert table_rows(syncer, "deals")[deal_id]["is_deleted"] is True
