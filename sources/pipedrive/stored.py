"""What a warehouse has stored about its sync: its identity and the custom-field mapping.

Read once per run, before anything is written, through any dlt SQL client: the identity says
which company the dataset holds (see `identity`), the `custom_fields` mapping which column holds
which field, so pinned column names survive a lost or reset dlt state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlt.common.destination.exceptions import DestinationUndefinedEntity

from .convert import from_json_text
from .dlt_adapter import cursor_columns
from .identity import IDENTITY_TABLE, Identity

MAPPING_TABLE = "custom_fields"
MAPPING_COLUMNS = (
    "entity",
    "field_key",
    "column_name",
    "field_name",
    "field_type",
    "options",
    "is_active",
)


@dataclass(frozen=True)
class Stored:
    """The warehouse's own records; empty for a dataset nothing was loaded into yet."""

    identity: Identity | None = None
    mapping: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)

    def mapping_rows(self, entity: str) -> tuple[dict[str, Any], ...]:
        """The stored mapping rows of one entity (its singular name, e.g. "deal")."""
        return self.mapping.get(entity, ())


def read_stored(client: Any) -> Stored:
    """Identity and mapping through an open dlt SQL client (missing tables read as empty)."""
    identities = _select(client, IDENTITY_TABLE, ("*",))
    identity = Identity.from_row(identities[0]) if identities else None
    mapping: dict[str, list[dict[str, Any]]] = {}
    for row in _select(client, MAPPING_TABLE, MAPPING_COLUMNS) or []:
        row["options"] = from_json_text(row.get("options"))
        mapping.setdefault(str(row["entity"]), []).append(row)
    return Stored(identity, {entity: tuple(rows) for entity, rows in mapping.items()})


def _select(client: Any, table: str, columns: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """Rows of a dataset table as dicts; None when the table (or the dataset) does not exist."""
    names = "*" if columns == ("*",) else ", ".join(client.escape_column_name(c) for c in columns)
    try:
        with client.execute_query(
            f"SELECT {names} FROM {client.make_qualified_table_name(table)}"
        ) as cursor:
            described = cursor_columns(cursor)
            return [dict(zip(described, row, strict=True)) for row in cursor.fetchall()]
    except DestinationUndefinedEntity:
        return None
