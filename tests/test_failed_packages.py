"""A load package the destination refuses never blocks later runs.

The refusal is injected on the warehouse side (a NOT NULL constraint a DBA might add, or a
column type changed by hand) and fails one job of a package whose other jobs commit. The run
says so in one line; the next run retries once; a second refusal sets the package aside and
reads what it held from Pipedrive again, with nothing lost and nothing twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CORE_ENTITIES, TOKEN, Syncer, all_deals
from pg_server import Server
from test_schema_evolution import assert_exact

from pipelines.pipedrive_sync import exit_codes
from pipelines.pipedrive_sync.packages import set_aside_dir
from pipelines.pipedrive_sync.runner import make_pipeline

CLI = [
    sys.executable,
    "-m",
    "pipelines.pipedrive_sync",
    "run",
    "--entities",
    ",".join(CORE_ENTITIES),
]


def _cli(syncer: Syncer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPEDRIVE_", "SOURCES__", "RUNTIME__"))  # the CLI's own log level
    }
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt-data"),
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=syncer.fake.base_url,
    )
    return subprocess.run(
        [*CLI, "--duckdb-path", str(syncer.db_path), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc.stderr.strip().splitlines()


def _label_changes(syncer: Syncer) -> int:
    return int(syncer.query("SELECT count(*) FROM custom_field_label_changes")[0][0])


def test_a_refused_package_is_retried_once_then_set_aside_and_read_again(
    syncer: Syncer, tmp_path: Path
) -> None:
    fake = syncer.fake
    assert syncer.run().code == 0
    syncer.execute("ALTER TABLE deals ALTER COLUMN title SET NOT NULL")
    deals = fake.records("deals")
    refused = deals[0]["id"]
    fake.update("deals", refused, title=None)  # the warehouse refuses this row
    fake.update("deals", deals[1]["id"], title="changed next to the refused one")
    fake.update("persons", fake.records("persons")[0]["id"], name="Renamed person")
    enum_key = fake.field_key_for_type("deals", "enum")
    fake.rename_option("deals", enum_key, fake.field("deals", enum_key).options[0].id, "Gold")

    first = _cli(syncer, tmp_path, "--refresh-fields")  # sees the rename
    assert first.returncode == exit_codes.FAILURE
    [line] = _stderr_lines(first)
    assert line.startswith("pipedrive-sync: dlt's load step failed on table deals: "), line
    assert "NOT NULL constraint failed: deals.title" in line
    assert "the next run retries it once" in line
    # the package's other jobs committed (the merge is a follow-up job, started after them)
    assert _label_changes(syncer) == 1
    # the refused merge left the deals it would have replaced as they were
    assert syncer.query(f"SELECT title FROM deals WHERE id = {refused}") == [(deals[0]["title"],)]
    assert syncer.query(f"SELECT title FROM deals WHERE id = {deals[1]['id']}") == [
        (deals[1]["title"],)
    ]

    fake.update("deals", refused, title="Fixed in Pipedrive")  # the retry still holds the null
    second = _cli(syncer, tmp_path)
    assert second.returncode == 0, second.stderr
    [warning] = _stderr_lines(second)
    assert warning.startswith("pipedrive-sync: warning: load package "), warning
    assert "refused again on table deals (Constraint Error: NOT NULL" in warning
    kept = [p for p in set_aside_dir(make_pipeline(syncer.settings())).iterdir()]
    assert len(kept) == 1 and str(kept[0]) in warning
    assert list(kept[0].glob("*_jobs/deals.*")), "the set-aside package keeps its files"

    assert syncer.query(f"SELECT title FROM deals WHERE id = {refused}") == [
        ("Fixed in Pipedrive",)
    ]
    assert _label_changes(syncer) == 1, "the re-read label change must not be there twice"
    assert syncer.query(
        "SELECT count(*) FROM custom_field_label_changes WHERE applied_at IS NULL"
    ) == [(0,)]
    assert_exact(syncer)
    result = syncer.run()
    assert result.code == 0 and not result.warnings, result.message
    assert_exact(syncer)


def test_a_refusal_that_outlives_the_set_aside_package_still_ends_when_it_is_removed(
    syncer: Syncer,
) -> None:
    """The re-read package is refused too (the cause is in the warehouse): each run sets one
    package aside and fails with one line; removing the cause lets the next run finish."""
    fake = syncer.fake
    assert syncer.run().code == 0
    syncer.execute("ALTER TABLE persons ALTER COLUMN name SET NOT NULL")
    persons = fake.records("persons")
    fake.update("persons", persons[0]["id"], name=None)
    fake.update("persons", persons[1]["id"], name="Changed next to it")
    for _ in range(2):
        with pytest.raises(Exception) as raised:
            syncer.run()
        failure = exit_codes.classify(raised.value)
        assert failure.code == exit_codes.FAILURE, failure
        assert failure.message.startswith("dlt's load step failed on table persons: "), failure
        assert "\n" not in failure.message
    pipeline = make_pipeline(syncer.settings())
    assert len(list(set_aside_dir(pipeline).iterdir())) == 1
    assert pipeline.has_pending_data
    syncer.execute("ALTER TABLE persons ALTER COLUMN name DROP NOT NULL")
    result = syncer.run()
    assert result.code == 0, result.message
    assert not result.warnings, "the pending package loads now: nothing to set aside"
    assert_exact(syncer)


def test_a_column_type_changed_by_hand_does_not_block_the_sync(syncer: Syncer) -> None:
    """A column's type changed in the warehouse so that new values no longer fit."""
    fake = syncer.fake
    assert syncer.run().code == 0
    names = sorted({r[0] for r in syncer.query("SELECT name FROM organizations")})
    labels = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
    syncer.execute(f"CREATE TYPE known_names AS ENUM ({labels})")
    syncer.execute("ALTER TABLE organizations ALTER COLUMN name TYPE known_names")
    org = fake.records("organizations")[0]["id"]
    fake.update("organizations", org, name="A name the enum does not know")
    with pytest.raises(Exception) as raised:
        syncer.run()
    message = exit_codes.classify(raised.value).message
    assert message.startswith("dlt's load step failed on table organizations: "), message
    fake.update("organizations", org, name=names[0])  # fits again: the re-read loads
    result = syncer.run()
    assert result.code == 0, result.message
    assert len(result.warnings) == 1 and "organizations" in result.warnings[0]
    assert_exact(syncer)


