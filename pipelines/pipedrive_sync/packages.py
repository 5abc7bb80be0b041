"""Load packages the warehouse refuses never block later runs.

A package whose load the warehouse refuses (a job it rejects, a migration it refuses) stays
pending, and the run ends with one line naming the table and the cause. The next run retries
it once. When it is refused again it is set aside (kept on disk, out of dlt's way), rows it
appended before failing are removed, the runner restores the state from what the warehouse
committed before it (so the next extract reads what it held from Pipedrive again), and the run
goes on. Failures that may pass (a connection lost, a lock) are retried by every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
from dlt.common.schema.utils import get_write_disposition
from dlt.pipeline.exceptions import PipelineStepFailed

from sources.pipedrive.dlt_adapter import (
    LoadFailure,
    count_failed_load,
    failed_loads,
    load_failure,
    move_package_out,
)
from sources.pipedrive.postload import delete_rows_of_load

from .exit_codes import LoadFailed

SET_ASIDE_DIR = "failed-packages"


def load(pipeline: dlt.Pipeline) -> Any:
    """`pipeline.load()`; a refusal is raised as one line (`LoadFailed`) and counted in the
    package for the next run's retry."""
    try:
        return pipeline.load()
    except PipelineStepFailed as exc:
        raise _load_failed(pipeline, exc) from exc


def load_pending(pipeline: dlt.Pipeline) -> str | None:
    """Load the packages earlier runs left. One that was refused before and is refused again
    is set aside: the warning saying where is returned, and the caller restores the state from
    the warehouse (the next extract reads what the package held again)."""
    retried = {
        lid for lid in pipeline.list_normalized_load_packages() if failed_loads(pipeline, lid)
    }
    try:
        pipeline.load()
        return None
    except PipelineStepFailed as exc:
        failure = load_failure(exc)
        if failure is None or not failure.refused or failure.load_id not in retried:
            raise _load_failed(pipeline, exc) from exc
    return set_aside(pipeline, failure)


def _where(failure: LoadFailure) -> str:
    return f" on table {failure.table}" if failure.table else ""


def _load_failed(pipeline: dlt.Pipeline, exc: PipelineStepFailed) -> Exception:
    failure = load_failure(exc)
    if failure is None or failure.load_id not in pipeline.list_normalized_load_packages():
        return exc
    message = f"dlt's load step failed{_where(failure)}: {failure.cause}"
    if not failure.refused:
        return LoadFailed(f"{message}; load package {failure.load_id} is retried by the next run")
    count_failed_load(pipeline, str(failure.load_id))
    return LoadFailed(
        f"{message}; load package {failure.load_id} stays pending: the next run retries it"
        " once, then sets it aside and reads what it held from Pipedrive again"
    )


def set_aside_dir(pipeline: dlt.Pipeline) -> Path:
    """Where set-aside packages of this warehouse are kept: next to its pipeline's working
    directory, which a restore from the warehouse replaces."""
    return Path(pipeline.pipelines_dir) / SET_ASIDE_DIR


def set_aside(pipeline: dlt.Pipeline, failure: LoadFailure) -> str:
    """Move the refused package aside and remove the rows it appended; returns the warning.
    Newer pending packages build on its state: the caller discards them with the state."""
    load_id = str(failure.load_id)
    appended = _appended_tables(pipeline.get_load_package_info(load_id))
    target = move_package_out(pipeline, load_id, set_aside_dir(pipeline) / load_id)
    delete_rows_of_load(pipeline, appended, load_id)
    return (
        f"load package {load_id} was refused again{_where(failure)} ({failure.cause}): set"
        f" aside in {target}; what it held is read from Pipedrive again"
    )


def _appended_tables(info: Any) -> list[str]:
    """Append tables with dlt's load id column that the package wrote into."""
    tables = {job.job_file_info.table_name for jobs in info.jobs.values() for job in jobs}
    schema = info.schema
    return sorted(
        table
        for table in tables
        if table in schema.tables
        and get_write_disposition(schema.tables, table) == "append"
        and "_dlt_load_id" in schema.get_table_columns(table)
    )
