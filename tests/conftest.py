"""Shared fixtures: a running fake Pipedrive, an isolated dlt working dir, and sync helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pytest
from pg_server import postgres  # noqa: F401 - the shared PostgreSQL server fixture

from pipelines.pipedrive_sync.runner import RunResult, run_sync
from pipelines.pipedrive_sync.settings import RunSettings, resolve
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.http import HttpSettings
from sources.pipedrive_fake import FakePipedrive
from sources.pipedrive_fake.testing import FakeClient

TOKEN = "test-token-0123456789abcdef"
CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]
SMALL_SCALE = {
    "deals": 120,
    "persons": 60,
    "organizations": 30,
    "activities": 80,
    "products": 20,
    "leads": 40,
    "notes": 50,
}
CORE_ENTITIES = (
    "deals",
    "persons",
    "organizations",
    "activities",
    "products",
    "pipelines",
    "stages",
)
FAST_HTTP = HttpSettings(
    connect_timeout=2.0,
    read_timeout=2.0,
    max_attempts=4,
    backoff_base=0.01,
    backoff_max=0.05,
    max_rate_limit_wait=30.0,
    page_limit=50,  # small pages so every test crosses page boundaries
)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own cwd and dlt data dir, and no real credentials leak in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt-data"))
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "ERROR")
    for name in list(os.environ):
        if name.startswith(("PIPEDRIVE_", "SOURCES__PIPEDRIVE", "DESTINATION__")):
            monkeypatch.delenv(name, raising=False)
    yield


def run_cli(
    args: list[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`pipedrive-sync ARGS` in a process of its own, its output captured as text."""
    return subprocess.run(
        [*CLI, *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_process(argv: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`argv` started in the background, its output piped as text (`communicate()` reads it)."""
    return subprocess.Popen(
        argv,
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    server = FakePipedrive(token=TOKEN, seed=7, scale=dict(SMALL_SCALE)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(fake: FakePipedrive) -> Iterator[FakeClient]:
    """Plain HTTP to the `fake` (the module's own, where it has one)."""
    c = FakeClient(fake)
    yield c
    c.close()


def synced_warehouse(work: Path, seed: int) -> Path:
    """A DuckDB warehouse in `work`, synced once from a small fake (for a module's shared
    read-only fixture; copy it before changing it)."""
    with (
        pytest.MonkeyPatch.context() as patch,
        FakePipedrive(token=TOKEN, seed=seed, scale=dict(SMALL_SCALE)) as fake,
    ):
        patch.setenv("DLT_DATA_DIR", str(work / "dlt-data"))
        settings = RunSettings(
            token=TOKEN,
            base_url=fake.base_url,
            duckdb_path=work / "pipedrive.duckdb",
            http=FAST_HTTP,
        )
        assert run_sync(settings).code == 0
    return work / "pipedrive.duckdb"


@pytest.fixture
def warehouse(synced: Path, tmp_path: Path) -> Path:
    """A private copy of the module's `synced` warehouse (a test may change it)."""
    copy = tmp_path / "pipedrive.duckdb"
    shutil.copy(synced, copy)
    return copy


class Syncer:
    """Runs syncs against a fake into one DuckDB file, like cron would."""

    def __init__(
        self, fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.fake = fake
        self.db_path = tmp_path / "pipedrive.duckdb"
        monkeypatch.setenv("PIPEDRIVE_API_TOKEN", TOKEN)
        monkeypatch.setenv("PIPEDRIVE_BASE_URL", fake.base_url)

    def settings(self, **overrides: Any) -> RunSettings:
        """Settings for a run; by default the core entities, every slow list due (fast and
        deterministic: tests of cadences and of the default set say so explicitly)."""
        http = overrides.pop("http", FAST_HTTP)
        options = {"refresh_all": True, **overrides.pop("options", {})}
        overrides.setdefault("entities", ",".join(CORE_ENTITIES))
        settings = resolve(duckdb_path=str(self.db_path), **overrides)
        settings.http = http
        settings.options = replace(settings.options, **options)
        return settings

    def run(self, **overrides: Any) -> RunResult:
        return run_sync(self.settings(**overrides))

    def pipeline(self) -> Any:
        """The local dlt pipeline of this warehouse (schema and state of the last run)."""
        from pipelines.pipedrive_sync.runner import make_pipeline

        return make_pipeline(self.settings())

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with open_duckdb(self.db_path) as con:
            return con.execute(sql).fetchall()

    def execute(self, sql: str) -> None:
        """Change the warehouse behind the sync's back (what a DBA or a crash could do)."""
        with open_duckdb(self.db_path, read_only=False) as con:
            con.execute(sql)

    def columns(self, table: str) -> dict[str, str]:
        with open_duckdb(self.db_path) as con:
            rows = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
        return dict(rows)


class HeldRequest:
    """Holds requests to `path` in a fake until `release()` (each at most `timeout`): a run
    that reached one is mid-fetch, holding its warehouse, and its retries wait too. Use as a
    context manager."""

    def __init__(self, fake: FakePipedrive, path: str, timeout: float = 60.0) -> None:
        self.fake, self.path, self.timeout = fake, path, timeout
        self.held = threading.Event()
        self._released = threading.Event()

    def __call__(self, record: Any) -> None:
        if record.path == self.path and not self._released.is_set():
            self.held.set()
            self._released.wait(self.timeout)

    def __enter__(self) -> HeldRequest:
        self.fake.on_request(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.fake.on_request(None)

    def wait(self, timeout: float = 60.0) -> bool:
        """Until a request is being held."""
        return self.held.wait(timeout)

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()


@pytest.fixture
def syncer(fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Syncer:
    return Syncer(fake, tmp_path, monkeypatch)


# -- comparing the warehouse with the fake ------------------------------------------------------
def _expected(value: Any, data_type: str) -> Any:
    from datetime import date, datetime, time

    if value is None:
        return None
    if data_type == "timestamp":
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" ", "T", 1))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if data_type == "date":
        return date.fromisoformat(str(value)[:10])
    if data_type == "time":
        return time.fromisoformat(str(value))
    if data_type == "double":
        return float(value)
    return value


def _actual(value: Any, data_type: str) -> Any:
    if value is None:
        return None
    if data_type == "json":
        return orjson.loads(value) if isinstance(value, str) else value
    if data_type == "timestamp":
        return value.astimezone(UTC)
    return value


def table_rows(syncer: Syncer, table: str) -> dict[Any, dict[str, Any]]:
    """Warehouse rows of a table keyed by id."""
    with open_duckdb(syncer.db_path) as con:
        cursor = con.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cursor.description]
        return {
            row[names.index("id")]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()
        }


# spec properties that are not columns: v2 custom fields become columns of their own
NOT_COLUMNS = {"custom_fields"}
WAREHOUSE_TYPES = {
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "DATE": "date",
    "TIME": "time",
    "DOUBLE": "double",
    "JSON": "json",
}


def compared_columns(syncer: Syncer, table: str) -> dict[str, str]:
    """Column → kind for comparing: which columns from the official spec (not from the code's
    own schema, so a property the code forgot fails), typed as the warehouse holds them."""
    from sources.pipedrive.entities import ENTITY_BY_NAME
    from sources.pipedrive_fake.spec import item_properties

    entity = ENTITY_BY_NAME[table]
    stream = entity.streams[0]
    held = syncer.columns(table)
    compared = {}
    for name in item_properties(entity.api.value, f"/{stream.path}", stream.data_key):
        if name in NOT_COLUMNS:
            continue
        assert name in held, f"{table}: the spec's {name} is not a column"
        compared[name] = WAREHOUSE_TYPES.get(held[name], held[name])
    return compared


def assert_matches_fake(syncer: Syncer, table: str, expected_records: list[dict[str, Any]]) -> None:
    """Every column the spec lists, of every row, equals the fake's record; no extra, no
    missing rows."""
    types = compared_columns(syncer, table)
    actual = table_rows(syncer, table)
    expected = {r["id"]: r for r in expected_records}
    assert sorted(actual, key=str) == sorted(expected, key=str), f"{table}: id sets differ"
    for record_id, record in expected.items():
        row = actual[record_id]
        for column, data_type in types.items():
            if column not in record:
                continue
            want = _expected(record[column], data_type)
            got = _actual(row.get(column), data_type)
            assert got == want, f"{table} id={record_id} column {column}: {got!r} != {want!r}"


def all_deals(fake: FakePipedrive) -> list[dict[str, Any]]:
    """Every deal the warehouse should hold: live, deleted and archived."""
    records = {r["id"]: r for r in fake.records("deals", deleted=None, archived=None)}
    return list(records.values())
