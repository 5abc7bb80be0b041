"""Opening the DuckDB warehouse for reading, with the dataset as the default schema."""

from __future__ import annotations

from pathlib import Path

import duckdb


def open_duckdb(
    path: Path | str, dataset: str = "pipedrive", read_only: bool = True
) -> duckdb.DuckDBPyConnection:
    """A connection where `SELECT * FROM deals` just works.

    The dataset becomes the default schema, addressed through the file's own catalog name so
    that `pipedrive.duckdb` + dataset `pipedrive` is not ambiguous; times display in UTC.
    """
    connection = duckdb.connect(str(path), read_only=read_only)
    catalog = connection.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    schema = f'"{catalog}"."{dataset}"'
    exists = connection.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE catalog_name = ? AND schema_name = ?",
        [catalog, dataset],
    ).fetchone()[0]  # type: ignore[index]
    if exists:
        connection.execute(f"USE {schema}")
    connection.execute("SET TimeZone = 'UTC'")
    return connection
