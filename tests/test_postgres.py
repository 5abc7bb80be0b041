"""PostgreSQL for real: the fake account synced into a throwaway PostgreSQL server equals DuckDB.

The server comes from `pg_server` (one per test process, see there).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN
from pg_server import Server

from pipelines.pipedrive_sync.runner import run_sync
from pipelines.pipedrive_sync.settings import RunSettings
from pipelines.pipedrive_sync.views import VIEWS
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.http import HttpSettings
from sources.pipedrive_fake import FakePipedrive

pytestmark = pytest.mark.postgres

CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]
# bookkeeping values that legitimately differ between two runs
VOLATILE = {
    *("_dlt_load_id", "_dlt_id", "run_id", "started_at", "finished_at", "detected_at"),
    "applied_at",
    "claimed_at",
    "days_in_stage",  # of a deal still in its stage: up to each query's own now
}
TYPE_MATCH = {  # DuckDB information_schema type → PostgreSQL's, as docs/tables.md promises
    "BIGINT": {"bigint"},
    "VARCHAR": {"character varying"},
    "DOUBLE": {"double precision"},
    "BOOLEAN": {"boolean"},
    "TIMESTAMP WITH TIME ZONE": {"timestamp with time zone"},
    "DATE": {"date"},
    "TIME": {"time without time zone"},
    "JSON": {"json", "jsonb"},
}


@dataclass
class Warehouses:
    fake: FakePipedrive
    server: Server
    work: Path
    duckdb_path: Path

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIPEDRIVE_", "SOURCES__", "DESTINATION__"))
        }
        env.update(
            DLT_DATA_DIR=str(self.work / "dlt-data"),
            PIPEDRIVE_API_TOKEN=TOKEN,
            PIPEDRIVE_BASE_URL=self.fake.base_url,
            SOURCES__PIPEDRIVE__PAGE_LIMIT="50",  # cross page boundaries; set like a user would
            DESTINATION__POSTGRES__CREDENTIALS=self.server.url,
        )
        return env

    def sync(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*CLI, "run", *args],
            env=self.env(),
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc

    def sync_both(self, refresh_all: bool = False, refresh_fields: bool = False) -> None:
        """PostgreSQL through the command line, DuckDB in-process (same settings, faster)."""
        flags = ["--refresh-all"] if refresh_all else []
        flags += ["--refresh-fields"] if refresh_fields else []
        self.sync("--destination", "postgres", *flags)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DLT_DATA_DIR", str(self.work / "dlt-data"))
            settings = RunSettings(
                token=TOKEN,
                base_url=self.fake.base_url,
                duckdb_path=self.duckdb_path,
                http=replace(HttpSettings(), page_limit=50),
            )
            settings.options = replace(
                settings.options, refresh_all=refresh_all, force_fields_refresh=refresh_fields
            )
            assert run_sync(settings).code == 0

    def postgres(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        import psycopg2

        connection = psycopg2.connect(self.server.url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return [d[0] for d in cursor.description], cursor.fetchall()
        finally:
            connection.close()

    def duckdb(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with open_duckdb(self.duckdb_path) as connection:
            cursor = connection.execute(sql)
            return [d[0] for d in cursor.description], cursor.fetchall()


@pytest.fixture(scope="module")
def warehouses(postgres: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouses]:
    work = tmp_path_factory.mktemp("postgres-sync")
    fake = FakePipedrive(
        token=TOKEN, seed=11, scale={"deals": 150, "persons": 70, "activities": 60}
    )
    fake.start()
    try:
        both = Warehouses(fake, postgres, work, work / "pipedrive.duckdb")
        both.sync_both()
        yield both
    finally:
        fake.stop()


def _normalize(value: Any, data_type: str) -> Any:
    if value is None:
        return None
    if data_type == "JSON" and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
    return bool(a == b)


# each warehouse's default dataset: DuckDB's `main`, `pipedrive` elsewhere
DUCKDB_DATASET, POSTGRES_DATASET = "main", "pipedrive"


def _relations(both: Warehouses, kind: str) -> set[str]:
    sql = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
        f" AND table_type = '{kind}' AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\'"
    )
    duck = {r[0] for r in both.duckdb(sql.format(schema=DUCKDB_DATASET))[1]}
    pg = {r[0] for r in both.postgres(sql.format(schema=POSTGRES_DATASET))[1]}
    assert duck == pg, f"{kind}: DuckDB has {sorted(duck - pg)}, PostgreSQL has {sorted(pg - duck)}"
    return duck


def _column_types(both: Warehouses, relation: str) -> dict[str, str]:
    sql = (
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema ="
        f" '{{schema}}' AND table_name = '{relation}'"
    )
    duck = dict(both.duckdb(sql.format(schema=DUCKDB_DATASET))[1])
    pg = dict(both.postgres(sql.format(schema=POSTGRES_DATASET))[1])
    assert set(duck) == set(pg), f"{relation}: columns differ: {set(duck) ^ set(pg)}"
    for column, duck_type in duck.items():
        assert pg[column] in TYPE_MATCH.get(duck_type, {duck_type}), (
            f"{relation}.{column}: DuckDB {duck_type} vs PostgreSQL {pg[column]}"
        )
    return duck


def _assert_same_rows(both: Warehouses, relation: str) -> int:
    types = _column_types(both, relation)
    columns = sorted(c for c in types if c not in VOLATILE)
    select = ", ".join(f'"{c}"' for c in columns)
    _, duck_rows = both.duckdb(f'SELECT {select} FROM "{relation}"')
    _, pg_rows = both.postgres(f'SELECT {select} FROM pipedrive."{relation}"')
    assert len(duck_rows) == len(pg_rows), f"{relation}: {len(duck_rows)} vs {len(pg_rows)} rows"

    def keyed(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
        normalized = [
            [_normalize(v, types[c]) for c, v in zip(columns, row, strict=True)] for row in rows
        ]
        return sorted(normalized, key=lambda r: json.dumps(r, default=str, sort_keys=True))

    for duck_row, pg_row in zip(keyed(duck_rows), keyed(pg_rows), strict=True):
        for column, d, p in zip(columns, duck_row, pg_row, strict=True):
            assert _same(d, p), f"{relation}.{column}: DuckDB {d!r} vs PostgreSQL {p!r}"
    return len(duck_rows)


def _assert_warehouses_equal(both: Warehouses) -> None:
    tables = _relations(both, "BASE TABLE")
    assert {"deals", "persons", "stages", "custom_fields", "sync_runs"} <= tables
    counts = {table: _assert_same_rows(both, table) for table in tables}
    assert counts["deals"] == len(
        {r["id"] for r in both.fake.records("deals", deleted=None, archived=None)}
    )
    views = _relations(both, "VIEW")
    assert views == set(VIEWS)
    for view in views:
        assert _assert_same_rows(both, view) > 0


def test_postgres_holds_exactly_what_duckdb_holds(warehouses: Warehouses) -> None:
    _assert_warehouses_equal(warehouses)
    _, rows = warehouses.postgres(
        "SELECT count(*), count(pipeline_name), count(stage_name) FROM pipedrive.deals_enriched"
    )
    total, with_pipeline, with_stage = rows[0]
    assert total == with_pipeline == with_stage > 0


def test_the_stage_views_agree_on_deals_moving_over_five_runs(warehouses: Warehouses) -> None:
    from test_stage_views import moving_pipeline

    # --refresh-all: the new pipeline's stages are read at once, not an hour later
    moves = moving_pipeline(warehouses.fake, lambda: warehouses.sync_both(refresh_all=True))
    _assert_warehouses_equal(warehouses)
    _, rows = warehouses.postgres(
        "SELECT stage_id, deals_entered, median_days, next_stage_rate, won_rate"
        f" FROM pipedrive.stage_velocity WHERE pipeline_id = {moves.pipeline}"
        " ORDER BY stage_order_nr"
    )
    s1, s2, s3 = moves.stages
    assert rows == [(s1, 4, 2.0, 0.25, 0.25), (s2, 2, 4.0, 0.5, 0.5), (s3, 1, 3.0, 0.0, 1.0)]
    _, rows = warehouses.postgres(
        "SELECT count(*) FROM pipedrive.pipeline_daily WHERE currency = 'USD'"
        f" AND pipeline_id = {moves.pipeline}"
    )
    assert rows == [(2,)]  # B, 500 USD, open on days 0 and 1


def test_a_new_custom_field_reaches_both_warehouses_and_the_views(warehouses: Warehouses) -> None:
    fake = warehouses.fake
    key = fake.add_field("deals", "Postgres Tier", "enum", options=["Gold", "Silver"])
    option = fake.field("deals", key).options[1]
    deal_id = fake.records("deals")[0]["id"]
    fake.update("deals", deal_id, custom_fields={key: option.id})
    warehouses.sync_both()
    _assert_warehouses_equal(warehouses)
    # the view was recreated with the new column (PostgreSQL cannot just "replace" it)
    sql = f"SELECT postgres_tier, stage_name FROM pipedrive.deals_enriched WHERE id = {deal_id}"
    _, rows = warehouses.postgres(sql)
    assert rows[0][0] == "Silver" and rows[0][1]


def test_renamed_standard_options_are_rewritten_in_postgres_too(warehouses: Warehouses) -> None:
    fake = warehouses.fake
    hot = [d["id"] for d in fake.records("deals") if 1 in (d["label_ids"] or [])]
    fake.rename_option("deals", "label_ids", 1, "Red hot")
    fake.rename_option("deals", "visible_to", 3, "Everyone")
    warehouses.sync_both(refresh_fields=True)
    _assert_warehouses_equal(warehouses)
    _, rows = warehouses.postgres(
        "SELECT id, labels::text, visible_to, visible_to_label FROM pipedrive.deals_enriched"
    )
    labelled = {r[0]: json.loads(r[1]) for r in rows if r[1]}
    assert hot and all("Red hot" in labelled[i] and "Hot" not in labelled[i] for i in hot)
    assert {r[3] for r in rows if r[2] == 3} == {"Everyone"}


def test_a_full_refresh_drops_and_rebuilds_tables_under_the_views(warehouses: Warehouses) -> None:
    # PostgreSQL refuses to drop a table a view depends on: the views must not block it
    warehouses.sync("--destination", "postgres", "--full-refresh")
    _, rows = warehouses.postgres("SELECT count(*) FROM pipedrive.deals_enriched")
    deals = warehouses.fake.records("deals", deleted=None, archived=None)
    assert rows[0][0] == len({d["id"] for d in deals})


def test_repeated_rows_are_repaired_in_postgres(
    postgres: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair after a re-run append job is plain SQL that PostgreSQL runs too."""
    import dlt

    from sources.pipedrive.postload import drop_duplicate_ids

    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path))
    pipeline = dlt.pipeline(
        "dedupe_check",
        destination=dlt.destinations.postgres(postgres.url),
        dataset_name="dedupe_check",
    )
    older, newer = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    rows = [
        {"id": 1, "update_time": older, "title": "old"},
        {"id": 1, "update_time": newer, "title": "new"},
        {"id": 2, "update_time": older, "title": "only"},
    ]
    pipeline.run(rows, table_name="deals", write_disposition="append")
    versions = [  # keyed by two columns, the same version twice
        {"deal_id": 1, "valid_from": older, "stage_id": 1},
        {"deal_id": 1, "valid_from": older, "stage_id": 1},
        {"deal_id": 1, "valid_from": newer, "stage_id": 2},
    ]
    pipeline.run(versions, table_name="deal_history", write_disposition="append")
    keyed = {"deal_history": ("deal_id", "valid_from")}
    tables = ["deals", "deal_history", "no_such_table"]
    assert drop_duplicate_ids(pipeline, tables, key_columns=keyed) == {
        "deals": 1,
        "deal_history": 1,
    }
    assert drop_duplicate_ids(pipeline, tables, key_columns=keyed) == {}
    import psycopg2

    connection = psycopg2.connect(postgres.url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, title FROM dedupe_check.deals ORDER BY id")
            assert cursor.fetchall() == [(1, "new"), (2, "only")]
            cursor.execute(
                "SELECT deal_id, stage_id FROM dedupe_check.deal_history ORDER BY valid_from"
            )
            assert cursor.fetchall() == [(1, 1), (1, 2)]
    finally:
        connection.close()
