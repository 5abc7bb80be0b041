"""One warehouse = one Pipedrive company = one sync state, wherever and however it runs.

The sequences operators produce: the DuckDB file moved (another directory, another machine),
two PostgreSQL databases with the same dataset name behind one dlt data dir, another company's
token pointed at a warehouse, two runs of one warehouse from two machines, the bare dlt source
and the command line taking turns on one dataset, and an agency syncing several companies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, FAST_HTTP, SMALL_SCALE, TOKEN, HeldRequest, Syncer, run_cli, start_process
from pg_server import Server
from pg_server import rows as _pg

from pipelines.pipedrive_sync.runner import run_sync
from pipelines.pipedrive_sync.settings import RunSettings, resolve
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive_fake import FakePipedrive
from sources.pipedrive_fake.server import RequestRecord

OTHER_TOKEN = "other-company-token-0123456789"


@pytest.fixture
def other_company() -> Iterator[FakePipedrive]:
    """A second Pipedrive company (its own id, domain, token and data)."""
    server = FakePipedrive(token=OTHER_TOKEN, seed=8, scale=dict(SMALL_SCALE)).start()
    try:
        yield server
    finally:
        server.stop()


def _deal_requests(fake: FakePipedrive, since: int) -> list[RequestRecord]:
    return [r for r in fake.requests[since:] if r.path == "/api/v2/deals"]


def _mapping(db: Path, entity: str = "deal") -> dict[str, tuple[str, str]]:
    with open_duckdb(db) as con:
        rows = con.execute(
            "SELECT field_key, column_name, field_name FROM custom_fields WHERE entity = ?",
            [entity],
        ).fetchall()
    return {key: (column, name) for key, column, name in rows}


def _columns(db: Path, table: str) -> list[str]:
    with open_duckdb(db) as con:
        rows = con.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY column_name",
            [table],
        ).fetchall()
    return [r[0] for r in rows]


def _rename_and_touch(fake: FakePipedrive) -> tuple[str, int]:
    """Rename the monetary deal field and change a deal that carries it."""
    key = fake.field_key_for_type("deals", "monetary")
    fake.rename_field("deals", key, "Budget Renamed")
    deal = next(d for d in fake.records("deals") if (d.get("custom_fields") or {}).get(key))
    fake.update("deals", deal["id"], title="changed after the move")
    return key, deal["id"]


@pytest.mark.parametrize("new_data_dir", [False, True], ids=["same-machine", "another-machine"])
def test_a_moved_duckdb_file_resumes_incrementally_with_the_same_columns(
    syncer: Syncer,
    fake: FakePipedrive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_data_dir: bool,
) -> None:
    assert syncer.run(entities="deals").code == 0
    columns_before = _columns(syncer.db_path, "deals")
    mapping_before = _mapping(syncer.db_path)
    key, deal_id = _rename_and_touch(fake)

    moved = tmp_path / "elsewhere" / "warehouse.duckdb"
    moved.parent.mkdir()
    shutil.move(syncer.db_path, moved)
    syncer.db_path = moved
    if new_data_dir:
        monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "another-machine"))
    seen = len(fake.requests)
    result = syncer.run(entities="deals", options={"force_fields_refresh": True})

    assert result.code == 0, result.message
    deal_pages = _deal_requests(fake, seen)
    assert deal_pages and all("updated_since" in r.query for r in deal_pages)  # incremental
    assert _columns(moved, "deals") == columns_before  # no `budget_renamed`
    mapping = _mapping(moved)
    assert mapping[key] == (mapping_before[key][0], "Budget Renamed")
    assert {k: c for k, (c, _) in mapping.items()} == {k: c for k, (c, _) in mapping_before.items()}
    column = mapping_before[key][0]
    with open_duckdb(moved) as con:
        title, value = con.execute(
            f"SELECT title, {column} FROM deals WHERE id = ?", [deal_id]
        ).fetchone()  # type: ignore[misc]
    assert title == "changed after the move" and value is not None


def _env(data_dir: Path, fake: FakePipedrive, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPEDRIVE_", "SOURCES__", "DESTINATION__"))
    }
    env.update(
        DLT_DATA_DIR=str(data_dir),
        PIPEDRIVE_API_TOKEN=fake.token,
        PIPEDRIVE_BASE_URL=fake.base_url,
        SOURCES__PIPEDRIVE__PAGE_LIMIT="50",
        **extra,
    )
    return env


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_companys_token_exits_78_and_changes_nothing(
    fake: FakePipedrive, other_company: FakePipedrive, tmp_path: Path
) -> None:
    data_dir = tmp_path / "dlt-data"
    first = run_cli(["run", "--entities", "deals"], _env(data_dir, fake), tmp_path, timeout=180)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "pipedrive.duckdb"
    before = _digest(db)
    files_before = sorted(p.name for p in tmp_path.iterdir())

    proc = run_cli(
        ["run", "--entities", "deals"], _env(data_dir, other_company), tmp_path, timeout=180
    )

    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    for company in (fake.company, other_company.company):
        assert company["domain"] in lines[0]
    assert _digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before
    assert OTHER_TOKEN not in proc.stderr + proc.stdout


def test_the_warehouse_records_its_company(syncer: Syncer, fake: FakePipedrive) -> None:
    assert syncer.run(entities="deals").code == 0
    identity = syncer.query("SELECT company_id, company_domain, pipeline_name FROM sync_identity")
    assert identity == [(fake.company["id"], fake.company["domain"], "pipedrive")]
    runs = syncer.query("SELECT DISTINCT company_id, company_domain FROM sync_runs")
    assert runs == [(fake.company["id"], fake.company["domain"])]


# -- PostgreSQL ------------------------------------------------------------------------------
def _pg_settings(fake: FakePipedrive, **overrides: Any) -> RunSettings:
    settings = resolve(destination="postgres", entities="deals", require_token=False, **overrides)
    settings.token = fake.token
    settings.base_url = fake.base_url
    settings.http = FAST_HTTP
    return settings


def _pg_run(url: str, fake: FakePipedrive, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Any:
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    result = run_sync(_pg_settings(fake, **kw))
    assert result.code == 0, result.message
    return result


def _assert_pg_deals_match(url: str, fake: FakePipedrive, dataset: str = "pipedrive") -> None:
    rows = dict(_pg(url, f"SELECT id, title FROM {dataset}.deals"))
    expected = {d["id"]: d["title"] for d in fake.records("deals", deleted=None, archived=None)}
    assert rows == expected
    keys = {r[0] for r in _pg(url, f"SELECT field_key FROM {dataset}.custom_fields")}
    assert keys == {f.key for f in fake.custom_field_defs("deals")}


@pytest.mark.postgres
def test_two_postgres_databases_with_one_dataset_name_never_share_state(
    postgres: Server,
    fake: FakePipedrive,
    other_company: FakePipedrive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db_b, db_c = postgres.database("db_b"), postgres.database("db_c")
    _pg_run(db_b, fake, monkeypatch)
    for n in range(3):  # C runs more often: its local state gets ahead of B's
        other_company.update("deals", other_company.records("deals")[n]["id"], title=f"c{n}")
        _pg_run(db_c, other_company, monkeypatch)
    changed = fake.records("deals")[5]["id"]
    fake.update("deals", changed, title="B changed this")

    _pg_run(db_b, fake, monkeypatch)

    _assert_pg_deals_match(db_b, fake)
    _assert_pg_deals_match(db_c, other_company)
    assert _pg(db_b, "SELECT company_id FROM pipedrive.sync_identity") == [(fake.company["id"],)]


@pytest.mark.postgres
def test_a_run_from_another_machine_waits_for_nobody_and_exits_75(
    postgres: Server, fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two data dirs (two machines) syncing one PostgreSQL dataset: the second exits 75 at once,
    naming what holds the warehouse; the first finishes."""
    url = postgres.database("shared")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    outcome: list[Any] = []
    with HeldRequest(fake, "/api/v2/deals") as hold:
        patient = _pg_settings(fake)
        patient.http = replace(FAST_HTTP, read_timeout=120)  # held, not timed out
        first = threading.Thread(target=lambda: outcome.append(run_sync(patient)))
        first.start()
        assert hold.wait()
        env = _env(tmp_path / "machine-2", fake, DESTINATION__POSTGRES__CREDENTIALS=url)
        proc = run_cli(
            ["run", "--destination", "postgres", "--entities", "deals"], env, tmp_path, timeout=180
        )
        assert first.is_alive()  # the second run ended while the first held the warehouse
    first.join(120)
    assert proc.returncode == 75, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "another pipedrive-sync run" in proc.stderr and "pid" in proc.stderr
    assert outcome and outcome[0].code == 0
    _assert_pg_deals_match(url, fake)


