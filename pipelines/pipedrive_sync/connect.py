"""The warehouse a run writes to: its dlt destination, where it is, and one run at a time.

Where a warehouse is (its *location*: the DuckDB file's path, or the destination's host and
database, plus the dataset) names the local working directory of its dlt pipeline, so two
warehouses never share local state, and a moved or copied DuckDB file starts a fresh local
directory that restores everything from the file itself.

One run per warehouse, from any machine where the destination can enforce it:

* DuckDB: a lock file next to the DuckDB file, per dataset (`<file>.<dataset>.sync.lock`,
  with a note `….sync.json` saying who holds it), taken without waiting: a second run of the
  same dataset, or any run while `pipedrive-sync listen` keeps the warehouse, exits 75 at once.
  The file itself stays attached (DuckDB's own file lock) for the whole run; a run of another
  dataset in the same file waits for it up to `lock_wait` seconds; a note next to the file
  (`<file>.sync-holder.json`) says which run holds it, for the message when the wait ends.
* PostgreSQL: an advisory lock on the dataset, held on a connection of its own for the run;
  the connection's `application_name` names the holder (host, pid).
* Elsewhere: a lock file under the local dlt data dir (one machine only).

`listen` holds these locks for its whole life (`hold_duckdb`, and `open_target` /
`hold_postgres` around it) and attaches the DuckDB file only while it writes, so readers get
in between; the runs it makes itself (catch-up, polls, event batches) pass through the locks
this process already holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
from filelock import FileLock, Timeout

from sources.pipedrive.dlt_adapter import destination_location
from sources.pipedrive.identity import Company

from .destinations import check_destination
from .exit_codes import RunInProgress
from .settings import RunSettings
from .warehouse import DEFAULT_DATASET, LEGACY_DATASET, default_dataset

DUCKDB_ALIAS = "pipedrive_sync_db"
DUCKDB_MEMORY_LIMIT = "192MB"  # bounds DuckDB at any account size (it spills beyond)
DUCKDB_CHECKPOINT_THRESHOLD = "16MiB"  # DuckDB's default
DUCKDB_THREADS = 1
# rows per DuckDB row group (its default is 122,880): a load writes each full row group to the
# file while it inserts ("optimistic writes") instead of copying and compressing it at commit
DUCKDB_ROW_GROUP_SIZE = 32_768
# dlt runs a merge job's DELETE and INSERT in one transaction only where the destination says it
# supports transactions, which DuckDB's does not say (PostgreSQL's connection is transactional
# anyway): a refused INSERT left the rows it would have replaced deleted from the warehouse
ATOMIC_JOBS: dict[str, Any] = {"supports_transactions": True}
HOLDER_SUFFIX = ".sync-holder.json"
LOCK_SUFFIX = ".sync.lock"  # next to a DuckDB file, per dataset: one writer (run or listen)
NOTE_SUFFIX = ".sync.json"  # who holds that lock
# the datasets a run without --dataset may write (which one: the file's, once it is held)
DEFAULT_DATASETS = (DEFAULT_DATASET, LEGACY_DATASET)
LOCK_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Holder:
    """Which run holds a warehouse."""

    dataset: str
    company: str
    host: str
    pid: int
    since: str
    command: str = "run"  # or "listen"

    @classmethod
    def this_run(cls, dataset: str, company: Company | None, command: str = "run") -> Holder:
        return cls(
            dataset=dataset,
            company=str(company) if company is not None else "",
            host=socket.gethostname(),
            pid=os.getpid(),
            since=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            command=command,
        )

    def __str__(self) -> str:
        company = f", company {self.company}" if self.company else ""
        return (
            f"dataset {self.dataset!r}{company}, pid {self.pid} on {self.host}, since {self.since}"
        )


@dataclass
class Target:
    """An opened warehouse: what `dlt.pipeline` takes as its destination, and where it is."""

    destination: Any
    location: str
    dataset: str
    connection: duckdb.DuckDBPyConnection | None = None

    @property
    def local_dir(self) -> str:
        """A directory name for this location's local dlt working state."""
        digest = hashlib.sha1(self.location.encode()).hexdigest()[:12]
        readable = re.sub(r"[^a-z0-9]+", "-", self.dataset.lower()).strip("-")[:30]
        return f"{readable or 'dataset'}-{digest}"