@pytest.mark.postgres
def test_postgres_a_check_constraint_refusing_a_merge_keeps_the_old_rows_and_never_blocks(
    syncer: Syncer,
    postgres: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg2

    url = postgres.database("refusals")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    fake = syncer.fake
    where = {"destination": "postgres", "dataset": "refusals"}

    def sql(statement: str) -> list[tuple[Any, ...]]:
        connection = psycopg2.connect(url)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    assert syncer.run(**where).code == 0
    sql(
        "ALTER TABLE refusals.deals ADD CONSTRAINT no_refused"
        " CHECK (title IS DISTINCT FROM 'Refused') NOT VALID"
    )
    deals = fake.records("deals")
    fake.update("deals", deals[0]["id"], title="Refused")
    fake.update("deals", deals[1]["id"], title="Changed next to it")
    with pytest.raises(Exception) as raised:
        syncer.run(**where)
    message = exit_codes.classify(raised.value).message
    assert message.startswith("dlt's load step failed on table deals: "), message
    assert "no_refused" in message and "\n" not in message
    kept = sql(f"SELECT title FROM refusals.deals WHERE id = {deals[1]['id']}")
    assert kept == [(deals[1]["title"],)], "the refused merge must not delete the old rows"
    fake.update("deals", deals[0]["id"], title="Accepted now")
    result = syncer.run(**where)
    assert result.code == 0, result.message
    assert len(result.warnings) == 1 and "set aside" in result.warnings[0]
    titles = dict(sql("SELECT id, title FROM refusals.deals"))
    assert titles == {d["id"]: d["title"] for d in all_deals(fake)}
    assert syncer.run(**where).warnings == []


def _step_failed(step: str, inner: BaseException) -> BaseException:
    from types import SimpleNamespace

    from dlt.pipeline.exceptions import PipelineStepFailed

    pipeline = SimpleNamespace(pipeline_name="p", has_pending_data=True)
    try:
        raise PipelineStepFailed(pipeline, step, "1700000000.1", inner)  # type: ignore[arg-type]
    except PipelineStepFailed as exc:
        return exc


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def test_failures_inside_dlt_steps_are_one_line_naming_step_table_and_cause() -> None:
    """What reached users before: `PipelineStepFailed: Pipeline execution failed at
    step=load … with exception:`, the cause cut off."""
    from dlt.destinations.exceptions import DatabaseUndefinedRelation
    from dlt.load.exceptions import LoadClientJobTerminalRetry

    missing = _caused(
        DatabaseUndefinedRelation(Exception("Catalog Error: Table with name x does not exist!")),
        Exception('Catalog Error: Table with name x does not exist!\nDid you mean "y"?'),
    )
    job = LoadClientJobTerminalRetry(
        "1700000000.1", "custom_field_label_changes.a5f8.insert_values.gz", "Traceback…", missing
    )
    failure = exit_codes.classify(_step_failed("load", job)).message
    assert "\n" not in failure
    assert failure.startswith("dlt's load step failed on table custom_field_label_changes")
    assert "Catalog Error: Table with name x does not exist!" in failure
    broken = _caused(ValueError("cannot coerce"), TypeError("int is not str\nsecond line"))
    message = exit_codes.classify(_step_failed("normalize", broken)).message
    assert message.startswith("dlt's normalize step failed: ")
    assert "int is not str" in message and "\n" not in message
