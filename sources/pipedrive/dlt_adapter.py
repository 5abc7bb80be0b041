"""Every use of dlt beyond its documented API, in one place (recheck here on a dlt upgrade).

The sync relies on a few of dlt's internals: its on-disk package storages (crash repair,
counting a package's failed loads in its own state, moving a refused package out), the
compressed state rows in `_dlt_pipeline_state` (adopting the state of an older pipeline name),
a job client pointed at another schema and its DDL without recording the schema version
(healing tables; the sqlalchemy destination's table objects), the attributes of dlt's step and job exceptions (one-line failures), and a
destination's resolved credentials (where a warehouse is). Each use is a small function here
with its own test.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.common.versioned_state import decompress_state
from dlt.version import __version__ as DLT_VERSION

from .sync_state import put_source_state, source_state

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
    if source_state(pipeline.state, source):
        return None
    legacy = _newest_other_state(pipeline)
    if legacy is None:
        return None
    name, state = legacy
    adopted = source_state(state, source)
    if not adopted:
        return None
    with pipeline.managed_state() as current:  # extracted with the run's first package
        put_source_state(current, adopted, source)
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


# -- failures: what dlt's exceptions carry (exit_codes classifies with these) ---------------
# attributes under which dlt keeps the exception it wraps
_WRAPPED = ("exception", "client_exception", "job_exception")


def wrapped_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions `exc` carries besides Python's own cause: dlt's wrappers keep them in
    attributes (PipelineStepFailed.exception, a failed job's client_exception…), SQLAlchemy
    in `orig`."""
    inner = [getattr(exc, name, None) for name in (*_WRAPPED, "orig")]
    return [item for item in inner if isinstance(item, BaseException)]


def is_dlt(exc: BaseException, *class_names: str) -> bool:
    """Whether `exc` is an instance of one of dlt's classes (matched by name: no import)."""
    return any(
        cls.__module__.startswith("dlt.") and cls.__name__ in class_names
        for cls in type(exc).__mro__
    )


def failed_step(exc: BaseException) -> str | None:
    """The pipeline step (extract, normalize, load, sync…) a PipelineStepFailed names."""
    if is_dlt(exc, "PipelineStepFailed"):
        return str(getattr(exc, "step", "") or "") or None
    return None


@dataclass(frozen=True)
class FailedJob:
    table: str
    job_id: str
    message: str


def failed_job(exc: BaseException) -> FailedJob | None:
    """The table and message of a load job that failed, from dlt's job exceptions."""
    if not is_dlt(exc, "LoadClientJobFailed", "LoadClientJobTerminalRetry"):
        return None
    job_id = str(getattr(exc, "job_id", "") or "")
    return FailedJob(table=job_id.split(".", 1)[0] or "?", job_id=job_id, message=_job_error(exc))


