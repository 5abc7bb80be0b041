"""The one module that uses dlt beyond its documented API (`sources.pipedrive.dlt_adapter`)."""

from __future__ import annotations

import json
from pathlib import Path

import dlt
import pytest
from conftest import Syncer
from pg_server import PASSWORD, Server

from pipelines.pipedrive_sync.runner import duckdb_destination, make_pipeline
from sources.pipedrive.dlt_adapter import destination_location, restore_from_warehouse


@pytest.mark.postgres
def test_a_destinations_location_names_its_database_but_never_its_password(
    postgres: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    locations = []
    for database in ("db_one", "db_two"):
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", postgres.database_url(database))
        locations.append(destination_location(dlt.destinations.postgres(), "pipedrive"))
    assert locations[0] != locations[1]
    assert all(f":{postgres.port}/db_" in where for where in locations)
    assert all(PASSWORD not in where for where in locations)
    other = destination_location(dlt.destinations.postgres(), "another_dataset")
    assert other != locations[1] and other.endswith("#another_dataset")


def test_restoring_from_the_warehouse_discards_a_local_state_it_never_committed(
    syncer: Syncer,
) -> None:
    """A local state ahead of the warehouse (its package never loaded) is replaced by what
    the warehouse committed."""
    assert syncer.run(entities="deals").code == 0
    destination, connection = duckdb_destination(syncer.db_path)
    pipeline = make_pipeline(syncer.settings(), destination)
    committed = pipeline.state["sources"]["pipedrive"]["resources"]["deals"]
    state_file = Path(pipeline.working_dir) / "state.json"
    local = json.loads(state_file.read_text())
    local["sources"]["pipedrive"]["resources"]["deals"]["streams"]["deals"]["since"] = (
        "2999-01-01T00:00:00Z"
    )
    local["_state_version"] += 5
    state_file.write_text(json.dumps(local))

    try:
        restored = restore_from_warehouse(make_pipeline(syncer.settings(), destination))
        assert restored.state["sources"]["pipedrive"]["resources"]["deals"] == committed
    finally:
        connection.close()
