"""The benchmark command runs end to end on a tiny account (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import dlt
import pytest

from pipelines.pipedrive_sync import bench
from pipelines.pipedrive_sync.connect import (
    DUCKDB_MEMORY_LIMIT,
    DUCKDB_ROW_GROUP_SIZE,
    DUCKDB_THREADS,
    duckdb_destination,
)


def test_bench_reports_rows_rates_memory_and_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    bench.main(
        [
            *("--deals", "600", "--custom-fields", "40", "--persons", "50"),
            *("--organizations", "20", "--activities", "30", "--products", "5"),
            *("--runs", "1", "--entities", "deals", "--json", str(out)),
            *("--workdir", str(tmp_path / "work")),
            *("--latency-ms", "30", "--sequential-baseline"),
        ]
    )
    printed = capsys.readouterr().out
    assert "deals" in printed and "no-change incremental run" in printed
    assert "one entity at a time (parallel_entities = 1)" in printed
    summary = json.loads(out.read_text())["summary"]
    deals = summary["entities"]["deals"]
    assert deals["rows"] == 600
    assert deals["raw_rows_per_s"] > 0 and deals["sync_rows_per_s"] > 0
    assert deals["peak_rss_mb"] > 0
    assert summary["whole_run"]["exit_code"] == 0
    assert summary["whole_run"]["sequential_seconds"] > 0
    raw = json.loads(out.read_text())["runs"][0]["raw"]["entities"]["deals"]
    assert raw["seconds"] >= 0.03 * raw["requests"]  # the fake waited out its latency each time
    incremental = summary["incremental"]
    assert incremental["exit_code"] == 0
    assert incremental["tokens"] == incremental["fake_tokens"] > 0


def test_bench_on_messy_data_with_and_without_the_columnar_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {}
    for columnar in ("on", "off"):
        out = tmp_path / f"bench-{columnar}.json"
        bench.main(
            [
                *("--deals", "300", "--persons", "10", "--organizations", "5"),
                *("--activities", "5", "--products", "5", "--runs", "1"),
                *("--entities", "deals", "--no-whole-run", "--messy", "--columnar", columnar),
                *("--json", str(out), "--workdir", str(tmp_path / f"work-{columnar}")),
            ]
        )
        summary = json.loads(out.read_text())["summary"]
        assert summary["messy"] is True and summary["columnar"] == columnar
        rows[columnar] = summary["entities"]["deals"]["rows"]
    assert rows == {"on": 300, "off": 300}
    printed = capsys.readouterr().out
    assert "messy custom field values" in printed and "columnar path off" in printed


def test_the_duckdb_destination_bounds_its_memory(tmp_path: Path) -> None:
    _, connection = duckdb_destination(tmp_path / "x.duckdb")
    try:
        limit = connection.execute("SELECT current_setting('memory_limit')").fetchone()
        temp = connection.execute("SELECT current_setting('temp_directory')").fetchone()
    finally:
        connection.close()
    assert limit is not None
    amount, unit = limit[0].split()
    assert unit == "MiB" and float(amount) <= int(DUCKDB_MEMORY_LIMIT.removesuffix("MB"))
    assert temp is not None and temp[0].endswith("x.duckdb.tmp")


def test_loads_keep_duckdbs_checkpoint_threshold_threads_and_row_groups(tmp_path: Path) -> None:
    """dlt sets a 1 GB checkpoint threshold on the connections it borrows; ours must win, or
    a big load is written to the WAL and then again at close. Loads fill row groups of
    `DUCKDB_ROW_GROUP_SIZE` rows (written while inserting), not DuckDB's 122,880."""
    rows = DUCKDB_ROW_GROUP_SIZE + 10
    destination, connection = duckdb_destination(tmp_path / "x.duckdb")
    try:
        pipeline = dlt.pipeline(
            "settings_probe", destination=destination, pipelines_dir=str(tmp_path / "dlt")
        )
        pipeline.run([{"id": n} for n in range(rows)], table_name="probe")
        threshold, threads = connection.execute(
            "SELECT current_setting('checkpoint_threshold'), current_setting('threads')"
        ).fetchone() or (None, None)
        dataset = pipeline.dataset_name
        row_groups = connection.execute(
            f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{dataset}.probe')"
        ).fetchone()
    finally:
        connection.close()
    assert threshold == "16.0 MiB"
    assert threads == DUCKDB_THREADS == 1
    assert DUCKDB_ROW_GROUP_SIZE < rows < 122_880
    assert row_groups == (2,)
