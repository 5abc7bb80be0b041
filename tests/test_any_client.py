"""Any SQL client reads a DuckDB warehouse with no setup; older warehouses keep their dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
from conftest import Syncer

from pipelines.pipedrive_sync.warehouse import open_warehouse

CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    return subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_plain_duckdb_connection_reads_tables_and_views_of_a_new_warehouse(
    syncer: Syncer,
) -> None:
    assert syncer.run().code == 0
    expected = len(syncer.fake.ids("deals", deleted=None))
    # what `duckdb pipedrive.duckdb`, DBeaver, harlequin or pandas do: open the file, query
    with duckdb.connect(str(syncer.db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM deals").fetchone() == (expected,)
        assert con.execute("SELECT count(*) FROM deals_enriched").fetchone() == (expected,)
        assert con.execute("SELECT count(*) FROM pipedrive.deals").fetchone() == (expected,)
        schemas = {
            row[0] for row in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()
        }
    assert "pipedrive" not in schemas  # nothing named like the file's catalog


def test_a_warehouse_with_the_older_pipedrive_dataset_keeps_using_it(
    syncer: Syncer, tmp_path: Path
) -> None:
    assert syncer.run(dataset="pipedrive").code == 0  # as versions before `main` made it
    fake = syncer.fake
    deal = fake.ids("deals")[0]
    fake.update("deals", deal, title="Renamed after the upgrade")
    result = syncer.run()  # no --dataset: the file's own dataset is found
    assert result.code == 0
    assert sum(r.rows for r in result.reports if r.name == "deals") == 1  # incremental
    with duckdb.connect(str(syncer.db_path), read_only=True) as con:
        schemas = {
            row[0]
            for row in con.execute(
                "SELECT DISTINCT table_schema FROM information_schema.tables"
            ).fetchall()
        }
    assert "pipedrive" in schemas and "main" not in schemas
    with open_warehouse(syncer.db_path) as con:
        assert con.execute("SELECT title FROM deals WHERE id = ?", [deal]).fetchone() == (
            "Renamed after the upgrade",
        )
    proc = _cli(["query", "-f", "csv", f"SELECT title FROM deals WHERE id = {deal}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["title", "Renamed after the upgrade"]


def test_query_shows_the_whole_duckdb_error(syncer: Syncer, tmp_path: Path) -> None:
    assert syncer.run().code == 0
    proc = _cli(["query", "SELECT titel FROM deals"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert 'Referenced column "titel" not found' in proc.stderr
    assert '"title"' in proc.stderr  # DuckDB's candidate bindings
    proc = _cli(["query", "SELECT * FROM deal"], tmp_path)
    assert proc.returncode == 1
    assert 'Did you mean "deals"' in proc.stderr
