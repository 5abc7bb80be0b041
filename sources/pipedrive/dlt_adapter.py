"""Every use of dlt beyond its documented API, in one place (recheck here on a dlt upgrade).

The sync relies on a few of dlt's internals: its on-disk package storages (crash repair), the
compressed state rows in `_dlt_pipeline_state` (adopting the state of an older pipeline name),
a job client pointed at another schema (healing tables), and a destination's resolved
credentials (where a warehouse is). Each use is a small function here with its own test.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.common.versioned_state import decompress_state
from dlt.version import __version__ as DLT_VERSION

logger = logging.getLogger(__name__)

SUPPORTED_DLT = ("1.",)
if not DLT_VERSION.startswith(SUPPORTED_DLT):  # pragma: no cover - guarded by pyproject's pin
    raise ImportError(f"pipedrive-sync needs dlt 1.x, found {DLT_VERSION}")

STATE_TABLE = "_dlt_pipeline_state"
_REPLACED = ".replaced-"
_SECRET_MARKERS = ("password", "secret", "token", "private_key", "key")


def destination_location(destination: Any, dataset: str) -> str:
    """Where a destination's dataset is, without secrets: `postgres://loader@db:5432/analytics`
    + `#dataset`. Resolves the destination's credentials from dlt config as a load would."""
    try:
        config = destination.configuration(None, accept_partial=True)
    except Exception as exc:  # noqa: BLE001 - described by the load that follows, not here
        logger.debug("could not resolve the destination's configuration: %s", exc)
        return f"{destination.destination_name}#{dataset}"
    parts = [str(destination.destination_name)]
    credentials = getattr(config, "credentials", None)
    if credentials is not None:
        parts.append(_describe(credentials))
    bucket = getattr(config, "bucket_url", None)
    if bucket:
        parts.append(str(bucket))
    return "|".join(parts) + f"#{dataset}"


def _describe(credentials: Any) -> str:
    """Credentials without their secrets (dlt renders connection strings without passwords)."""
    if hasattr(credentials, "to_url"):
        return str(credentials)
    try:
        items = dict(credentials)
    except (TypeError, ValueError):
        return type(credentials).__name__
    return ",".join(
        f"{k}={v}"
        for k, v in sorted(items.items())
        if v is not None and not any(marker in k.lower() for marker in _SECRET_MARKERS)
    )


def restore_from_warehouse(pipeline: dlt.Pipeline) -> dlt.Pipeline:
    """The pipeline with its local state and schemas replaced by what the warehouse committed.

    The warehouse is the source of truth: a local state can be stale (another machine synced
    since), ahead (a package moved aside never loaded), or another warehouse's (a copied
    file). Only call this without pending packages: they belong to the local state.
    """
    working = Path(pipeline.working_dir)
    for leftover in working.parent.glob(f"{working.name}{_REPLACED}*"):
        shutil.rmtree(leftover, ignore_errors=True)  # from a run killed mid-replacement
    if working.exists():
        # renamed aside in one step (dlt's own `drop` deletes file by file: a kill halfway
        # left a state whose schema was gone), deleted once the restored one is in place
        aside = working.with_name(f"{working.name}{_REPLACED}{uuid.uuid4().hex[:8]}")
        os.replace(working, aside)
    fresh = dlt.pipeline(
        pipeline_name=pipeline.pipeline_name,
        pipelines_dir=pipeline.pipelines_dir,
        destination=pipeline.destination,
        dataset_name=pipeline.dataset_name,
    )
    fresh.sync_destination()
    for leftover in working.parent.glob(f"{working.name}{_REPLACED}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return fresh


def adopt_legacy_state(pipeline: dlt.Pipeline, source: str) -> str | None:
    """Take over the source state that an older pipeline name committed in this dataset.

    Versions before the warehouse identity named their pipelines after a hash of the local
    path; their cursors and pinned names live in `_dlt_pipeline_state` under that name. Used
    when the warehouse has no state for the pipeline's own name; returns the adopted name.
    """
    if pipeline.state.get("sources", {}).get(source):
        return None
    legacy = _newest_other_state(pipeline)
    if legacy is None:
        return None
    name, state = legacy
    adopted = (state.get("sources") or {}).get(source)
    if not adopted:
        return None
    with pipeline.managed_state() as current:  # extracted with the run's first package
        current.setdefault("sources", {})[source] = adopted
    return name


def _newest_other_state(pipeline: dlt.Pipeline) -> tuple[str, dict[str, Any]] | None:
    try:
        with pipeline.destination_client() as client:
            sql = client.sql_client  # type: ignore[attr-defined]
            table = sql.make_qualified_table_name(STATE_TABLE)
            name = sql.escape_column_name("pipeline_name")
            created = sql.escape_column_name("created_at")
            rows = sql.execute_sql(
                f"SELECT {name}, max({created}) FROM {table} WHERE {name} <> %s GROUP BY {name}"
                f" ORDER BY 2 DESC",
                pipeline.pipeline_name,
            )
            if not rows:
                return None
            stored = client.get_stored_state(rows[0][0])  # type: ignore[attr-defined]
    except DestinationUndefinedEntity:
        return None
    if stored is None:
        return None
    return str(rows[0][0]), decompress_state(stored.state)


def drop_committed_extracts(pipeline: dlt.Pipeline) -> list[str]:
    """Remove extracted packages that dlt already normalized.

    dlt's normalize renames its output into place and then deletes the extracted package; a
    kill between the two leaves both, and normalizing the package again fails ("Directory not
    empty"). The rename is the commit, so the extracted copy is obsolete.
    """
    extracted = pipeline._get_normalize_storage().extracted_packages
    load_storage = pipeline._get_load_storage()
    try:
        committed = {*load_storage.list_normalized_packages(), *load_storage.list_loaded_packages()}
    except FileNotFoundError:  # nothing was ever normalized in this working directory
        committed = set()
    dropped = [load_id for load_id in extracted.list_packages() if load_id in committed]
    for load_id in dropped:
        extracted.delete_package(load_id)
    return dropped


def adopt_extracted_schemas(pipeline: dlt.Pipeline) -> list[str]:
    """Make the pipeline's schema catch up with pending extracted packages; returns their ids.

    dlt commits an extracted package before it saves the pipeline's schema, and normalizes with
    the pipeline's schema, not the package's. A kill between the two left the schema without
    the columns the package added (a new custom field, a key first seen), the normalized package
    without them too, and its load failing on every later run ("table … does not have a column
    …"). The package's schema is the pipeline's at the end of that extract: a newer one wins.
    """
    adopted = []
    for load_id in pipeline.list_extracted_load_packages():
        schema = pipeline.get_load_package_info(load_id).schema
        current = pipeline.schemas.get(schema.name)  # None: killed before its first save
        if current is None or schema.version > current.version:
            pipeline.schemas.save_schema(schema)
            adopted.append(load_id)
    return adopted


def job_client_for(pipeline: Any, schema: Any) -> Any:
    """A destination job client that generates DDL from `schema` (dlt has no public way to get
    a client for a schema other than the pipeline's own)."""
    client = pipeline.destination_client()
    client.schema = schema
    return client


@contextmanager
def truncated_staging() -> Iterator[None]:
    """dlt empties its merge staging tables after the loads inside (they then stay out of
    DuckDB's checkpoint and out of the file); dlt's global setting is put back afterwards, so
    other pipelines of the process keep theirs. An environment variable still wins."""
    key = "load.truncate_staging_dataset"
    before: Any = dlt.config.get(key)
    dlt.config[key] = True
    try:
        yield
    finally:
        dlt.config[key] = before
