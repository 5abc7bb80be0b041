"""The pinned dlt schema (`schemas/pipedrive.schema.yaml`) and the standard columns it declares."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dlt.common.schema import Schema

SCHEMA_FILE = "pipedrive.schema.yaml"


def schema_path() -> Path:
    """Where the pinned schema file is (the `schemas` package may be a namespace package)."""
    import schemas

    for folder in schemas.__path__:
        candidate = Path(folder) / SCHEMA_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{SCHEMA_FILE} is missing from the installed `schemas` package")


@cache
def _schema_document() -> dict[str, Any]:
    text = schema_path().read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def load_schema() -> Schema:
    """A fresh copy of the pinned `pipedrive` dlt schema."""
    return Schema.from_dict(_schema_document())


def table_columns(table: str) -> dict[str, dict[str, Any]]:
    """dlt column definitions of a table's standard columns, in schema order."""
    columns = _schema_document()["tables"].get(table, {}).get("columns", {})
    return {name: {"name": name, **column} for name, column in columns.items()}


def standard_types(table: str) -> dict[str, str]:
    """Standard column name → dlt data type."""
    return {name: column["data_type"] for name, column in table_columns(table).items()}