def _job_error(exc: BaseException) -> str:
    """What the warehouse said: the innermost cause of the job's exception (dlt's
    `failed_message` is a whole formatted traceback)."""
    inner = getattr(exc, "client_exception", None)
    if isinstance(inner, BaseException):
        while inner.__cause__ is not None:
            inner = inner.__cause__
        if str(inner).strip():
            return str(inner)
    lines = str(getattr(exc, "failed_message", "") or exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def missing_settings(exc: BaseException) -> list[str]:
    """`section.key (ENV_VAR)` for each setting a ConfigFieldMissingException lacks."""
    if not is_dlt(exc, "ConfigFieldMissingException"):
        return []
    found = []
    for field_name, traces in (getattr(exc, "traces", None) or {}).items():
        found.append(_setting(field_name, traces))
    return found


def _setting(field_name: str, traces: Any) -> str:
    """The most specific place dlt looked for a missing field, as `a.b.c (A__B__C)`."""
    candidates: list[list[str]] = []
    for trace in traces or []:
        if hasattr(trace, "traces"):  # a nested configuration (e.g. credentials)
            inner = [t for sub in trace.traces.values() for t in sub]
            candidates.extend(list(t.sections) for t in inner if getattr(t, "sections", None))
        elif getattr(trace, "sections", None) is not None:
            candidates.append([*trace.sections, field_name])
    if not candidates:
        return field_name
    path = max(candidates, key=len)
    if path[-1] != field_name and field_name in path:
        path = path[: path.index(field_name) + 1]
    return f"{'.'.join(path)} ({'__'.join(p.upper() for p in path)})"


def missing_dependency(exc: BaseException) -> str | None:
    """The pip command a MissingDependencyException asks for."""
    if not is_dlt(exc, "MissingDependencyException"):
        return None
    packages = [str(d) for d in getattr(exc, "dependencies", None) or []]
    return "pip install " + " ".join(f'"{p}"' for p in packages) if packages else "pip install"


def unknown_destination(exc: BaseException) -> str | None:
    """The destination name dlt could not resolve."""
    if is_dlt(exc, "UnknownDestinationModule", "InvalidDestinationReference"):
        return str(getattr(exc, "ref", "") or getattr(exc, "destination", "") or "") or "?"
    return None


# -- destinations --------------------------------------------------------------------------
@dataclass(frozen=True)
class DestinationTraits:
    """What pipedrive-sync needs to know about a destination before it syncs into it."""

    factory: Any  # dlt's destination factory, to pass to dlt.pipeline
    destination_type: str  # e.g. "postgres" for a named destination "warehouse"
    sql_client: bool  # rows can be updated and deleted in place with SQL
    merge_strategies: tuple[str, ...]


class DestinationUnknown(LookupError):
    pass


class DestinationExtraMissing(ImportError):
    def __init__(self, destination_type: str, detail: str) -> None:
        super().__init__(detail)
        self.destination_type = destination_type


def destination_traits(name: str) -> DestinationTraits:
    """Resolve `name` like dlt.pipeline(destination=name) would, and load its client code.

    Raises DestinationUnknown for a name dlt cannot resolve and DestinationExtraMissing when
    the destination's packages are not installed.
    """
    from dlt.common.destination.exceptions import (
        InvalidDestinationReference,
        UnknownDestinationModule,
    )
    from dlt.common.destination.reference import Destination
    from dlt.destinations.job_client_impl import SqlJobClientBase

    try:
        factory: Any = Destination.from_reference(name)
    except (UnknownDestinationModule, InvalidDestinationReference):
        raise DestinationUnknown(name) from None
    destination_type = factory.destination_type.rsplit(".", 1)[-1]
    if destination_type == "sqlalchemy":
        factory = Destination.from_reference(name, type_mapper=_json_text_type_mapper())
    try:
        client_class = factory.client_class
    except ImportError as exc:
        raise DestinationExtraMissing(destination_type, _one_line(exc)) from None
    capabilities = factory.capabilities()
    return DestinationTraits(
        factory=factory,
        destination_type=destination_type,
        sql_client=issubclass(client_class, SqlJobClientBase),
        merge_strategies=tuple(capabilities.supported_merge_strategies or ()),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _json_text_type_mapper() -> Any:
    """dlt's SQLAlchemy type mapper with JSON columns that take JSON text as it is.

    Pages arrive as arrow tables whose JSON columns hold JSON text; SQLAlchemy's JSON type
    serializes every value it binds, so that text was stored as a JSON string of itself
    (double-encoded). Text that parses is bound as the value it encodes.
    """
    import orjson
    import sqlalchemy as sa
    from dlt.destinations.impl.sqlalchemy.type_mapper import SqlalchemyTypeMapper

    class JsonText(sa.types.TypeDecorator[Any]):
        impl = sa.JSON
        cache_ok = True

        def process_bind_param(self, value: Any, dialect: Any) -> Any:
            if isinstance(value, str):
                try:
                    return orjson.loads(value)
                except orjson.JSONDecodeError:
                    return value
            return value

    class JsonTextTypeMapper(SqlalchemyTypeMapper):
        def db_type_from_json_type(self, column: Any, table: Any) -> Any:
            return JsonText(none_as_null=True)

    return JsonTextTypeMapper


def cursor_columns(cursor: Any) -> list[str]:
    """The column names of a query's result through dlt's sql_client cursor (dlt's SQLAlchemy
    cursor has no DB-API `description`, only `columns_schema`)."""
    columns = getattr(cursor, "columns_schema", None)
    if columns:
        return [str(name) for name in columns]
    return [str(d[0]) for d in cursor.description or []]


def sql_reader_clients(destination: str, dataset: str) -> tuple[Any, Any]:
    """(job client, SQL client) reading `dataset` of a configured dlt destination, with
    credentials from dlt config; the SQL client is not opened yet (use it as a context)."""
    readable = dlt.dataset(destination, dataset, schema=dlt.Schema("pipedrive"))
    job_client = readable.destination_client
    return job_client, job_client.sql_client  # type: ignore[attr-defined]


def storage_columns(job_client: Any, tables: list[str]) -> dict[str, set[str]]:
    """table → its column names, for those of `tables` that exist (from the destination's
    information schema, case-folded as the destination does)."""
    return {
        name: set(columns) for name, columns in job_client.get_storage_tables(tables) if columns
    }


def decode_state(stored: str) -> dict[str, Any]:
    """A pipeline state as dlt stores it in `_dlt_pipeline_state.state`."""
    state: dict[str, Any] = decompress_state(stored)
    return state


def create_or_extend_tables(client: Any, tables: Iterable[str]) -> None:
    """Run the CREATE TABLE / ALTER TABLE ADD COLUMN that `tables` need to match the client's
    schema, without recording the schema version as migrated.

    dlt's `update_stored_schema` records the whole schema's version hash after migrating only
    the tables it was given; every later load with that hash then skips migrating and writes
    into tables that may not exist. Leaving the version unrecorded lets the load run dlt's own
    migration (for the tables it carries) and record it then.
    """
    names = list(tables)
    if hasattr(client.sql_client, "compare_storage_table"):
        _create_or_extend_sqlalchemy_tables(client, names)
        return
    with client.maybe_ddl_transaction():
        client._execute_schema_update_sql(names, store_schema=False)


def _create_or_extend_sqlalchemy_tables(client: Any, names: list[str]) -> None:
    """`create_or_extend_tables` for dlt's sqlalchemy destination, which builds its DDL from
    SQLAlchemy table objects instead of SQL text (as its `update_stored_schema` does, without
    storing the schema)."""
    for name in names:
        client._to_table_object(client.schema.tables[name])
    create, add = [], []
    for name in names:
        table, new_columns, exists = client.sql_client.compare_storage_table(name)
        if new_columns and exists:
            add.extend(new_columns)
        elif new_columns:
            create.append(table)
    with client.sql_client.begin_transaction():
        for table in create:
            client.sql_client.create_table(table)
        client.sql_client.alter_table_add_columns(add)


# -- load packages the warehouse refused (see pipelines.pipedrive_sync.packages) --------------
@dataclass(frozen=True)
class LoadFailure:
    """What a failed `pipeline.load()` says."""

    load_id: str | None  # the package being loaded
    table: str | None  # the table whose job (or migration) failed, when dlt tells
    cause: str  # the first line of what the warehouse said
    refused: bool  # a job failed terminally or a migration was refused: a retry may fail alike


def exception_chain(exc: BaseException, contexts: bool = False) -> list[BaseException]:
    """`exc` and everything behind it: what dlt wraps, then Python's causes (and, with
    `contexts`, the exceptions being handled when one was raised)."""
    chain: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        pending.extend(wrapped_exceptions(current))
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        elif contexts and current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)
    return chain


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def load_failure(exc: BaseException) -> LoadFailure | None:
    """The package, table and cause of dlt's load step failing in `exc` (None: not that)."""
    chain = exception_chain(exc)
    step = next((e for e in chain if failed_step(e) == "load"), None)
    if step is None:
        return None
    job = next((j for j in map(failed_job, chain) if j is not None), None)
    migration = next((e for e in chain if is_dlt(e, "SchemaUpdateError")), None)
    table: str | None
    if job is not None:
        table, cause = job.table, _first_line(job.message)
    else:
        tables = getattr(migration, "table_names", None) or []
        table = ", ".join(tables) or None
        cause = next((_first_line(str(e)) for e in reversed(chain) if str(e).strip()), "")
    return LoadFailure(
        load_id=getattr(step, "load_id", None),
        table=table,
        cause=cause or type(chain[-1]).__name__,
        refused=job is not None or migration is not None,
    )


FAILURES_KEY = "pipedrive_sync_failed_loads"  # in the package's own state


def _normalized_packages(pipeline: Any) -> Any:
    return pipeline._get_load_storage().normalized_packages


def failed_loads(pipeline: Any, load_id: str) -> int:
    """How often the warehouse refused this pending package (see `count_failed_load`)."""
    state = _normalized_packages(pipeline).get_load_package_state(load_id)
    return int(state.get(FAILURES_KEY, 0))


def count_failed_load(pipeline: Any, load_id: str) -> int:
    """Record one more refusal of a pending package, in its own state; returns the count."""
    packages = _normalized_packages(pipeline)
    state = packages.get_load_package_state(load_id)
    state[FAILURES_KEY] = int(state.get(FAILURES_KEY, 0)) + 1
    packages.save_load_package_state(load_id, state)
    return int(state[FAILURES_KEY])


def move_package_out(pipeline: Any, load_id: str, target: Path) -> Path:
    """Take a pending package out of dlt's storage (dlt no longer loads it) into `target`."""
    source = Path(pipeline.get_load_package_info(load_id).package_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
    return target
