"""`status` as monitoring relies on it: every entity ever synced, nothing fresh without a
successful run, typed CSV/JSON, OpenMetrics, cadences, and any SQL destination (PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_SCALE, TOKEN, run_cli, synced_warehouse
from pg_server import Server
from test_cli_read import _cli, _one_error_line

from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.entities import DEFAULT_ENTITIES
from sources.pipedrive_fake import FakePipedrive

ENTITIES = list(DEFAULT_ENTITIES)


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synced_warehouse(tmp_path_factory.mktemp("monitoring"), seed=5)


def _status(warehouse: Path, *args: str) -> subprocess.CompletedProcess:
    return _cli(["status", "--duckdb-path", str(warehouse), *args], warehouse.parent)


def _json_rows(proc: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _sql(warehouse: Path, sql: str) -> None:
    with open_duckdb(warehouse, read_only=False) as con:
        con.execute(sql)


def test_a_later_run_of_one_entity_does_not_drop_the_others_from_monitoring(
    warehouse: Path,
) -> None:
    """After a failed `run --entities deals` every entity is still listed and checked."""
    _sql(
        warehouse,
        "INSERT INTO sync_runs (run_id, entity, started_at, finished_at, status, exit_code,"
        " _dlt_load_id, _dlt_id) VALUES ('later', 'deals', now(), now() + INTERVAL 1 MINUTE,"
        " 'stopped', 75, 'x', 'later-deals')",
    )
    _sql(warehouse, "UPDATE sync_runs SET finished_at = finished_at - INTERVAL 3 HOUR")
    proc = _status(warehouse, "--format", "json", "--max-age", "2h")
    assert [r["entity"] for r in _json_rows(proc)] == ENTITIES
    assert proc.returncode == 1
    line = _one_error_line(proc)
    assert all(f"{entity} (3h" in line for entity in ENTITIES)


def test_data_without_a_successful_run_is_stale(warehouse: Path) -> None:
    """An interrupted first sync: data loaded, no run succeeded (or none was recorded)."""
    _sql(warehouse, "UPDATE sync_runs SET status = 'stopped', exit_code = 130")
    proc = _status(warehouse)
    assert proc.returncode == 1
    assert "deals (no successful sync yet)" in _one_error_line(proc)
    _sql(warehouse, "DELETE FROM sync_runs")
    proc = _status(warehouse, "--max-age", "2h", "--format", "json")
    assert proc.returncode == 1
    rows = _json_rows(proc)
    assert [r["entity"] for r in rows] == ENTITIES  # from the tables themselves
    assert all(r["stale"] and r["last_success"] is None for r in rows)


def test_unknown_entities_exit_78(warehouse: Path) -> None:
    proc = _status(warehouse, "--entities", "foo,deals")
    assert proc.returncode == 78
    assert "unknown foo" in _one_error_line(proc)


def test_csv_and_json_fields_are_typed_and_filled(warehouse: Path) -> None:
    proc = _status(warehouse, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    records = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["entity"] for r in records] == ENTITIES
    for record in records:
        assert record["stale"] == "false"
        assert int(record["age_seconds"]) >= 0
        assert int(record["rows"]) >= 0 and int(record["tokens_last_run"]) >= 0
        assert datetime.fromisoformat(record["last_success"]).tzinfo is not None
        assert record["last_exit_code"] == "0"
    for row in _json_rows(_status(warehouse, "--format", "json")):
        assert isinstance(row["age_seconds"], int) and row["stale"] is False
        assert isinstance(row["rows"], int) and isinstance(row["tokens_last_run"], int)


def test_status_shows_when_each_cadence_ran_and_runs_next(warehouse: Path) -> None:
    rows = {r["entity"]: r for r in _json_rows(_status(warehouse, "--format", "json"))}
    deals = {c["what"]: c for c in rows["deals"]["cadences"]}
    archived = deals["list deals/archived"]
    last = datetime.fromisoformat(archived["last"])
    assert datetime.fromisoformat(archived["next"]) - last == timedelta(minutes=60)
    reconcile = deals["id reconciliation"]  # the first sync's full read listed every id
    assert reconcile["last"] == rows["deals"]["last_run"]
    last_listed = datetime.fromisoformat(reconcile["last"])
    assert datetime.fromisoformat(reconcile["next"]) - last_listed == timedelta(hours=24)
    fields = deals["field definitions"]
    assert datetime.fromisoformat(fields["next"]) - datetime.fromisoformat(
        fields["last"]
    ) == timedelta(hours=6)
    users = {c["what"]: c for c in rows["users"]["cadences"]}
    assert datetime.fromisoformat(users["list"]["next"]) - datetime.fromisoformat(
        users["list"]["last"]
    ) == timedelta(hours=12)
    assert rows["deals"]["next_due"] == archived["next"]
    table = _status(warehouse)
    assert "Cadences" in table.stdout and "id reconciliation" in table.stdout


_SAMPLE = re.compile(r'^([a-z_]+)\{dataset="main",entity="([a-z_]+)"\} (-?[0-9.e+]+)$')


def test_openmetrics_exposes_freshness_rows_tokens_and_exit_status(warehouse: Path) -> None:
    env_budget = {"SOURCES__PIPEDRIVE__DAILY_TOKEN_BUDGET": "30000"}
    proc = run_cli(
        ["status", "--duckdb-path", str(warehouse), "--format", "openmetrics"],
        {**os.environ, **env_budget, "DLT_DATA_DIR": str(warehouse.parent / "dlt-data")},
        warehouse.parent,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "# EOF"
    samples: dict[str, dict[str, float]] = {}
    for line in lines:
        match = _SAMPLE.match(line)
        if match:
            samples.setdefault(match[1], {})[match[2]] = float(match[3])
        else:
            assert line.startswith(("# TYPE ", "# HELP ", "# EOF", "pipedrive_sync_")), line
    now = datetime.now(UTC).timestamp()
    freshness = samples["pipedrive_sync_last_success_timestamp_seconds"]
    assert set(freshness) == set(ENTITIES)
    assert all(0 <= now - value < 600 for value in freshness.values())
    with open_duckdb(warehouse) as con:
        deals = con.execute("SELECT count(*) FROM deals").fetchone()[0]  # type: ignore[index]
        used = con.execute("SELECT sum(tokens) FROM sync_runs").fetchone()[0]  # type: ignore[index]
    assert samples["pipedrive_sync_rows"]["deals"] == deals
    assert samples["pipedrive_sync_last_exit_code"] == dict.fromkeys(ENTITIES, 0.0)
    assert samples["pipedrive_sync_last_run_tokens"]["deals"] > 0
    assert samples["pipedrive_sync_stale"] == dict.fromkeys(ENTITIES, 0.0)
    assert f'pipedrive_sync_tokens_used_today{{dataset="main"}} {used}' in lines
    assert f'pipedrive_sync_daily_tokens_left{{dataset="main"}} {30000 - used}' in lines


def test_openmetrics_reports_never_synced_as_timestamp_zero(warehouse: Path) -> None:
    _sql(warehouse, "DELETE FROM sync_runs WHERE entity = 'persons'")
    proc = _status(warehouse, "--format", "openmetrics")
    assert proc.returncode == 1  # persons has data but no successful run
    assert (
        'pipedrive_sync_last_success_timestamp_seconds{dataset="main",entity="persons"} 0.0'
        in proc.stdout.splitlines()
    )


# -- PostgreSQL ----------------------------------------------------------------------------
@pytest.mark.postgres
def test_status_fields_and_query_read_postgres(postgres: Server, tmp_path: Path) -> None:
    url = postgres.database("monitoring")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPEDRIVE_", "SOURCES__", "DESTINATION__"))
    }
    with FakePipedrive(token=TOKEN, seed=9, scale=dict(SMALL_SCALE)) as fake:
        env.update(
            DLT_DATA_DIR=str(tmp_path / "dlt-data"),
            PIPEDRIVE_API_TOKEN=TOKEN,
            PIPEDRIVE_BASE_URL=fake.base_url,
            DESTINATION__POSTGRES__CREDENTIALS=url,
        )
        synced = run_cli(
            ["run", "--destination", "postgres", "--entities", "deals,persons"],
            env,
            tmp_path,
            timeout=300,
        )
        assert synced.returncode == 0, synced.stderr
        deals = len(fake.records("deals", deleted=None, archived=None))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli([*args, "--destination", "postgres"], env, tmp_path)

    status = cli("status", "--format", "json", "--max-age", "1h")
    assert status.returncode == 0, status.stderr
    rows = {r["entity"]: r for r in _json_rows(status)}
    assert set(rows) == {"deals", "persons"}
    assert rows["deals"]["rows"] == deals and rows["deals"]["last_status"] == "ok"
    assert {c["what"] for c in rows["deals"]["cadences"]} >= {"list deals/archived"}
    query = cli("query", "-f", "csv", "SELECT count(*) AS n FROM deals")
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["n", str(deals)]
    fields = cli("fields", "--entity", "deal", "-f", "json")
    assert fields.returncode == 0, fields.stderr
    assert {json.loads(line)["entity"] for line in fields.stdout.splitlines()} == {"deal"}
    bad = cli("query", "SELECT * FROM no_such_table")
    assert bad.returncode == 1 and "no_such_table" in _one_error_line(bad)
    openmetrics = cli("status", "-f", "openmetrics")
    assert openmetrics.returncode == 0 and openmetrics.stdout.endswith("# EOF\n")
    missing = cli("status", "--dataset", "elsewhere")
    assert missing.returncode == 78 and "no dataset 'elsewhere'" in _one_error_line(missing)
