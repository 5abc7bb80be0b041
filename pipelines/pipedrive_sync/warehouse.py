"""Opening the DuckDB warehouse for reading, with the dataset as the default schema."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import duckdb

from .exit_codes import ConfigError

# how long a reading command waits for a writer (a run's load, a `listen` batch) to let go of
# the file before it exits 75; `listen` attaches the file only while it writes a batch
READ_WAIT_ENV = "PIPEDRIVE_SYNC_READ_WAIT_SECONDS"
DEFAULT_READ_WAIT_SECONDS = 15.0
READ_RETRY_SECONDS = 0.05

# A DuckDB warehouse's tables live in `main`, the schema every DuckDB client reads by default,
# so `duckdb pipedrive.duckdb -c "SELECT count(*) FROM deals"` needs no setup. Files made by
# earlier versions hold the dataset `pipedrive`: without --dataset they keep using it.
DEFAULT_DATASET = "main"
LEGACY_DATASET = "pipedrive"
SYNCED_MARKER = "_dlt_version"  # a schema with dlt's version table holds a synced dataset


class WarehouseBusy(Exception):
    """Another process (usually a running sync) holds the DuckDB file's write lock."""


def synced_schemas(connection: duckdb.DuckDBPyConnection, catalog: str | None = None) -> list[str]:
    """Schemas of the catalog (default: the connection's) that hold a synced dataset."""
    rows = connection.execute(
        "SELECT DISTINCT table_schema FROM information_schema.tables"
        " WHERE table_catalog = coalesce(?, current_database()) AND table_name = ?"
        " ORDER BY 1",
        [catalog, SYNCED_MARKER],
    ).fetchall()
    return [row[0] for row in rows]


def default_dataset(connection: duckdb.DuckDBPyConnection, catalog: str | None = None) -> str:
    """The dataset a command uses when --dataset is not given: `main`, unless the file holds
    only the older default `pipedrive`."""
    found = synced_schemas(connection, catalog)
    if DEFAULT_DATASET not in found and LEGACY_DATASET in found:
        return LEGACY_DATASET
    return DEFAULT_DATASET


def peek_default_dataset(path: Path) -> str:
    """`default_dataset` of a file, without waiting: `main` when there is no file yet, or when
    another process writes it (the run checks again once it holds the file)."""
    file = path.expanduser()
    if not file.is_file():
        return DEFAULT_DATASET
    try:
        with duckdb.connect(str(file), read_only=True) as connection:
            return default_dataset(connection)
    except duckdb.Error:
        return DEFAULT_DATASET


def open_duckdb(
    path: Path | str, dataset: str | None = None, read_only: bool = True
) -> duckdb.DuckDBPyConnection:
    """A connection where `SELECT * FROM deals` just works.

    The dataset (default: the file's own, see `default_dataset`) becomes the default schema,
    addressed through the file's own catalog name so that `pipedrive.duckdb` + dataset
    `pipedrive` is not ambiguous; times display in UTC.
    """
    connection = duckdb.connect(str(path), read_only=read_only)
    catalog = connection.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    if dataset is None:
        dataset = default_dataset(connection)
    schema = f"{quote_identifier(catalog)}.{quote_identifier(dataset)}"
    exists = connection.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE catalog_name = ? AND schema_name = ?",
        [catalog, dataset],
    ).fetchone()[0]  # type: ignore[index]
    if exists:
        connection.execute(f"USE {schema}")
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_warehouse(
    path: Path | str, dataset: str | None = None, read_only: bool = True
) -> duckdb.DuckDBPyConnection:
    """`open_duckdb` for the commands that read an existing warehouse (status, query, shell…).

    Raises ConfigError (exit 78) when the file or the dataset does not exist, and WarehouseBusy
    (exit 75) when a running sync holds the file.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"no DuckDB warehouse at {file}: run `pipedrive-sync run` first, or pass --duckdb-path"
        )
    connection = _open_waiting(file, dataset, read_only, read_wait())
    if dataset is None:
        dataset = default_dataset(connection)
    datasets = dataset_names(connection)
    if dataset not in datasets:
        connection.close()
        if not datasets:
            raise ConfigError(f"{file} holds no synced dataset: run `pipedrive-sync run` first")
        raise ConfigError(
            f"{file} has no dataset {dataset!r} (it has: {', '.join(datasets)}); pass --dataset"
        )
    return connection


def read_wait() -> float:
    """Seconds a reading command waits for a writer (env PIPEDRIVE_SYNC_READ_WAIT_SECONDS)."""
    raw = os.environ.get(READ_WAIT_ENV)
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_READ_WAIT_SECONDS
    except ValueError:
        return DEFAULT_READ_WAIT_SECONDS


def _open_waiting(
    file: Path, dataset: str | None, read_only: bool, wait: float
) -> duckdb.DuckDBPyConnection:
    """`open_duckdb`, retried while another process writes the file, up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return open_duckdb(file, dataset, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise ConfigError(f"cannot open {file}: {first_line(exc)}") from None
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"{file} is in use by another process (a sync still running?); waited"
                    f" {wait:g} s; try again"
                ) from None
        except duckdb.Error as exc:
            raise ConfigError(f"{file} is not a DuckDB warehouse: {first_line(exc)}") from None
        time.sleep(READ_RETRY_SECONDS)


