"""A first sync appends into empty tables (no staging copy, no merge), and stays exact."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Syncer, all_deals, assert_matches_fake

from sources.pipedrive import source as source_module


def _disposition(syncer: Syncer, table: str) -> str:
    pipeline = syncer.pipeline()
    return str(pipeline.default_schema.tables[table].get("write_disposition"))


def _history_is_one_open_version_per_deal(syncer: Syncer) -> None:
    """What a first sync's `deal_history` holds: each loaded deal once, open, keys unique."""
    assert syncer.query(
        "SELECT count(*), count(DISTINCT deal_id), count(valid_to) FROM deal_history"
    ) == syncer.query("SELECT count(*), count(*), 0 FROM deals")


def _repeated_history_keys(syncer: Syncer) -> int:
    found = syncer.query(
        "SELECT count(*) FROM (SELECT deal_id, valid_from FROM deal_history"
        " GROUP BY deal_id, valid_from HAVING count(*) > 1) AS d"
    )
    return int(found[0][0])


def _sorted_deal_ids(syncer: Syncer) -> list[int]:
    deals = syncer.fake.records("deals")
    return [d["id"] for d in sorted(deals, key=lambda d: d["update_time"])]


def test_a_first_sync_appends_then_later_runs_merge(syncer: Syncer) -> None:
    assert syncer.run(entities="deals").code == 0
    assert _disposition(syncer, "deals") == "append"
    assert_matches_fake(syncer, "deals", all_deals(syncer.fake))
    deal = _sorted_deal_ids(syncer)[0]
    syncer.fake.update("deals", deal, title="changed")
    assert syncer.run(entities="deals").code == 0
    assert _disposition(syncer, "deals") == "merge"
    assert_matches_fake(syncer, "deals", all_deals(syncer.fake))
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM deals") == [(0,)]


def test_a_first_sync_appends_the_deals_history_too_then_later_runs_merge(
    syncer: Syncer,
) -> None:
    """The candidate versions of appended deals are new keys of an empty history: appended
    with them (no staging copy, no merge); later runs merge them on (deal_id, valid_from)."""
    assert syncer.run(entities="deals").code == 0
    assert _disposition(syncer, "deal_history") == "append"
    _history_is_one_open_version_per_deal(syncer)
    deal = _sorted_deal_ids(syncer)[0]
    syncer.fake.update("deals", deal, status="won")
    assert syncer.run(entities="deals").code == 0
    assert _disposition(syncer, "deal_history") == "merge"
    assert _repeated_history_keys(syncer) == 0
    assert syncer.query(
        f"SELECT status, valid_to IS NULL FROM deal_history WHERE deal_id = {deal}"
        " ORDER BY valid_from"
    ) == [("open", False), ("won", True)]


