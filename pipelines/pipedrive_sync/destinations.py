"""Which dlt destinations a sync can use, decided once before anything is fetched.

A sync merges rows on `id` and then updates them in place (deletion flags, hard deletes,
renamed labels, restored values of deleted fields) with SQL: a destination without a SQL job
client or without dlt's `delete-insert` merge cannot hold a correct copy, so it is refused
with exit 78 rather than left to duplicate rows and fail later (see README: Destinations).
"""

from __future__ import annotations

from typing import Any

from sources.pipedrive.dlt_adapter import destination_traits

from .exit_codes import ConfigError

MERGE_STRATEGY = "delete-insert"  # dlt's default merge, the one the source's tables use


def check_destination(name: str) -> Any:
    """dlt's destination factory for `name`, once it is known to support a sync.

    Raises DestinationUnknown or DestinationExtraMissing (see sources.pipedrive.dlt_adapter)
    and ConfigError for a destination that cannot update rows in place; all exit 78.
    """
    traits = destination_traits(name)
    if not traits.sql_client or MERGE_STRATEGY not in traits.merge_strategies:
        raise ConfigError(
            f"--destination {name}: the {traits.destination_type} destination cannot update"
            " rows in place (merge on id, deletion flags, renamed labels), so a sync cannot keep"
            " it correct: use a SQL database such as duckdb or postgres (README: Destinations)"
        )
    return traits.factory