def duckdb_destination(path: Path) -> tuple[Any, duckdb.DuckDBPyConnection]:
    """A dlt DuckDB destination writing to `path`, and the connection to close afterwards.

    The file is attached under a fixed alias instead of being opened directly: DuckDB names a
    file's catalog after the file, so `pipedrive.duckdb` with the dataset `pipedrive` makes every
    `pipedrive.<table>` reference ambiguous ("catalog or schema?") and loads would fail.
    """
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    path.parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(":memory:")
    quoted = str(path).replace("'", "''")
    try:
        connection.execute(
            f"ATTACH '{quoted}' AS {DUCKDB_ALIAS} (ROW_GROUP_SIZE {DUCKDB_ROW_GROUP_SIZE})"
        )
    except duckdb.Error:
        connection.close()
        raise
    connection.execute(f"USE {DUCKDB_ALIAS}")
    # bounded memory whatever the size of a load: DuckDB spills to `<file>.tmp` beyond this
    connection.execute(f"SET temp_directory = '{quoted}.tmp'")
    connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    connection.execute("SET preserve_insertion_order = false")
    # one thread: each thread leaves a half-filled row group per load (see README, Performance)
    connection.execute(f"SET threads = {DUCKDB_THREADS}")
    credentials = DuckDbCredentials(
        connection,
        local_config={"schema": f"{DUCKDB_ALIAS}.main"},
        # dlt raises the threshold to 1 GB, so a big load would be written twice: into the WAL
        # at commit, then again at close. Runs after dlt's own setting.
        statements=[f"SET GLOBAL checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'"],
    )
    return dlt.destinations.duckdb(credentials, **ATOMIC_JOBS), connection


def release_duckdb_memory(connection: duckdb.DuckDBPyConnection) -> None:
    """Hand DuckDB's cached pages back after a load (lowering the limit evicts them; they are
    on disk), so that the next chunk's extract does not stack on top of them."""
    try:
        connection.execute("SET memory_limit = '16MB'")
    except duckdb.Error:
        pass  # something still pinned: keep the cache
    finally:
        connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")


# locks this process holds for longer than one run (`listen`): its own runs pass through them
_HELD_HERE: set[str] = set()
_HELD_GUARD = threading.Lock()


def _held_here(key: str) -> bool:
    with _HELD_GUARD:
        return key in _HELD_HERE


@contextmanager
def _remember_held(key: str) -> Iterator[None]:
    with _HELD_GUARD:
        _HELD_HERE.add(key)
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD_HERE.discard(key)


@contextmanager
def _file_lock(path: Path, busy: Any) -> Iterator[bool]:
    """Hold the lock file `path` without waiting (`busy()`: the RunInProgress to raise when
    another process holds it), unless this process holds it already; yields whether it was
    taken here."""
    key = f"file:{path}"
    if _held_here(key):
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise busy() from None
    try:
        with _remember_held(key):
            yield True
    finally:
        lock.release()


def duckdb_lock_path(path: Path, dataset: str) -> Path:
    """The lock file of one dataset of a DuckDB file (see the module docstring)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-.") or "dataset"
    return path.with_name(f"{path.name}.{slug}{LOCK_SUFFIX}")


@contextmanager
def hold_duckdb(settings: RunSettings, holder: Holder) -> Iterator[None]:
    """The DuckDB dataset's lock file, held (and described in its note) until the block ends."""
    path = settings.duckdb_path.expanduser().resolve()
    lock_path = duckdb_lock_path(path, settings.dataset)
    note = lock_path.with_name(lock_path.name.removesuffix(LOCK_SUFFIX) + NOTE_SUFFIX)

    def busy() -> RunInProgress:
        return RunInProgress(_holder_message(path, _read_holder(note, 0)))

    with _file_lock(lock_path, busy) as taken:
        if taken:
            _write_holder(note, holder)
        try:
            yield
        finally:
            if taken:
                with suppress(OSError):
                    note.unlink()