@pytest.mark.postgres
def test_three_companies_synced_at_once_into_one_database_stay_isolated(
    postgres: Server, tmp_path: Path
) -> None:
    url = postgres.database("agency")
    fakes = [
        FakePipedrive(token=f"token-{n}-0123456789", seed=40 + n, scale={"deals": 80}).start()
        for n in range(3)
    ]
    try:
        procs = [
            start_process(
                [
                    *CLI,
                    "run",
                    "--destination",
                    "postgres",
                    "--dataset",
                    f"company_{n}",
                    "-e",
                    "deals",
                ],
                _env(tmp_path / "dlt-data", f, DESTINATION__POSTGRES__CREDENTIALS=url),
                tmp_path,
            )
            for n, f in enumerate(fakes)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        for n, f in enumerate(fakes):
            _assert_pg_deals_match(url, f, dataset=f"company_{n}")
            company = _pg(url, f"SELECT company_id FROM company_{n}.sync_identity")
            assert company == [(f.company["id"],)]
    finally:
        for f in fakes:
            f.stop()


# -- DuckDB: companies sharing one file ------------------------------------------------------
def _started(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`pipedrive-sync run --entities deals <args>` in the background."""
    return start_process([*CLI, "run", "--entities", "deals", *args], env, cwd)


@contextmanager
def _company_a_mid_run(
    fake: FakePipedrive, data_dir: Path, cwd: Path
) -> Iterator[tuple[HeldRequest, subprocess.Popen[str]]]:
    """Company A's run of the DuckDB file, held mid-fetch (holding the file) in the block."""
    with HeldRequest(fake, "/api/v2/deals") as hold:
        first = _started(["--dataset", "company_a"], _env(data_dir, fake), cwd)
        assert hold.wait()
        yield hold, first


def test_two_companies_in_one_duckdb_file_take_turns(
    fake: FakePipedrive, other_company: FakePipedrive, tmp_path: Path
) -> None:
    """The second company's run waits for the file (bounded) instead of failing."""
    data_dir = tmp_path / "dlt-data"
    with _company_a_mid_run(fake, data_dir, tmp_path) as (hold, first):
        second = _started(["--dataset", "company_b"], _env(data_dir, other_company), tmp_path)
        threading.Timer(2.0, hold.release).start()  # the second run is waiting by then
        _, err_b = second.communicate(timeout=180)
    _, err_a = first.communicate(timeout=180)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    with open_duckdb(tmp_path / "pipedrive.duckdb", "company_b") as con:
        company = con.execute("SELECT company_id FROM sync_identity").fetchall()
    assert company == [(other_company.company["id"],)]


def test_another_companys_run_holding_the_file_is_named_when_the_wait_ends(
    fake: FakePipedrive, other_company: FakePipedrive, tmp_path: Path
) -> None:
    data_dir = tmp_path / "dlt-data"
    with _company_a_mid_run(fake, data_dir, tmp_path) as (_hold, first):
        env = _env(data_dir, other_company, SOURCES__PIPEDRIVE__LOCK_WAIT_SECONDS="1")
        proc = run_cli(
            ["run", "--dataset", "company_b", "--entities", "deals"], env, tmp_path, timeout=180
        )
    first.communicate(timeout=180)
    assert proc.returncode == 75, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "company_a" in proc.stderr and fake.company["domain"] in proc.stderr


# -- the bare dlt source and the command line on one dataset ---------------------------------
def test_the_bare_source_and_the_cli_take_turns_on_one_dataset(
    syncer: Syncer, fake: FakePipedrive, tmp_path: Path
) -> None:
    """The README's library snippet, with `[sources.pipedrive]` in .dlt/secrets.toml and
    config.toml, shares columns and cursors with the command line."""
    import dlt

    from sources.pipedrive import pipedrive_source

    dot_dlt = tmp_path / ".dlt"
    dot_dlt.mkdir()
    (dot_dlt / "secrets.toml").write_text(f'[sources.pipedrive]\napi_token = "{TOKEN}"\n')
    (dot_dlt / "config.toml").write_text(f'[sources.pipedrive]\nbase_url = "{fake.base_url}"\n')
    syncer.db_path = tmp_path / "crm.duckdb"
    _read_dot_dlt_of(tmp_path)

    assert syncer.run(entities="deals").code == 0
    columns = _columns(syncer.db_path, "deals")
    mapping = _mapping(syncer.db_path)
    key, deal_id = _rename_and_touch(fake)

    seen = len(fake.requests)
    pipeline = dlt.pipeline(
        "pipedrive",
        destination=dlt.destinations.duckdb(str(syncer.db_path)),
        dataset_name="main",  # the command line's dataset in a DuckDB file
    )
    pipeline.run(pipedrive_source(entities=["deals"]), loader_file_format="parquet")
    assert all("updated_since" in r.query for r in _deal_requests(fake, seen))
    assert _columns(syncer.db_path, "deals") == columns
    assert _mapping(syncer.db_path)[key][0] == mapping[key][0]
    assert syncer.query(f"SELECT title FROM deals WHERE id = {deal_id}") == [
        ("changed after the move",)
    ]

    fake.update("deals", deal_id, title="changed for the CLI")
    seen = len(fake.requests)
    assert syncer.run(entities="deals").code == 0
    assert all("updated_since" in r.query for r in _deal_requests(fake, seen))
    assert _columns(syncer.db_path, "deals") == columns
    assert syncer.query(f"SELECT title FROM deals WHERE id = {deal_id}") == [
        ("changed for the CLI",)
    ]


def _read_dot_dlt_of(directory: Path) -> None:
    """dlt reads `.dlt/` of the directory it started in: this test process started elsewhere."""
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    Container()[PluggableRunContext].reload(str(directory))


def test_pinned_names_come_back_from_the_mapping_when_the_state_is_lost(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    assert syncer.run(entities="deals").code == 0
    columns = _columns(syncer.db_path, "deals")
    mapping = _mapping(syncer.db_path)
    key, _ = _rename_and_touch(fake)
    with open_duckdb(syncer.db_path, read_only=False) as con:
        con.execute("DELETE FROM _dlt_pipeline_state")  # dlt's state is gone

    assert syncer.run(entities="deals").code == 0  # a state-less run reads the fields anew

    assert _columns(syncer.db_path, "deals") == columns
    assert _mapping(syncer.db_path)[key] == (mapping[key][0], "Budget Renamed")


def test_the_bare_source_stops_before_its_first_row_in_someone_elses_warehouse(
    syncer: Syncer, fake: FakePipedrive, other_company: FakePipedrive, tmp_path: Path
) -> None:
    """Another pipeline name (its own cursors) or another company's token: nothing loaded."""
    import dlt
    from dlt.pipeline.exceptions import PipelineStepFailed

    from sources.pipedrive import pipedrive_source

    syncer.db_path = tmp_path / "crm.duckdb"
    assert syncer.run(entities="deals").code == 0
    before = syncer.query("SELECT id, title, update_time FROM deals ORDER BY id")
    fake.update("deals", fake.records("deals")[0]["id"], title="not for these runs")
    destination = dlt.destinations.duckdb(str(syncer.db_path))

    cases = [("crm", fake, "'pipedrive'"), ("pipedrive", other_company, fake.company["domain"])]
    for name, account, said in cases:
        pipeline = dlt.pipeline(name, destination=destination, dataset_name="main")
        source = pipedrive_source(
            api_token=account.token, base_url=account.base_url, entities=["deals"]
        )
        with pytest.raises(PipelineStepFailed) as failed:
            pipeline.run(source)
        assert said in str(failed.value)
        assert syncer.query("SELECT id, title, update_time FROM deals ORDER BY id") == before


def test_a_warehouse_of_the_previous_version_is_adopted_incrementally(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    """Before sync_identity the state lived under a pipeline named after a hash of the local
    path: the first run after the upgrade takes that state over (no full re-read, same
    columns) and claims the dataset."""
    assert syncer.run(entities="deals").code == 0
    columns = _columns(syncer.db_path, "deals")
    with open_duckdb(syncer.db_path, read_only=False) as con:
        con.execute("UPDATE _dlt_pipeline_state SET pipeline_name = 'pipedrive_0a1b2c3d4e'")
        con.execute("DROP TABLE sync_identity")
    changed = fake.records("deals")[3]["id"]
    fake.update("deals", changed, title="after the upgrade")
    seen = len(fake.requests)

    assert syncer.run(entities="deals").code == 0

    deal_pages = _deal_requests(fake, seen)
    assert deal_pages and all("updated_since" in r.query for r in deal_pages)
    assert _columns(syncer.db_path, "deals") == columns
    assert syncer.query(f"SELECT title FROM deals WHERE id = {changed}") == [("after the upgrade",)]
    assert syncer.query("SELECT company_id, pipeline_name FROM sync_identity") == [
        (fake.company["id"], "pipedrive")
    ]


@pytest.mark.postgres
def test_another_companys_token_changes_nothing_in_a_postgres_warehouse(
    postgres: Server,
    fake: FakePipedrive,
    other_company: FakePipedrive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres.database("company_a")
    _pg_run(url, fake, monkeypatch)
    snapshot_sql = (
        "SELECT (SELECT count(*) FROM pipedrive._dlt_loads),"
        " (SELECT count(*) FROM pipedrive._dlt_pipeline_state),"
        " (SELECT md5(string_agg(id || title || update_time, ',' ORDER BY id)) FROM pipedrive.deals),"
        " (SELECT count(*) FROM information_schema.tables WHERE table_schema LIKE 'pipedrive%')"
    )
    before = _pg(url, snapshot_sql)
    env = _env(tmp_path / "dlt-data", other_company, DESTINATION__POSTGRES__CREDENTIALS=url)
    proc = run_cli(
        ["run", "--destination", "postgres", "--entities", "deals"], env, tmp_path, timeout=180
    )
    assert proc.returncode == 78, proc.stderr
    assert fake.company["domain"] in proc.stderr and other_company.company["domain"] in proc.stderr
    assert _pg(url, snapshot_sql) == before