def test_a_history_that_holds_rows_is_merged_into_even_on_a_first_sync(
    syncer: Syncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty deals do not make an empty history (versions kept from before, a backfill): the
    versions are then merged, while the deals are still appended."""
    from pipelines.pipedrive_sync import runner

    asked: list[list[str]] = []

    def history_holds_rows(pipeline: Any, tables: list[str]) -> frozenset[str]:
        asked.append(list(tables))
        return frozenset(tables) - {"deal_history"}

    monkeypatch.setattr(runner, "empty_tables", history_holds_rows)
    assert syncer.run(entities="deals").code == 0
    assert asked and "deal_history" in asked[0]
    assert _disposition(syncer, "deals") == "append"
    assert _disposition(syncer, "deal_history") == "merge"
    _history_is_one_open_version_per_deal(syncer)


@pytest.mark.parametrize("batch_rows", [1_000, 30])  # the repeat in one batch / a later one
def test_a_record_read_twice_in_the_first_chunk_turns_it_into_a_merge(
    syncer: Syncer, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    monkeypatch.setattr(source_module, "BATCH_ROWS", batch_rows)
    fake = syncer.fake
    first = _sorted_deal_ids(syncer)[0]
    touched: list[int] = []

    def update_during_paging(request: Any) -> None:
        if request.path == "/api/v2/deals" and request.query.get("cursor") and not touched:
            touched.append(first)  # read on page 1, listed again at the end
            fake.update("deals", first, title="updated mid-run")

    fake.on_request(update_during_paging)
    assert syncer.run(entities="deals").code == 0
    assert touched
    assert _disposition(syncer, "deals") == "merge"
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM deals") == [(0,)]
    assert syncer.query(f"SELECT title FROM deals WHERE id = {first}") == [("updated mid-run",)]
    assert_matches_fake(syncer, "deals", all_deals(fake))
    assert _disposition(syncer, "deal_history") == "merge"  # with the deals
    assert _repeated_history_keys(syncer) == 0


def test_every_chunk_of_a_first_sync_appends_while_its_ids_are_new(syncer: Syncer) -> None:
    result = syncer.run(entities="deals", options={"chunk_pages": 1})
    assert result.code == 0 and result.chunks > 2
    assert _disposition(syncer, "deals") == "append"
    assert_matches_fake(syncer, "deals", all_deals(syncer.fake))
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM deals") == [(0,)]
    assert _disposition(syncer, "deal_history") == "append"
    _history_is_one_open_version_per_deal(syncer)


@pytest.mark.parametrize("parallel", [1, 3])
def test_the_history_appends_in_every_chunk_next_to_other_entities(
    syncer: Syncer, parallel: int
) -> None:
    """Another entity ending its chunk says nothing about the deals' history: whichever
    finishes a chunk last, the next chunk appends the deals' versions again."""
    from sources.pipedrive.source import EntityExtractor

    history_appends: list[bool] = []
    remember = EntityExtractor._remember_appended

    def remember_then_look(self: EntityExtractor) -> None:
        remember(self)
        if self.entity.name == "persons":  # after the deals' own bookkeeping, or before
            history_appends.append("deal_history" in self.ctx.appended_ids)

    options = {"chunk_pages": 1, "parallel_entities": parallel}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EntityExtractor, "_remember_appended", remember_then_look)
        result = syncer.run(entities="deals,persons", options=options)
    assert result.code == 0 and result.chunks > 2
    # from the second chunk on the deals' first chunk has marked their history as appended
    assert len(history_appends) > 1 and all(history_appends[1:])
    assert _disposition(syncer, "deal_history") == "append"
    _history_is_one_open_version_per_deal(syncer)


def test_a_record_seen_in_an_earlier_chunk_turns_the_rest_into_merges(syncer: Syncer) -> None:
    fake = syncer.fake
    first = _sorted_deal_ids(syncer)[0]
    deal_requests: list[int] = []

    def update_in_the_second_chunk(request: Any) -> None:
        if request.path == "/api/v2/deals":
            deal_requests.append(1)
            if len(deal_requests) == 2:  # read in chunk 1, listed again at the very end
                fake.update("deals", first, title="updated in chunk 2")

    fake.on_request(update_in_the_second_chunk)
    result = syncer.run(entities="deals", options={"chunk_pages": 1})
    assert result.code == 0 and result.chunks > 2
    assert _disposition(syncer, "deals") == "merge"
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM deals") == [(0,)]
    assert syncer.query(f"SELECT title FROM deals WHERE id = {first}") == [("updated in chunk 2",)]
    assert_matches_fake(syncer, "deals", all_deals(fake))
    assert _disposition(syncer, "deal_history") == "merge"
    assert _repeated_history_keys(syncer) == 0


def test_hard_deletes_never_append(syncer: Syncer) -> None:
    assert syncer.run(entities="deals", options={"hard_deletes": True}).code == 0
    assert _disposition(syncer, "deals") == "merge"
    assert _disposition(syncer, "deal_history") == "merge"


def test_the_history_turns_into_a_merge_with_its_first_versions_after_the_deals_do() -> None:
    """A batch without candidate versions (no deal in it has an update_time) cannot carry the
    merge hint: the next batch that has versions must."""
    from types import SimpleNamespace

    import pyarrow as pa

    from sources.pipedrive.source import EntityExtractor

    extractor: Any = SimpleNamespace(
        entity=SimpleNamespace(name="deals"),
        _history_appends=True,
        _history_hinted=[],  # versions were appended before
        _append_ids=None,  # this batch turned the deals into a merge
        _plan=lambda: None,
        _column_hints=dict,
    )

    def history(update_time: str | None) -> list[Any]:
        table = pa.table({"id": [1], "update_time": pa.array([update_time], pa.string())})
        disposition = EntityExtractor._history_disposition(extractor)
        return list(EntityExtractor._history(extractor, table, disposition))

    assert history(None) == []  # no version to carry the hint
    [item] = history("2024-01-01T00:00:00Z")
    assert getattr(item.meta, "hints", {}).get("write_disposition") == "merge"
    assert extractor._history_appends is False