def _holder_message(path: Path, other: Holder | None) -> str:
    if other is not None and other.command == "listen":
        return (
            f"`pipedrive-sync listen` keeps this warehouse current ({path.name}: {other}); this"
            " run stops: the listener polls on its own (stop it to run by hand)"
        )
    described = f": {other}" if other is not None else ""
    return (
        f"another pipedrive-sync run is syncing this warehouse ({path.name}{described});"
        " this run stops, the next one catches up"
    )


def location_of(settings: RunSettings) -> str:
    """Where the warehouse is (see `Target.location`), without opening it."""
    if settings.destination == "duckdb":
        path = settings.duckdb_path.expanduser().resolve()
        return f"duckdb|{path}#{settings.dataset}"
    destination = check_destination(settings.destination)
    return destination_location(destination, settings.dataset)


@contextmanager
def open_target(
    settings: RunSettings,
    company: Company | None,
    destination: Any = None,
    holder: Holder | None = None,
) -> Iterator[Target]:
    """The run's warehouse, held for the run (see the module docstring). `destination` is the
    checked dlt destination (`destinations.check_destination`) for any but DuckDB; `holder`
    says who holds it (default: this run)."""
    holder = holder or Holder.this_run(settings.dataset, company)
    if settings.destination == "duckdb":
        path = settings.duckdb_path.expanduser().resolve()
        with hold_duckdb(settings, holder):
            datasets = (settings.dataset,) if settings.dataset_explicit else DEFAULT_DATASETS
            destination, connection = _attach_waiting(path, holder, datasets, settings.lock_wait)
            note = path.with_name(path.name + HOLDER_SUFFIX)
            try:
                if not settings.dataset_explicit:  # the file is held now: its own dataset is final
                    settings.dataset = default_dataset(connection, DUCKDB_ALIAS)
                    holder = replace(holder, dataset=settings.dataset)
                _write_holder(note, holder)
                yield Target(
                    destination, f"duckdb|{path}#{settings.dataset}", settings.dataset, connection
                )
            finally:
                with suppress(OSError):
                    note.unlink()
                connection.close()
        return
    if destination is None:
        destination = check_destination(settings.destination)
    target = Target(
        destination, destination_location(destination, settings.dataset), settings.dataset
    )
    if _is_postgres(destination):
        yield target  # the advisory lock needs the pipeline's connection: `hold_postgres`
        return

    def busy() -> RunInProgress:
        return RunInProgress(
            f"another pipedrive-sync process on this machine is syncing this warehouse"
            f" ({settings.destination}, dataset {settings.dataset!r}); try again when it has"
            " finished"
        )

    with _file_lock(settings.pipelines_dir / f"pipedrive-sync-{target.local_dir}.lock", busy):
        yield target


def _is_postgres(destination: Any) -> bool:
    return str(getattr(destination, "destination_type", "")).endswith(".postgres")