def dataset_names(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Datasets in the file: schemas with tables, except dlt's `<dataset>_staging`."""
    rows = connection.execute(
        "SELECT DISTINCT table_schema FROM information_schema.tables"
        " WHERE table_catalog = current_database() ORDER BY 1"
    ).fetchall()
    names = [row[0] for row in rows]
    return [n for n in names if not (n.endswith("_staging") and n[: -len("_staging")] in names)]


def table_names(connection: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Tables and views of the current dataset: name → 'table' | 'view'."""
    rows = connection.execute(
        "SELECT table_name, table_type FROM information_schema.tables"
        " WHERE table_catalog = current_database() AND table_schema = current_schema()"
        " ORDER BY table_name"
    ).fetchall()
    return {name: "view" if kind == "VIEW" else "table" for name, kind in rows}


def has_table(connection: duckdb.DuckDBPyConnection, name: str) -> bool:
    return name in table_names(connection)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB adds hints and caret lines below)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# -- reading any SQL destination ------------------------------------------------------------
class Reader:
    """What `status`, `fields` and `query` read through: SQL on the dataset of a warehouse.

    `DuckDbReader` opens the DuckDB file read-only itself; `DltReader` reads any other SQL
    destination through dlt's SQL client (credentials from dlt config). Table names in SQL go
    through `table()`; literal values through `literal()` (only names this tool knows).
    """

    where: str  # for messages: the file or destination, and the dataset

    def cursor(self, sql: str) -> AbstractContextManager[Any]:
        """A DB-API cursor of `sql`'s result, open within the context."""
        raise NotImplementedError

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.cursor(sql) as cursor:
            return [tuple(row) for row in cursor.fetchall()]

    def table(self, name: str) -> str:
        """`name`, qualified and quoted, as the dataset's table."""
        raise NotImplementedError

    def columns(self, tables: list[str]) -> dict[str, set[str]]:
        """table → its columns, for those of `tables` that exist in the dataset."""
        raise NotImplementedError

    @staticmethod
    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"


class DuckDbReader(Reader):
    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path, dataset: str) -> None:
        self.connection = connection
        self.where = f"{path} (dataset {dataset})"

    @contextmanager
    def cursor(self, sql: str) -> Iterator[Any]:
        yield self.connection.execute(sql)

    def table(self, name: str) -> str:
        return quote_identifier(name)

    def columns(self, tables: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for table, column in self.connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog"
            " = current_database() AND table_schema = current_schema()"
        ).fetchall():
            if table in tables:
                found.setdefault(table, set()).add(column)
        return found


class DltReader(Reader):
    def __init__(self, job_client: Any, sql_client: Any, destination: str, dataset: str) -> None:
        self.job_client = job_client
        self.client = sql_client
        self.where = f"{destination} (dataset {dataset})"

    @contextmanager
    def cursor(self, sql: str) -> Iterator[Any]:
        with self.client.execute_query(sql) as cursor:
            yield cursor

    def table(self, name: str) -> str:
        return str(self.client.make_qualified_table_name(name))

    def columns(self, tables: list[str]) -> dict[str, set[str]]:
        from sources.pipedrive.dlt_adapter import storage_columns

        return storage_columns(self.job_client, tables)


@contextmanager
def open_reader(destination: str, path: Path, dataset: str) -> Iterator[Reader]:
    """A reader of the warehouse: the DuckDB file read-only, or any dlt SQL destination.

    Raises ConfigError (78) for a missing warehouse or dataset or missing credentials,
    WarehouseBusy (75) for a DuckDB file a sync holds or a destination that cannot be reached.
    """
    if destination == "duckdb":
        with open_warehouse(path, dataset) as connection:
            yield DuckDbReader(connection, path, dataset)
        return
    from dlt.common.configuration.exceptions import ConfigFieldMissingException
    from dlt.common.destination.exceptions import DestinationTransientException

    from sources.pipedrive.dlt_adapter import sql_reader_clients

    try:
        job_client, sql_client = sql_reader_clients(destination, dataset)
        opened = sql_client.__enter__()
    except ConfigFieldMissingException as exc:
        raise ConfigError(
            f"the {destination} destination is not configured: {first_line(exc)}"
        ) from None
    except DestinationTransientException as exc:
        raise WarehouseBusy(
            f"cannot reach the {destination} destination: {first_line(exc)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - an unknown destination name, a missing driver…
        raise ConfigError(f"cannot read the {destination} destination: {first_line(exc)}") from None
    try:
        if not opened.has_dataset():
            raise ConfigError(
                f"the {destination} destination has no dataset {dataset!r}:"
                " run `pipedrive-sync run` first, or pass --dataset"
            )
        yield DltReader(job_client, opened, destination, dataset)
    finally:
        sql_client.__exit__(None, None, None)
