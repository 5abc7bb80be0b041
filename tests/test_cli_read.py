"""The commands that read the warehouse: status, query, fields, shell, docs, --help."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import CLI, TOKEN, run_cli, synced_warehouse
from typer.testing import CliRunner

from pipelines.pipedrive_sync import shell as shell_module
from pipelines.pipedrive_sync.cli import app
from pipelines.pipedrive_sync.views import VIEWS
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.entities import DEFAULT_ENTITIES
from sources.pipedrive.schema import table_columns
from sources.pipedrive_fake import FakePipedrive

ENTITIES = list(DEFAULT_ENTITIES)


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One warehouse synced from the fake, shared by this module's (read-only) tests."""
    return synced_warehouse(tmp_path_factory.mktemp("read-commands"), seed=3)


def _cli(
    args: list[str], cwd: Path, stdin: str | None = None, **extra_env: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env["DLT_DATA_DIR"] = str(cwd / "dlt-data")
    env.update(extra_env)
    return run_cli(args, env, cwd, stdin=stdin)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _invoke(args: list[str], stdin: str | None = None) -> Any:
    result = CliRunner().invoke(app, args, input=stdin, catch_exceptions=False)
    return result


def _count(path: Path, sql: str) -> Any:
    with open_duckdb(path) as con:
        row = con.execute(sql).fetchone()
        assert row is not None
        return row[0]


# -- status ----------------------------------------------------------------------------------
def test_status_lists_every_entity_with_its_rows_and_last_run(warehouse: Path) -> None:
    result = _invoke(["status", "--duckdb-path", str(warehouse), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["entity"] for r in rows] == ENTITIES  # entity-table order
    for row in rows:
        assert row["rows"] == _count(warehouse, f"SELECT count(*) FROM {row['entity']}")
        assert row["last_status"] == "ok" and row["last_exit_code"] == 0
        assert row["last_success"] == row["last_run"] and not row["stale"]
        assert 0 <= row["age_seconds"] < 600
    deleted = _count(warehouse, "SELECT count(*) FROM deals WHERE is_deleted")
    assert rows[0]["deleted"] == deleted > 0

    table = _invoke(["status", "--duckdb-path", str(warehouse), "--max-age", "1h"])
    assert table.exit_code == 0
    for entity in ENTITIES:
        assert entity in table.stdout


def test_status_exits_1_naming_the_stale_entities(warehouse: Path) -> None:
    with open_duckdb(warehouse, read_only=False) as con:
        # a later run: activities stopped early (budget), persons and stages not readable
        con.execute(
            "INSERT INTO sync_runs (run_id, entity, started_at, finished_at, status, exit_code,"
            " _dlt_load_id, _dlt_id) SELECT 'later', entity, now(), now(), CASE entity"
            " WHEN 'activities' THEN 'stopped' WHEN 'persons' THEN 'skipped'"
            " WHEN 'stages' THEN 'skipped' ELSE 'ok' END, 75, 'x', 'later-' || entity"
            " FROM sync_runs"
        )
        for entity, hours in (("persons", 3), ("stages", 3), ("activities", 5)):
            con.execute(
                "UPDATE sync_runs SET finished_at = finished_at - to_hours(?)"
                " WHERE entity = ? AND run_id <> 'later'",
                [hours, entity],
            )
    proc = _cli(["status", "--duckdb-path", str(warehouse), "--max-age", "2h"], warehouse.parent)
    assert proc.returncode == 1
    line = _one_error_line(proc)
    assert "persons (3h ago)" in line and "stages (3h ago)" in line
    assert "activities (5h ago)" in line and "deals" not in line
    assert "stopped (exit 75)" in proc.stdout  # the latest outcome is shown
    assert (
        _cli(
            ["status", "--duckdb-path", str(warehouse), "--max-age", "6h"], warehouse.parent
        ).returncode
        == 0
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--duckdb-path", "missing.duckdb"], "no DuckDB warehouse at missing.duckdb"),
        (["--dataset", "elsewhere"], "no dataset 'elsewhere'"),
        (["--max-age", "soon"], "--max-age 'soon' is not a duration"),
    ],
)
def test_status_configuration_problems_exit_78(
    warehouse: Path, args: list[str], needle: str
) -> None:
    if "--duckdb-path" not in args:
        args = ["--duckdb-path", str(warehouse), *args]
    proc = _cli(["status", *args], warehouse.parent)
    assert proc.returncode == 78
    assert needle in _one_error_line(proc)


def test_status_without_any_recorded_run_exits_78(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as con:
        con.execute("CREATE TABLE notes_of_mine (id BIGINT)")
    proc = _cli(["status", "--duckdb-path", "empty.duckdb"], tmp_path)
    assert proc.returncode == 78
    assert "no sync has been recorded" in _one_error_line(proc)


def test_reading_while_a_sync_holds_the_file_exits_75(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse)):  # a writer, like a running sync
        proc = _cli(
            ["status", "--duckdb-path", str(warehouse)],
            warehouse.parent,
            PIPEDRIVE_SYNC_READ_WAIT_SECONDS="0.2",
        )
    assert proc.returncode == 75
    assert "in use by another process" in _one_error_line(proc)
    assert "waited 0.2 s" in proc.stderr


def test_a_reader_waits_for_a_writer_to_let_go(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `listen` batch holds the file for a moment: reading commands wait instead of failing."""
    from pipelines.pipedrive_sync import warehouse as wh

    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE, str(warehouse)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "held"
    attempts: list[bool] = []
    real_open = wh.open_duckdb

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        try:
            connection = real_open(*args, **kwargs)
        except duckdb.IOException:
            if not attempts:
                writer.stdin.write("release\n")  # let go once the reader has met the lock
                writer.stdin.flush()
            attempts.append(False)
            raise
        attempts.append(True)
        return connection

    monkeypatch.setattr(wh, "open_duckdb", counting_open)
    try:
        with wh.open_warehouse(warehouse) as connection:
            assert connection.execute("SELECT count(*) FROM deals").fetchone()[0] > 0
    finally:
        writer.stdin.close()
        writer.wait(30)
        writer.stdout.close()
    assert attempts[0] is False and attempts[-1] is True


HOLD_FILE = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
connection.close()
"""


# -- query -----------------------------------------------------------------------------------
def test_query_prints_a_table_csv_and_json_lines(warehouse: Path) -> None:
    sql = "SELECT id, title, value, add_time, label_ids FROM deals ORDER BY id LIMIT 5"
    with open_duckdb(warehouse) as con:
        expected = con.execute(sql).fetchall()
    base = ["query", sql, "--duckdb-path", str(warehouse)]

    table = _invoke(base)
    assert table.exit_code == 0
    assert expected[0][1] in table.stdout and "5 rows" in table.stdout

    as_csv = _invoke([*base, "--format", "csv"])
    parsed = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert parsed[0] == ["id", "title", "value", "add_time", "label_ids"]
    assert [int(r[0]) for r in parsed[1:]] == [e[0] for e in expected]
    assert [r[1] for r in parsed[1:]] == [e[1] for e in expected]

    as_json = _invoke([*base, "-f", "json"])
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["id"] for r in records] == [e[0] for e in expected]
    assert [r["label_ids"] for r in records] == [json.loads(e[4]) for e in expected]  # real JSON
    assert records[0]["add_time"] == expected[0][3].isoformat()


def test_query_errors_show_duckdb_s_whole_message_and_exit_1(warehouse: Path) -> None:
    proc = _cli(
        ["query", "SELECT nope FROM deals", "--duckdb-path", str(warehouse)], warehouse.parent
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    first, *rest = proc.stderr.strip().splitlines()
    assert first.startswith("pipedrive-sync: Binder Error:") and "nope" in first
    assert any(line.startswith("Candidate bindings:") for line in rest)
    proc = _cli(["query", "DELETE FROM deals", "--duckdb-path", str(warehouse)], warehouse.parent)
    assert proc.returncode == 1
    assert "read-only" in proc.stderr and "Traceback" not in proc.stderr
    assert _count(warehouse, "SELECT count(*) FROM deals") > 0


def test_query_reads_sql_from_stdin_and_limits_table_rows(warehouse: Path) -> None:
    result = _invoke(
        ["query", "-", "--duckdb-path", str(warehouse), "--max-rows", "3"],
        stdin="SELECT id FROM persons ORDER BY id",
    )
    assert result.exit_code == 0
    total = _count(warehouse, "SELECT count(*) FROM persons")
    assert f"3 rows shown, {total - 3} more" in result.stdout


def test_wide_results_print_one_record_per_block(warehouse: Path) -> None:
    result = _invoke(
        ["query", "SELECT * FROM deals_enriched LIMIT 2", "--duckdb-path", str(warehouse)]
    )
    assert result.exit_code == 0
    assert result.stdout.count("-[ row ") == 2
    assert any(line.startswith("pipeline_name ") for line in result.stdout.splitlines())


# -- fields ----------------------------------------------------------------------------------
def test_fields_lists_the_custom_field_mapping(warehouse: Path) -> None:
    result = _invoke(["fields", "--entity", "deals", "--duckdb-path", str(warehouse), "-f", "json"])
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {r["field_name"]: r for r in rows}
    assert by_name["Título"]["column_name"] == "titulo"
    assert by_name["价格"]["column_name"] == "jiage"
    assert by_name["Title"]["column_name"] == "title_custom"
    assert {r["entity"] for r in rows} == {"deal"}
    assert any(r["options"] for r in rows if r["field_type"] == "enum")
    everything = _invoke(["fields", "--duckdb-path", str(warehouse)])
    for entity in ("deal", "person", "organization", "product", "activity"):
        assert f"\n{entity} " in everything.stdout


def test_fields_unknown_entity_exits_78(warehouse: Path) -> None:
    proc = _cli(["fields", "-e", "unicorn", "--duckdb-path", str(warehouse)], warehouse.parent)
    assert proc.returncode == 78
    assert "unicorn" in _one_error_line(proc)


# -- shell -----------------------------------------------------------------------------------
def test_shell_reads_statements_from_a_pipe(warehouse: Path) -> None:
    script = (
        ".tables\n"
        "SELECT count(*) AS n\n  FROM deals;\n"
        "SELECT nope;\n"
        ".schema stages\n"
        "SELECT 'first' AS a; SELECT 'second' AS b;\n"
        "SELECT 42 AS last_without_semicolon"
    )
    proc = _cli(["shell", "--duckdb-path", str(warehouse)], warehouse.parent, stdin=script)
    assert proc.returncode == 1  # one statement failed: scripts notice
    assert "nope" in _one_error_line(proc)
    out = proc.stdout
    for name in ("deals_enriched", "open_pipeline_summary", "sync_runs", "deal_probability"):
        assert name in out
    assert str(_count(warehouse, "SELECT count(*) FROM deals")) in out
    assert "first" in out and "second" in out and "42" in out
    ok = _cli(
        ["shell", "--duckdb-path", str(warehouse)],
        warehouse.parent,
        stdin="SELECT 1;\n.quit\nSELECT nope;",
    )
    assert ok.returncode == 0 and ok.stderr == ""


def test_shell_starts_harlequin_on_the_file_with_the_dataset_selected(
    warehouse: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "harlequin-call.json"
    stub = bin_dir / "harlequin"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "init = open(args[args.index('--init-path') + 1]).read()\n"
        f"json.dump({{'args': args, 'init': init}}, open({str(record)!r}, 'w'))\n"
        "sys.exit(3)\n"
    )
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [*CLI, "shell", "--ui", "harlequin", "--duckdb-path", str(warehouse)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3, proc.stderr  # harlequin's own exit status
    call = json.loads(record.read_text())
    assert call["args"][-1] == str(warehouse)
    assert "--read-only" in call["args"]
    assert 'USE "pipedrive"."main";' in call["init"]


def test_shell_asking_for_missing_harlequin_exits_78(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "find_harlequin", lambda: None)
    result = CliRunner().invoke(
        app, ["shell", "--ui", "harlequin", "--duckdb-path", str(warehouse)]
    )
    assert result.exit_code == 78
    assert "pip install 'pipedrive-sync[shell]'" in result.stderr


# -- docs and help ---------------------------------------------------------------------------
def test_the_committed_table_reference_is_current_and_complete() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "tables.md"
    result = _invoke(["docs", "--check", "--output", str(docs)])
    assert result.exit_code == 0, result.output
    text = docs.read_text()
    sections = text.split("\n## ")
    for entity in ENTITIES:
        section = next(s for s in sections if s.startswith(entity + "\n"))
        for column, definition in table_columns(entity).items():
            assert f"| `{column}` | `{definition['data_type']}` |" in section, (entity, column)
    for name in ("custom_fields", "sync_runs", "deal_history", *VIEWS):
        assert f"### {name}" in text


def test_docs_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "tables.md"
    stale.write_text("# old\n")
    result = CliRunner().invoke(app, ["docs", "--check", "--output", str(stale)])
    assert result.exit_code == 1 and "out of date" in result.stderr
    written = CliRunner().invoke(app, ["docs", "--output", str(stale)])
    assert written.exit_code == 0 and stale.read_text().startswith("# Table reference")


@pytest.mark.parametrize(
    "command", ["run", "demo", "status", "query", "shell", "fields", "docs", "entities"]
)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    if command in ("run", "status", "query", "fields"):
        assert "Examples" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("pipedrive-sync ")


def test_a_sync_while_someone_reads_the_file_exits_75_and_the_next_catches_up(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt-data"),
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=fake.base_url,
    )

    def sync() -> subprocess.CompletedProcess:
        return run_cli(["run", "-q", "--entities", "deals,stages"], env, tmp_path)

    assert sync().returncode == 0
    deal_id = fake.records("deals")[0]["id"]
    fake.update("deals", deal_id, title="Renamed while an analyst had the file open")
    with duckdb.connect(str(tmp_path / "pipedrive.duckdb"), read_only=True):  # an analyst
        blocked = sync()
    assert blocked.returncode == 75
    assert "open in another process" in _one_error_line(blocked)
    assert sync().returncode == 0
    title = _count(tmp_path / "pipedrive.duckdb", f"SELECT title FROM deals WHERE id = {deal_id}")
    assert title == "Renamed while an analyst had the file open"


def test_shell_prompt_on_a_terminal(warehouse: Path) -> None:
    import pty

    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    proc = subprocess.Popen(
        [*CLI, "shell", "--ui", "prompt", "--duckdb-path", str(warehouse)],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=warehouse.parent,
    )
    os.close(terminal)
    os.write(controller, b"SELECT 6 * 7 AS answer;\nSELECT nope;\n.quit\n")
    out, err = proc.communicate(timeout=60)
    os.close(controller)
    assert proc.returncode == 0  # interactive: errors do not change the exit status
    text = out.decode()
    assert "pipedrive> " in text and "answer" in text and "42" in text
    assert "nope" in err.decode()