def _attach_waiting(
    path: Path, holder: Holder, datasets: tuple[str, ...], wait: float
) -> tuple[Any, duckdb.DuckDBPyConnection]:
    """Attach the file; while another process holds it, wait up to `wait` seconds unless that
    is a run of this run's dataset (`datasets`: the candidates while the file's own default is
    not known) — then at once: the next run catches up."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb_destination(path)
        except duckdb.IOException as exc:
            pid = _conflicting_pid(exc)
            if pid is None:
                raise
            other = _read_holder(path.with_name(path.name + HOLDER_SUFFIX), pid)
            if other is not None and other.dataset in datasets:
                raise RunInProgress(
                    f"another pipedrive-sync run is syncing this warehouse ({path.name}: {other});"
                    " this run stops, the next one catches up"
                ) from None
            if time.monotonic() >= deadline:
                raise RunInProgress(_busy_message(path, other, pid, wait)) from None
            time.sleep(LOCK_POLL_SECONDS)


def _busy_message(path: Path, other: Holder | None, pid: int, wait: float) -> str:
    waited = f"waited {wait:g} s" if wait else "did not wait (lock_wait_seconds = 0)"
    if other is not None:
        return (
            f"another pipedrive-sync run holds {path.name} ({other}); {waited}; nothing was"
            " synced, the next run catches up"
        )
    return (
        f"{path.name} is open in another process (PID {pid}: a `pipedrive-sync shell` or"
        f" `query`, a DuckDB client…); {waited}; nothing was synced, the next run catches up"
    )


_PID = re.compile(r"Conflicting lock is held in .*?\(PID (\d+)\)")


def _conflicting_pid(exc: duckdb.IOException) -> int | None:
    """The PID of the process holding the file, when `exc` is DuckDB's lock conflict."""
    text = str(exc)
    if "Could not set lock on file" not in text:
        return None
    match = _PID.search(text)
    return int(match.group(1)) if match else 0


def _write_holder(note: Path, holder: Holder) -> None:
    temporary = note.with_name(note.name + ".tmp")
    with suppress(OSError):  # a note is a courtesy: an unwritable directory fails the load
        temporary.write_text(json.dumps(asdict(holder)), encoding="utf-8")
        temporary.replace(note)


def _read_holder(note: Path, pid: int) -> Holder | None:
    """The holder note, if it describes the process `pid` that holds the file."""
    try:
        data = json.loads(note.read_text(encoding="utf-8"))
        holder = Holder(**data)
    except (OSError, ValueError, TypeError):
        return None
    return holder if holder.pid == pid or pid == 0 else None


@contextmanager
def hold_postgres(pipeline: Any, holder: Holder) -> Iterator[None]:
    """Hold the dataset's advisory lock on a connection of its own for the run (a pass-through
    when this process holds it already: the runs of `listen`)."""
    key = _advisory_key(pipeline.dataset_name)
    if _held_here(f"postgres:{key}"):
        yield
        return
    client = pipeline.sql_client()
    client.open_connection()
    try:
        connection = client.native_connection
        with connection.cursor() as cursor:
            cursor.execute("SET application_name = %s", (_application_name(holder),))
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            row = cursor.fetchone()
            if not row or not row[0]:
                raise RunInProgress(
                    f"another pipedrive-sync run holds this warehouse (PostgreSQL dataset"
                    f" {pipeline.dataset_name!r}): {_postgres_holder(cursor, key)}; try again"
                    " when it has finished"
                )
        with _remember_held(f"postgres:{key}"):
            yield
    finally:
        client.close_connection()  # closing the session releases the lock


def _advisory_key(dataset: str) -> int:
    """A signed 64-bit key for `pg_try_advisory_lock`, the same from every machine."""
    digest = hashlib.sha1(f"pipedrive-sync|{dataset}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _application_name(holder: Holder) -> str:
    command = "pipedrive-sync listen" if holder.command == "listen" else "pipedrive-sync"
    return f"{command} pid {holder.pid} on {holder.host}"[:63]


def _postgres_holder(cursor: Any, key: int) -> str:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    cursor.execute(
        "SELECT a.application_name, host(a.client_addr), a.pid, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    )
    row = cursor.fetchone()
    if row is None:
        return "a run that has just finished"
    name, address, backend, since = row
    started = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "?"
    return f"{name or 'a client'} (from {address or 'local socket'}, server pid {backend}, since {started})"
