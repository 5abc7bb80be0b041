"""PostgreSQL for real: the fake account synced into a throwaway PostgreSQL server equals DuckDB.

The test starts its own cluster (initdb + pg_ctl from Debian's `postgresql` package, which
`.ci/postgres.sh` installs) in a temporary directory on a free port, with password
authentication, as the `postgres` user when running as root. No server binaries is a failure,
not a skip: CI installs them, and a developer sees what to install.
"""

from __future__ import annotations

import glob
import json
import math
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN

from pipelines.pipedrive_sync.runner import run_sync
from pipelines.pipedrive_sync.settings import RunSettings
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.http import HttpSettings
from sources.pipedrive_fake import FakePipedrive

pytestmark = pytest.mark.postgres

CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]
PASSWORD = "pipedrive-test-pw"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql`"
    " package (`bash .ci/postgres.sh` does), or put initdb on PATH"
)
# bookkeeping values that legitimately differ between two runs
VOLATILE = {"_dlt_load_id", "_dlt_id", "run_id", "started_at", "finished_at", "detected_at"}
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


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    pytest.fail(INSTALL_HINT, pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    port: int
    directory: Path
    runner: list[str]
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        command = [
            *self.runner,
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    bin_dir = _bin_dir()
    as_root = os.geteuid() == 0
    # as root the server runs as `postgres`, which must reach the directory: /tmp, not $TMPDIR
    directory = Path(tempfile.mkdtemp(prefix="pipedrive-pg-", dir="/tmp" if as_root else None))
    runner: list[str] = []
    if as_root:  # initdb refuses root: run the server as the package's system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                f"running as root but there is no `postgres` user; {INSTALL_HINT}", pytrace=False
            )
        os.chown(directory, user.pw_uid, user.pw_gid)
        runner = ["runuser", "-u", "postgres", "--"]
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if runner:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    init = subprocess.run(
        [
            *runner,
            str(bin_dir / "initdb"),
            "-D",
            str(directory / "data"),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, f"initdb failed: {init.stderr[-2000:]}"
    server = Server(_free_port(), directory, runner, bin_dir)
    options = (
        f"-p {server.port} -k {directory} -c listen_addresses=127.0.0.1"
        " -F -c full_page_writes=off -c synchronous_commit=off"
    )
    started = server.pg_ctl(
        "-l", str(directory / "server.log"), "-w", "-t", "60", "-o", options, "start"
    )
    if started.returncode != 0:
        log = (directory / "server.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}", pytrace=False)
    try:
        yield server
    finally:
        server.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


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

    def sync_both(self) -> None:
        """PostgreSQL through the command line, DuckDB in-process (same settings, faster)."""
        self.sync("--destination", "postgres")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DLT_DATA_DIR", str(self.work / "dlt-data"))
            settings = RunSettings(
                token=TOKEN,
                base_url=self.fake.base_url,
                duckdb_path=self.duckdb_path,
                http=replace(HttpSettings(), page_limit=50),
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


def _relations(both: Warehouses, kind: str) -> set[str]:
    sql = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'pipedrive'"
        f" AND table_type = '{kind}' AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\'"
    )
    duck = {r[0] for r in both.duckdb(sql)[1]}
    pg = {r[0] for r in both.postgres(sql)[1]}
    assert duck == pg, f"{kind}: DuckDB has {sorted(duck - pg)}, PostgreSQL has {sorted(pg - duck)}"
    return duck


def _column_types(both: Warehouses, relation: str) -> dict[str, str]:
    sql = (
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema ="
        f" 'pipedrive' AND table_name = '{relation}'"
    )
    duck = dict(both.duckdb(sql)[1])
    pg = dict(both.postgres(sql)[1])
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
    assert views == {"deals_enriched", "open_pipeline_summary"}
    for view in views:
        assert _assert_same_rows(both, view) > 0


def test_postgres_holds_exactly_what_duckdb_holds(warehouses: Warehouses) -> None:
    _assert_warehouses_equal(warehouses)
    _, rows = warehouses.postgres(
        "SELECT count(*), count(pipeline_name), count(stage_name) FROM pipedrive.deals_enriched"
    )
    total, with_pipeline, with_stage = rows[0]
    assert total == with_pipeline == with_stage > 0


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
    assert drop_duplicate_ids(pipeline, ["deals", "no_such_table"]) == {"deals": 1}
    assert drop_duplicate_ids(pipeline, ["deals"]) == {}
    import psycopg2

    connection = psycopg2.connect(postgres.url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, title FROM dedupe_check.deals ORDER BY id")
            assert cursor.fetchall() == [(1, "new"), (2, "only")]
    finally:
        connection.close()
