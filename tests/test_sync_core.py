"""End to end through the fake Pipedrive into DuckDB: the foundation's contract."""

from __future__ import annotations

from typing import Any

from conftest import CORE_ENTITIES, Syncer, all_deals, assert_matches_fake, table_rows

from sources.pipedrive_fake import FakePipedrive

CORE = ("deals", "persons", "organizations", "activities", "products", "pipelines", "stages")
INCREMENTAL = ("deals", "persons", "organizations", "activities", "products")


def _records(syncer: Syncer, table: str) -> list[dict[str, Any]]:
    if table == "deals":
        return all_deals(syncer.fake)
    return syncer.fake.records(table)


def test_first_run_loads_exactly_the_fakes_data_for_all_core_entities(syncer: Syncer) -> None:
    result = syncer.run()
    assert result.code == 0, result.message
    for table in CORE:
        assert_matches_fake(syncer, table, _records(syncer, table))
    reports = {r.name: r for r in result.reports}
    assert set(reports) == set(CORE)
    assert all(r.status == "ok" for r in reports.values())
    # every list request authenticates by header, pages by 50 here, and never carries the token
    for request in syncer.fake.requests:
        assert request.token_valid
        assert not request.token_in_url


def test_deleted_and_archived_deals_land_flagged(syncer: Syncer) -> None:
    syncer.run()
    rows = table_rows(syncer, "deals")
    deleted = [r for r in syncer.fake.records("deals", deleted=True) if r["status"] == "deleted"]
    archived = syncer.fake.records("deals", archived=True)
    assert deleted and archived, "the fake must have deleted and archived deals"
    assert all(rows[r["id"]]["is_deleted"] is True for r in deleted)
    assert all(rows[r["id"]]["is_archived"] is True for r in archived)
    deals_requests = [r for r in syncer.fake.requests if r.path == "/api/v2/deals"]
    assert all(r.query.get("status") == "open,won,lost,deleted" for r in deals_requests)


def test_second_run_without_changes_loads_nothing_and_asks_only_for_changes(syncer: Syncer) -> None:
    syncer.run()
    syncer.fake.reset_requests()
    result = syncer.run()
    assert result.code == 0
    assert {r.name: r.rows for r in result.reports} == dict.fromkeys(CORE, 0)
    list_requests = [r for r in syncer.fake.requests if r.endpoint in INCREMENTAL]
    assert list_requests
    assert all("updated_since" in r.query for r in list_requests)
    assert all(r.query.get("sort_by") == "update_time" for r in list_requests)


