"""Opening the DuckDB warehouse for reading, with the dataset as the default schema."""

from __future__ import annotations

from pathlib import Path

import duckdb

from .exit_codes import ConfigError


class WarehouseBusy(Exception):
    """Another process (usually a running sync) holds the DuckDB file's write lock."""


def open_duckdb(
    path: Path | str, dataset: str = "pipedrive", read_only: bool = True
) -> duckdb.DuckDBPyConnection:
    """A connection where `SELECT * FROM deals` just works.

    The dataset becomes the default schema, addressed through the file's own catalog name so
    that `pipedrive.duckdb` + dataset `pipedrive` is not ambiguous; times display in UTC.
    """
    connection = duckdb.connect(str(path), read_only=read_only)
    catalog = connection.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
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
    path: Path | str, dataset: str = "pipedrive", read_only: bool = True
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
    try:
        connection = open_duckdb(file, dataset, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(
                f"{file} is in use by another process (a sync still running?); try again"
            ) from None
        raise ConfigError(f"cannot open {file}: {first_line(exc)}") from None
    except duckdb.Error as exc:
        raise ConfigError(f"{file} is not a DuckDB warehouse: {first_line(exc)}") from None
    datasets = dataset_names(connection)
    if dataset not in datasets:
        connection.close()
        if not datasets:
            raise ConfigError(f"{file} holds no synced dataset: run `pipedrive-sync run` first")
        raise ConfigError(
            f"{file} has no dataset {dataset!r} (it has: {', '.join(datasets)}); pass --dataset"
        )
    return connection


def dataset_names(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Datasets in the file: schemas with tables, except `main` and dlt's `<dataset>_staging`."""
    rows = connection.execute(
        "SELECT DISTINCT table_schema FROM information_schema.tables"
        " WHERE table_catalog = current_database() AND table_schema <> 'main'"
        " ORDER BY 1"
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
