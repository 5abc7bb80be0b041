"""The README's destinations matrix, cell by cell: each feature of a sync on each destination
that can be tested offline (DuckDB, a real PostgreSQL, SQLAlchemy on SQLite), and the refusal
of destinations that cannot update rows in place.

One scenario per destination (four runs against its own fake account) feeds one test per
feature; the README matrix must mark exactly these cells as tested.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_HTTP, TOKEN
from pg_server import Server

from pipelines.pipedrive_sync.exit_codes import ConfigError
from pipelines.pipedrive_sync.runner import RunResult, run_sync
from pipelines.pipedrive_sync.settings import resolve
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive_fake import FakePipedrive

README = Path(__file__).resolve().parent.parent / "README.md"
DATASET = "matrix"
ENTITIES = "deals,persons,organizations,pipelines,stages,users"
FEATURES = (
    "merge",
    "deletion flags",
    "hard deletes",
    "scheduled reconcile",
    "label rewrites",
    "views",
    "run history",
    "JSON columns",
)
DESTINATIONS = ("duckdb", "postgres", "sqlalchemy (SQLite)")


@dataclass
class Scenario:
    """What four runs against one destination did, and a way to read it back."""

    destination: str
    query: Callable[[str], list[tuple[Any, ...]]]  # SQL with unqualified table names
    fake: FakePipedrive
    results: list[RunResult] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def column(self, sql: str) -> list[Any]:
        return [row[0] for row in self.query(sql)]


def _duckdb_reader(path: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with open_duckdb(path, DATASET) as connection:
            return connection.execute(sql).fetchall()

    return query


def _postgres_reader(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    def query(sql: str) -> list[tuple[Any, ...]]:
        import psycopg2

        connection = psycopg2.connect(url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SET search_path TO {DATASET}")
                cursor.execute(sql)
                return list(cursor.fetchall())
        finally:
            connection.close()

    return query


def _sqlite_reader(path: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    def query(sql: str) -> list[tuple[Any, ...]]:
        # dlt keeps each dataset of a SQLite database in a file of its own, next to it
        connection = sqlite3.connect(path.with_name(f"{path.stem}__{DATASET}.db"))
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    return query


def _configure(
    destination: str, work: Path, request: pytest.FixtureRequest, patch: pytest.MonkeyPatch
) -> tuple[str, Callable[[str], list[tuple[Any, ...]]]]:
    """The --destination value and a reader for one of DESTINATIONS."""
    if destination == "duckdb":
        patch.setenv("SOURCES__PIPEDRIVE__DUCKDB_PATH", str(work / "matrix.duckdb"))
        return "duckdb", _duckdb_reader(work / "matrix.duckdb")
    if destination == "postgres":
        server: Server = request.getfixturevalue("postgres")
        url = server.database("destinations_matrix")
        patch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
        return "postgres", _postgres_reader(url)
    database = work / "matrix.db"
    patch.setenv("DESTINATION__SQLALCHEMY__CREDENTIALS", f"sqlite:///{database}")
    return "sqlalchemy", _sqlite_reader(database)


def _run(name: str, **options: Any) -> RunResult:
    interval = options.pop("reconcile_interval", None)
    settings = resolve(
        destination=name,
        dataset=DATASET,
        entities=ENTITIES,
        reconcile=options.pop("reconcile", False),
        hard_deletes=options.pop("hard_deletes", None),
    )
    settings.http = FAST_HTTP
    settings.options = replace(settings.options, refresh_all=True, **options)
    if interval is not None:
        settings.reconcile_interval = interval
    result = run_sync(settings)
    assert result.code == 0, result.message
    return result


def _play(scenario: Scenario, name: str) -> None:
    """Four runs, each after changes in Pipedrive that one feature has to follow."""
    fake, facts = scenario.fake, scenario.facts
    scenario.results.append(_run(name))
    deal = fake.records("deals", archived=False)[0]["id"]
    fake.update("deals", deal, title="Renamed in Pipedrive")
    facts["updated_deal"] = deal
    facts["flagged_person"] = fake.records("persons")[2]["id"]
    fake.delete("persons", facts["flagged_person"])
    enum_key = fake.field_key_for_type("deals", "enum")
    set_key = fake.field_key_for_type("deals", "set")
    enum_option = fake.field("deals", enum_key).options[0]
    set_option = fake.field("deals", set_key).options[0]
    fake.rename_option("deals", enum_key, enum_option.id, "Renamed enum")
    fake.rename_option("deals", set_key, set_option.id, "Renamed set")
    facts["labels"] = (enum_key, enum_option.id, set_key, set_option.id)
    scenario.results.append(_run(name, reconcile=True, force_fields_refresh=True))

    facts["deleted_organization"] = fake.records("organizations")[1]["id"]
    fake.delete("organizations", facts["deleted_organization"])
    scenario.results.append(_run(name, reconcile=True, hard_deletes=True))

    # no --reconcile: due because the interval has passed since sync_runs' last reconcile
    facts["scheduled_person"] = fake.records("persons")[4]["id"]
    fake.delete("persons", facts["scheduled_person"])
    scenario.results.append(_run(name, reconcile_interval=timedelta(0)))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(d, marks=[pytest.mark.postgres] if d == "postgres" else [])
        for d in DESTINATIONS
    ],
)
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    destination: str = request.param
    work = tmp_path_factory.mktemp("matrix")
    fake = FakePipedrive(
        token=TOKEN, seed=5, scale={"deals": 60, "persons": 30, "organizations": 12}
    ).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(work)
            patch.setenv("DLT_DATA_DIR", str(work / "dlt-data"))
            patch.setenv("PIPEDRIVE_API_TOKEN", TOKEN)
            patch.setenv("PIPEDRIVE_BASE_URL", fake.base_url)
            name, query = _configure(destination, work, request, patch)
            played = Scenario(destination, query, fake)
            _play(played, name)
            yield played
    finally:
        fake.stop()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# -- one test per feature (the matrix's columns) ---------------------------------------------
def test_merge(scenario: Scenario) -> None:
    total, distinct = scenario.query("SELECT count(*), count(DISTINCT id) FROM deals")[0]
    assert total == distinct == len(scenario.fake.records("deals", deleted=None))
    deal = scenario.facts["updated_deal"]
    assert scenario.column(f"SELECT title FROM deals WHERE id = {deal}") == ["Renamed in Pipedrive"]


def test_deletion_flags(scenario: Scenario) -> None:
    person = scenario.facts["flagged_person"]
    flags = dict(scenario.query("SELECT id, is_deleted FROM persons"))
    assert flags[person] in (True, 1)
    assert sum(1 for flag in flags.values() if flag in (True, 1)) == 2  # and the scheduled one
    assert scenario.results[1].vanished["persons"] == 1


def test_hard_deletes(scenario: Scenario) -> None:
    organization = scenario.facts["deleted_organization"]
    ids = scenario.column("SELECT id FROM organizations")
    assert organization not in ids
    assert len(ids) == len(scenario.fake.records("organizations"))


def test_scheduled_reconcile(scenario: Scenario) -> None:
    person = scenario.facts["scheduled_person"]
    assert scenario.results[3].vanished.get("persons") == 1
    flag = scenario.column(f"SELECT is_deleted FROM persons WHERE id = {person}")
    assert flag in ([True], [1])


def test_label_rewrites(scenario: Scenario) -> None:
    enum_key, enum_option, set_key, set_option = scenario.facts["labels"]
    columns = dict(
        scenario.query(
            "SELECT field_key, column_name FROM custom_fields"
            f" WHERE entity = 'deal' AND field_key IN ('{enum_key}', '{set_key}')"
        )
    )
    enum_column, set_column = columns[enum_key], columns[set_key]
    rows = {
        r[0]: r[1:] for r in scenario.query(f"SELECT id, {enum_column}, {set_column} FROM deals")
    }
    assert scenario.results[1].labels_rewritten == 2
    checked = 0
    for record in scenario.fake.records("deals", deleted=None):
        values = record["custom_fields"] or {}
        enum_value, set_value = rows[record["id"]]
        if values.get(enum_key) == enum_option:
            assert enum_value == "Renamed enum"
            checked += 1
        if set_option in (values.get(set_key) or []):
            assert "Renamed set" in _json(set_value)
            checked += 1
    assert checked > 0


def test_views(scenario: Scenario) -> None:
    deals = scenario.column("SELECT count(*) FROM deals")[0]
    enriched, named = scenario.query(
        "SELECT count(*), count(stage_name) FROM deals_enriched WHERE pipeline_name IS NOT NULL"
    )[0]
    assert enriched == named == deals
    summary = scenario.query("SELECT sum(open_deals) FROM open_pipeline_summary")[0][0]
    assert summary > 0


def test_run_history(scenario: Scenario) -> None:
    runs = scenario.query(
        "SELECT run_id, count(*), sum(CASE WHEN reconciled THEN 1 ELSE 0 END) FROM sync_runs"
        " WHERE entity = 'persons' GROUP BY run_id"
    )
    assert len(runs) == 4
    assert sum(int(reconciled) for _, _, reconciled in runs) >= 3  # runs 2-4 listed every id
    statuses = set(scenario.column("SELECT DISTINCT status FROM sync_runs"))
    assert statuses == {"ok"}


def test_json_columns(scenario: Scenario) -> None:
    stored = dict(scenario.query("SELECT id, emails FROM persons"))
    served = {r["id"]: r["emails"] for r in scenario.fake.records("persons")}
    assert served
    for person, emails in served.items():
        assert _json(stored[person]) == emails, f"person {person}: {stored[person]!r}"


# -- refused destinations, and the README --------------------------------------------------
def test_a_destination_that_cannot_update_rows_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.pipedrive_sync.destinations import check_destination

    monkeypatch.setenv("DESTINATION__FILESYSTEM__BUCKET_URL", str(tmp_path / "files"))
    with pytest.raises(ConfigError, match="cannot update rows in place"):
        check_destination("filesystem")
    assert check_destination("postgres") is not None


def _readme_matrix() -> dict[tuple[str, str], str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Destinations", 1)[1]
    table = section[section.index("| destination |") :].split("\n\n", 1)[0]
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")][1:]
    cells = {}
    for line in lines[2:]:
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        for feature, cell in zip(header, row[1:], strict=True):
            cells[(row[0].strip("`"), feature)] = cell
    return cells


def test_the_readme_matrix_marks_exactly_the_tested_cells() -> None:
    cells = _readme_matrix()
    features = {feature for _, feature in cells}
    assert features == set(FEATURES)
    tested = {key for key, cell in cells.items() if cell.startswith("tested")}
    assert tested == {(d, f) for d in DESTINATIONS for f in FEATURES}
    others = {cell for key, cell in cells.items() if key not in tested}
    assert others <= {"untested", "refused"}, others