def test_changes_between_runs_refetch_only_changed_rows(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    deal_ids = [d["id"] for d in fake.records("deals")]
    person_ids = [p["id"] for p in fake.records("persons")]
    fake.update("deals", deal_ids[0], title="Renamed deal")
    fake.update("persons", person_ids[0], name="Renamed person")
    fake.add("deals", title="Brand new deal")
    fake.delete("deals", deal_ids[1])
    fake.archive("deals", deal_ids[2])
    fake.delete("organizations", fake.records("organizations")[0]["id"])  # vanishes from lists

    result = syncer.run()
    assert result.code == 0, result.message
    rows = {r.name: r.rows for r in result.reports}
    assert rows["deals"] == 4  # updated, added, deleted (status=deleted), archived
    assert rows["persons"] == 1
    assert rows["activities"] == rows["products"] == 0
    assert_matches_fake(syncer, "deals", all_deals(fake))
    assert_matches_fake(syncer, "persons", fake.records("persons"))
    deals = table_rows(syncer, "deals")
    assert deals[deal_ids[0]]["title"] == "Renamed deal"
    assert deals[deal_ids[1]]["is_deleted"] is True
    assert deals[deal_ids[2]]["is_archived"] is True


def test_rows_sharing_the_boundary_update_time_are_not_lost(syncer: Syncer) -> None:
    fake = syncer.fake
    ids = [d["id"] for d in fake.records("deals")][:6]
    at = fake.now
    for deal_id in ids[:3]:
        fake.update("deals", deal_id, title=f"same second {deal_id}", at=at)
    syncer.run()
    # more changes in the very same second as the previous run's highest update_time
    for deal_id in ids[3:]:
        fake.update("deals", deal_id, title=f"same second later {deal_id}", at=at)
    result = syncer.run()
    assert {r.name: r.rows for r in result.reports}["deals"] == 3  # not the unchanged three
    assert_matches_fake(syncer, "deals", all_deals(fake))


def test_a_record_updated_while_the_run_pages_is_neither_lost_nor_duplicated(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    first_ids = [d["id"] for d in sorted(fake.records("deals"), key=lambda d: d["update_time"])]
    touched: list[int] = []

    def update_during_paging(request: Any) -> None:
        if request.path == "/api/v2/deals" and request.query.get("cursor") and not touched:
            touched.append(first_ids[0])  # already read on page 1; moves to the end
            fake.update("deals", first_ids[0], title="updated mid-run")

    fake.on_request(update_during_paging)
    result = syncer.run()
    assert result.code == 0
    assert touched
    assert_matches_fake(syncer, "deals", all_deals(fake))
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM deals") == [(0,)]
    assert table_rows(syncer, "deals")[first_ids[0]]["title"] == "updated mid-run"


def test_pipelines_and_stages_are_reread_and_vanished_ones_flagged(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    stage = fake.records("stages")[0]
    fake.delete("stages", stage["id"])
    fake.update("pipelines", fake.records("pipelines")[0]["id"], name="Renamed pipeline")
    fake.reset_requests()
    result = syncer.run()
    rows = {r.name: r.rows for r in result.reports}
    assert rows["pipelines"] == 1 and rows["stages"] == 0  # only what changed is loaded
    assert result.vanished["stages"] == 1
    assert table_rows(syncer, "stages")[stage["id"]]["is_deleted"] is True
    stage_requests = [r for r in fake.requests if r.path == "/api/v2/stages"]
    assert stage_requests and all("updated_since" not in r.query for r in stage_requests)


def test_a_no_change_run_of_the_default_set_costs_at_most_100_tokens(syncer: Syncer) -> None:
    from sources.pipedrive.entities import DEFAULT_ENTITIES

    first = syncer.run(entities=",".join(DEFAULT_ENTITIES), options={"refresh_all": False})
    assert first.code == 0, first.message
    syncer.fake.reset_requests()
    second = syncer.run(entities=",".join(DEFAULT_ENTITIES), options={"refresh_all": False})
    assert second.code == 0
    spent = sum(r.cost for r in syncer.fake.requests)
    assert spent == second.metrics.tokens  # our accounting matches what Pipedrive charges
    assert spent <= 100, {r.endpoint: r.cost for r in syncer.fake.requests}
    assert {r.rows for r in second.reports} == {0}


def test_a_table_left_behind_its_schema_is_healed_before_the_next_load(syncer: Syncer) -> None:
    import duckdb

    syncer.run(entities="deals")
    # a crash at the wrong moment can leave the warehouse with the schema's hash stored but a
    # table not migrated: emulate one by dropping a column behind dlt's back
    with duckdb.connect(str(syncer.db_path)) as con:
        con.execute("ALTER TABLE pipedrive.main.deals DROP COLUMN lost_reason")
    deal = syncer.fake.records("deals")[0]
    syncer.fake.update("deals", deal["id"], status="lost", lost_reason="too expensive")
    result = syncer.run(entities="deals")
    assert result.code == 0, result.message
    assert table_rows(syncer, "deals")[deal["id"]]["lost_reason"] == "too expensive"


def test_full_refresh_drops_tables_and_state_and_reloads_everything(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    gone = fake.records("organizations")[0]["id"]
    fake.delete("organizations", gone)  # vanishes from lists: only a reload can drop it
    result = syncer.run(full_refresh=True)
    assert result.code == 0, result.message
    assert {r.name: r.rows for r in result.reports}["deals"] == len(all_deals(fake))
    assert gone not in table_rows(syncer, "organizations")
    for table in CORE:
        expected = all_deals(fake) if table == "deals" else fake.records(table)
        assert_matches_fake(syncer, table, expected)


def test_every_run_records_one_row_per_entity_in_sync_runs(syncer: Syncer) -> None:
    first = syncer.run()
    second = syncer.run()
    rows = syncer.query(
        "SELECT run_id, count(*), min(_dlt_load_id) FROM sync_runs GROUP BY run_id"
        " ORDER BY min(finished_at)"
    )
    assert [count for _, count, _ in rows] == [len(CORE_ENTITIES), len(CORE_ENTITIES)]
    # the table is created with the first run's load; every run inserts its rows directly
    assert rows[0][2] == first.load_ids[-1]
    assert rows[1][2] == second.load_ids[-1]


def test_dlts_dataset_api_reads_the_synced_tables(syncer: Syncer) -> None:
    """`pipeline.dataset()` (dlt's own way to explore a load) works on what a sync wrote."""
    from pipelines.pipedrive_sync.runner import duckdb_destination, make_pipeline

    assert syncer.run(entities="deals").code == 0
    settings = syncer.settings(entities="deals")
    destination, connection = duckdb_destination(settings.duckdb_path)
    try:
        dataset = make_pipeline(settings, destination).dataset()
        (count,) = dataset("SELECT count(*) FROM deals").fetchall()[0]
        assert count == len(all_deals(syncer.fake))
        assert len(dataset.deals.select("id", "title").limit(3).fetchall()) == 3
    finally:
        connection.close()


def test_pages_count_every_page_read_from_the_api(syncer: Syncer, fake: FakePipedrive) -> None:
    """However pages are grouped for conversion, `pages` is what was read (as in sync_runs)."""
    assert syncer.run(entities="deals,persons,leads").code == 0
    for deal in fake.records("deals"):  # the column plan is made: these pages group
        fake.update("deals", deal["id"], title=f"{deal['title']}!")
    seen = len(fake.requests)
    result = syncer.run(entities="deals,persons,leads")
    assert result.code == 0, result.message
    lists = {
        "deals": ("/api/v2/deals", "/api/v2/deals/archived"),
        "persons": ("/api/v2/persons",),
        "leads": ("/v1/leads", "/v1/leads/archived"),
    }
    for report in result.reports:
        requests = [r for r in fake.requests[seen:] if r.path in lists[report.name]]
        assert report.pages == len(requests) > 0, report.name
