"""Every row of the README's exit-status table, through the real command line.

Each case puts the command into one cause (against the fake Pipedrive, a real PostgreSQL, a
DuckDB file) and checks the exit status and the one stderr line: no traceback, the cause named.
The causes are the README's own rows: a row without a case here fails the suite.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from conftest import TOKEN, HeldRequest, run_cli, start_process
from pg_server import PASSWORD, Server
from test_cli import _as_from_a_terminal

from sources.pipedrive_fake import FakePipedrive, FaultRule

README = Path(__file__).resolve().parent.parent / "README.md"
ENTITIES = "deals,persons,pipelines,stages"
FAST = {  # a failing Pipedrive gives up in well under a second
    "SOURCES__PIPEDRIVE__MAX_ATTEMPTS": "2",
    "SOURCES__PIPEDRIVE__BACKOFF_BASE": "0.01",
    "SOURCES__PIPEDRIVE__BACKOFF_MAX": "0.02",
    "SOURCES__PIPEDRIVE__CONNECT_TIMEOUT": "2",
    "SOURCES__PIPEDRIVE__READ_TIMEOUT": "10",
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    """What a case arranges: the fake, the command's environment and directory, PostgreSQL."""

    fake: FakePipedrive
    work: Path
    request: pytest.FixtureRequest
    env: dict[str, str] = field(default_factory=dict)
    during: Callable[[subprocess.Popen[str]], None] | None = None  # while the command runs

    def postgres(self) -> Server:
        return self.request.getfixturevalue("postgres")  # type: ignore[no-any-return]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command to completion, as cron would start it (used by arrangements)."""
        return run_cli(list(args), self.env, self.work)


Arrange = Callable[[World], Iterator[None]]


@dataclass(frozen=True)
class Case:
    cause: str  # the README row, verbatim
    code: int
    args: tuple[str, ...] = ("run", "--quiet")
    expect: tuple[str, ...] = ()  # in the stderr line
    arrange: Arrange | None = None
    variant: str = ""
    server: bool = False  # needs the throwaway PostgreSQL server

    @property
    def id(self) -> str:
        return f"{self.code}: {self.cause}" + (f" ({self.variant})" if self.variant else "")


# -- arrangements ------------------------------------------------------------------------------
def _env(**values: str | None) -> Arrange:
    def arrange(world: World) -> Iterator[None]:
        for name, value in values.items():
            if value is None:
                world.env.pop(name, None)
            else:
                world.env[name] = value.format(fake=world.fake.base_url, work=world.work)
        yield

    return arrange


def _both(*arrangements: Arrange) -> Arrange:
    def arrange(world: World) -> Iterator[None]:
        with _entered(arrangements[0], world), _entered(arrangements[1], world):
            yield

    return arrange


@contextmanager
def _entered(arrange: Arrange, world: World) -> Iterator[None]:
    yield from arrange(world)


def _sync_first(world: World) -> None:
    first = world.run("run", "--quiet")
    assert first.returncode == 0, first.stderr


def _synced_first(world: World) -> Iterator[None]:
    _sync_first(world)
    yield


def _unknown_response(world: World) -> Iterator[None]:
    world.fake.add_fault(FaultRule(path=r"/api/v2/deals$", kind="body", body={"success": True}))
    yield


def _load_job_fails(world: World) -> Iterator[None]:
    """Someone added a NOT NULL column to the synced `deals`: the next load of a deal fails."""
    _sync_first(world)
    with duckdb.connect(str(world.work / "pipedrive.duckdb")) as connection:
        connection.execute("USE pipedrive.main")
        connection.execute("ALTER TABLE deals ADD COLUMN approved_by VARCHAR")
        connection.execute("UPDATE deals SET approved_by = 'someone'")
        connection.execute("ALTER TABLE deals ALTER COLUMN approved_by SET NOT NULL")
    deal = world.fake.records("deals", archived=False)[0]["id"]
    world.fake.update("deals", deal, title="changed after the first sync")
    yield


def _stale(world: World) -> Iterator[None]:
    _sync_first(world)
    with duckdb.connect(str(world.work / "pipedrive.duckdb")) as connection:
        connection.execute(
            "UPDATE pipedrive.main.sync_runs SET finished_at = finished_at - INTERVAL 3 HOUR"
        )
    yield


def _budget_spent(world: World) -> Iterator[None]:
    world.fake.daily_budget = 12  # users/me (2) and one page of deals (10)
    yield


def _pipedrive_down(world: World) -> Iterator[None]:
    world.fake.add_fault(FaultRule(path=r"/api/v2/persons$", kind="status", status=503, times=None))
    yield


def _another_run(world: World) -> Iterator[None]:
    with HeldRequest(world.fake, "/api/v2/persons") as hold:
        first = subprocess.Popen(
            [sys.executable, "-m", "pipelines.pipedrive_sync", "run", "--quiet"],
            env=world.env,
            cwd=world.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert hold.wait(), "the first run never asked for persons"
            yield
        finally:
            first.kill()
            first.wait()


HOOK_ENV = {"PIPEDRIVE_WEBHOOK_USER": "pipedrive", "PIPEDRIVE_WEBHOOK_PASSWORD": "hook-password"}


def _listening(world: World) -> Iterator[None]:
    """`pipedrive-sync listen` keeps the warehouse (caught up, waiting for events)."""
    import requests

    port = _closed_port()
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.pipedrive_sync",
            "listen",
            "--quiet",
            "--port",
            f"{port}",
        ],
        env={**world.env, **HOOK_ENV},
        cwd=world.work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):  # until /healthz says ready (at most a minute)
            assert listener.poll() is None, "the listener ended"
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            threading.Event().wait(0.05)
        yield
    finally:
        listener.terminate()
        listener.wait(60)


def _port_taken(world: World) -> Iterator[None]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        world.env.update(HOOK_ENV, LISTEN_PORT=str(sock.getsockname()[1]))
        yield


def _forty_webhooks(world: World) -> Iterator[None]:
    for n in range(40):
        world.fake.webhooks.register(f"https://elsewhere.example.com/{n}", "*", "deal")
    world.env.update(HOOK_ENV)
    yield


def _duckdb_open_elsewhere(world: World) -> Iterator[None]:
    with duckdb.connect(str(world.work / "pipedrive.duckdb")):
        yield


def _readable_by_nobody(world: World) -> Iterator[None]:
    for entity in ENTITIES.split(","):
        world.fake.restrict(rf"/api/v2/{entity}(/|$)", status=403)
    yield


def _postgres_with(url: str) -> Arrange:
    def arrange(world: World) -> Iterator[None]:
        server = world.postgres()
        world.env["DESTINATION__POSTGRES__CREDENTIALS"] = url.format(port=server.port)
        yield

    return arrange


def _another_company(world: World) -> Iterator[None]:
    _sync_first(world)
    other = FakePipedrive(token="other-company-token-0123456789", seed=8).start()
    world.env.update(PIPEDRIVE_API_TOKEN=other.token, PIPEDRIVE_BASE_URL=other.base_url)
    try:
        yield
    finally:
        other.stop()


def _a_file_where_a_directory_belongs(world: World) -> Iterator[None]:
    # a path under a file cannot be created, even by root (chmod does not stop root)
    (world.work / "afile").write_text("not a directory")
    yield


def _signalled(signum: signal.Signals) -> Arrange:
    """The run gets `signum` while it waits for a Pipedrive answer."""

    def arrange(world: World) -> Iterator[None]:
        with HeldRequest(world.fake, "/api/v2/persons") as hold:

            def send(proc: subprocess.Popen[str]) -> None:
                assert hold.wait(), "the run never asked for persons"
                proc.send_signal(signum)

            world.during = send
            yield

    return arrange


def _missing_extra() -> str:
    """A destination whose dlt extra is not installed here."""
    for destination, module in (
        ("snowflake", "snowflake.connector"),
        ("databricks", "databricks.sql"),
        ("clickhouse", "clickhouse_driver"),
    ):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return destination
    pytest.fail("every candidate destination's extra is installed", pytrace=False)


# -- the table -------------------------------------------------------------------------------
CLOSED = _closed_port()
CASES = [
    Case("success", 0),
    Case(
        "a bug, or a Pipedrive response we do not understand",
        1,
        expect=("deals", "'data'"),
        arrange=_unknown_response,
    ),
    Case(
        "a warehouse load job failed (the line names dlt's step and the table)",
        1,
        expect=("load", "deals", "approved_by"),
        arrange=_load_job_fails,
    ),
    Case(
        "`status`: an entity has no successful sync, or its last is older than `--max-age`",
        1,
        args=("status", "--max-age", "2h"),
        expect=("deals",),
        arrange=_stale,
    ),
    Case(
        "`query`: the SQL failed",
        1,
        args=("query", "SELECT * FROM no_such_table"),
        expect=("no_such_table",),
        arrange=_synced_first,
    ),
    Case(
        "the daily API budget is spent (also during `--backfill-history`)",
        75,
        expect=("budget",),
        arrange=_budget_spent,
    ),
    Case(
        "Pipedrive unreachable, or failing after retries",
        75,
        expect=("connection failed",),
        arrange=_env(PIPEDRIVE_BASE_URL=f"http://127.0.0.1:{CLOSED}"),
        variant="nothing listens",
    ),
    Case(
        "Pipedrive unreachable, or failing after retries",
        75,
        expect=("persons", "503"),
        arrange=_pipedrive_down,
        variant="503 every time",
    ),
    Case(
        "the warehouse unreachable (connection refused or timed out)",
        75,
        args=("run", "--quiet", "--destination", "postgres"),
        expect=("postgres", "refused"),
        arrange=_env(
            DESTINATION__POSTGRES__CREDENTIALS=f"postgresql://loader:pw@127.0.0.1:{CLOSED}/db"
        ),
    ),
    Case(
        "another run is syncing the same destination",
        75,
        expect=("another pipedrive-sync run",),
        arrange=_another_run,
    ),
    Case(
        "`pipedrive-sync listen` keeps the warehouse current (a `run` on it)",
        75,
        expect=("pipedrive-sync listen` keeps this warehouse current", "pid"),
        arrange=_listening,
    ),
    Case(
        "the DuckDB file is open in another process",
        75,
        expect=("another process",),
        arrange=_duckdb_open_elsewhere,
    ),
    Case(
        "Pipedrive rejected the token (401)",
        77,
        expect=("401",),
        arrange=_env(PIPEDRIVE_API_TOKEN="wrong-token"),
    ),
    Case(
        "the token may read none of the selected entities",
        77,
        expect=("403",),
        arrange=_readable_by_nobody,
    ),
    Case(
        "no Pipedrive credentials",
        78,
        expect=("PIPEDRIVE_API_TOKEN",),
        arrange=_env(PIPEDRIVE_API_TOKEN=None),
    ),
    Case(
        "`listen`: no webhook credentials",
        78,
        args=("listen", "--quiet", "--port", "0"),
        expect=("PIPEDRIVE_WEBHOOK_USER", "PIPEDRIVE_WEBHOOK_PASSWORD"),
    ),
    Case(
        "`listen`: the port is taken",
        78,
        args=("listen", "--quiet", "--port", "{LISTEN_PORT}"),
        expect=("cannot listen on 127.0.0.1:", "in use"),
        arrange=_port_taken,
    ),
    Case(
        "`listen --public-url`: the user has no webhook left of Pipedrive's 40",
        78,
        args=("listen", "--quiet", "--port", "0", "--public-url", "https://sync.example.com/"),
        expect=("40 webhooks per user",),
        arrange=_forty_webhooks,
    ),
    Case(
        "an unknown entity, or a bad date or number",
        78,
        args=("run", "--quiet", "--entities", "deals,unicorns"),
        expect=("unicorns",),
        variant="entity",
    ),
    Case(
        "an unknown entity, or a bad date or number",
        78,
        args=("run", "--quiet", "--start-date", "last tuesday"),
        expect=("last tuesday",),
        variant="date",
    ),
    Case(
        "an unknown entity, or a bad date or number",
        78,
        expect=("chunk_pages", "lots"),
        arrange=_env(SOURCES__PIPEDRIVE__CHUNK_PAGES="lots"),
        variant="number",
    ),
    Case(
        "`PIPEDRIVE_BASE_URL` without `https://` (or `http://`) and a host",
        78,
        expect=("PIPEDRIVE_BASE_URL", "'127.0.0.1:8765'", "http://127.0.0.1:8765"),
        arrange=_env(PIPEDRIVE_BASE_URL="127.0.0.1:8765"),
        variant="no scheme",
    ),
    Case(
        "`PIPEDRIVE_BASE_URL` without `https://` (or `http://`) and a host",
        78,
        expect=("PIPEDRIVE_BASE_URL", "ftp://"),
        arrange=_env(PIPEDRIVE_BASE_URL="ftp://api.pipedrive.com"),
        variant="another scheme",
    ),
    Case(
        "`PIPEDRIVE_BASE_URL` without `https://` (or `http://`) and a host",
        78,
        expect=("PIPEDRIVE_BASE_URL", "host"),
        arrange=_env(PIPEDRIVE_BASE_URL="https:///v1"),
        variant="no host",
    ),
    Case(
        "`PIPEDRIVE_BASE_URL` does not speak TLS (`https://` to a plain-HTTP server)",
        78,
        expect=("PIPEDRIVE_BASE_URL", "TLS", "http://"),
        arrange=lambda world: _env(
            PIPEDRIVE_BASE_URL=world.fake.base_url.replace("http://", "https://")
        )(world),
    ),
    Case(
        "`PIPEDRIVE_BASE_URL` answers 404 to everything (a wrong path)",
        78,
        expect=("PIPEDRIVE_BASE_URL", "/typo", "404", "check the URL"),
        arrange=_env(PIPEDRIVE_BASE_URL="{fake}/typo"),
        variant="first run",
    ),
    Case(
        "`PIPEDRIVE_BASE_URL` answers 404 to everything (a wrong path)",
        78,
        expect=("PIPEDRIVE_BASE_URL", "/typo", "404", "check the URL"),
        arrange=_both(_synced_first, _env(PIPEDRIVE_BASE_URL="{fake}/typo")),
        variant="after a sync",
    ),
    Case(
        "an unknown `--destination`",
        78,
        args=("run", "--quiet", "--destination", "nosuchdest"),
        expect=("--destination", "nosuchdest"),
    ),
    Case(
        "the destination's extra is not installed",
        78,
        args=("run", "--quiet", "--destination", _missing_extra()),
        expect=(_missing_extra(), "pip install"),
    ),
    Case(
        "a destination setting is missing (credentials, bucket)",
        78,
        args=("run", "--quiet", "--destination", "postgres"),
        expect=("DESTINATION__POSTGRES__CREDENTIALS",),
    ),
    Case(
        "the warehouse rejected the credentials (wrong password, unknown user or database)",
        78,
        args=("run", "--quiet", "--destination", "postgres"),
        expect=("DESTINATION__POSTGRES__CREDENTIALS", "password authentication failed"),
        arrange=_postgres_with("postgresql://postgres:wrong-password@127.0.0.1:{port}/postgres"),
        variant="wrong password",
        server=True,
    ),
    Case(
        "the warehouse rejected the credentials (wrong password, unknown user or database)",
        78,
        args=("run", "--quiet", "--destination", "postgres"),
        expect=("DESTINATION__POSTGRES__CREDENTIALS", "no_such_db", "does not exist"),
        arrange=_postgres_with(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{{port}}/no_such_db"),
        variant="unknown database",
        server=True,
    ),
    Case(
        "the warehouse holds another Pipedrive company's data",
        78,
        expect=("company", "--dataset"),
        arrange=_another_company,
    ),
    Case(
        "a path that cannot be written (`--duckdb-path`, `DLT_DATA_DIR`)",
        78,
        args=("run", "--quiet", "--duckdb-path", "afile/pipedrive.duckdb"),
        expect=("--duckdb-path", "afile"),
        arrange=_a_file_where_a_directory_belongs,
        variant="--duckdb-path",
    ),
    Case(
        "a path that cannot be written (`--duckdb-path`, `DLT_DATA_DIR`)",
        78,
        expect=("DLT_DATA_DIR", "afile"),
        arrange=_both(_a_file_where_a_directory_belongs, _env(DLT_DATA_DIR="{work}/afile/dlt")),
        variant="DLT_DATA_DIR",
    ),
    Case(
        "a destination that cannot update rows in place (see [Destinations](#destinations))",
        78,
        args=("run", "--quiet", "--destination", "filesystem"),
        expect=("filesystem", "in place"),
        arrange=_env(DESTINATION__FILESYSTEM__BUCKET_URL="{work}/files"),
    ),
    Case(
        "`status`, `query`, `shell`: no such warehouse file or dataset",
        78,
        args=("status", "--duckdb-path", "missing.duckdb"),
        expect=("missing.duckdb",),
    ),
    Case(
        "`status`: an unknown entity in `--entities`",
        78,
        args=("status", "--entities", "unicorns,deals"),
        expect=("unicorns",),
        arrange=_synced_first,
    ),
    Case(
        "interrupted (Ctrl-C), also while the command is still starting",
        130,
        expect=("interrupted",),
        arrange=_signalled(signal.SIGINT),
    ),
    Case(
        "stopped by SIGTERM (`systemctl stop`, `docker stop`, Kubernetes)",
        143,
        expect=("SIGTERM",),
        arrange=_signalled(signal.SIGTERM),
    ),
]


def _marks(case: Case) -> list[pytest.MarkDecorator]:
    return [pytest.mark.postgres] if case.server else []


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    fake = FakePipedrive(
        token=TOKEN, seed=3, scale={"deals": 40, "persons": 20, "organizations": 5}
    ).start()
    env = {
        k: v
        for k, v in os.environ.items()
        # as cron starts it: none of the test session's dlt settings (its log level either)
        if not k.startswith(("PIPEDRIVE_", "SOURCES__", "DESTINATION__", "RUNTIME__"))
    }
    env.update(
        FAST,
        DLT_DATA_DIR=str(tmp_path / "dlt-data"),
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=fake.base_url,
        SOURCES__PIPEDRIVE__ENTITIES=ENTITIES,
    )
    try:
        yield World(fake, tmp_path, request, env)
    finally:
        fake.stop()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_each_cause_exits_with_its_status_and_one_line(case: Case, world: World) -> None:
    with _entered(case.arrange or _env(), world):
        args = [a.format(**world.env) if "{" in a else a for a in case.args]
        proc = start_process(
            [sys.executable, "-c", _as_from_a_terminal(args)], world.env, world.work
        )
        try:
            if world.during is not None:
                world.during(proc)
            stdout, stderr = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == case.code, stderr
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    if case.code == 0:
        assert lines == []
        return
    if case.args[0] == "query":  # DuckDB's whole message: Did you mean…, the caret line
        assert "Did you mean" in stderr or len(lines) == 1, stderr
    else:
        assert len(lines) == 1, stderr
    for part in case.expect:
        assert part in lines[0], lines[0]
    assert TOKEN not in stdout + stderr
    assert not lines[0].rstrip().endswith((":", "exception")), "cut off"


def _readme_causes() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Exit statuses", 1)[1]
    table = section[section.index("| exit |") :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((int(cells[0]), cells[1]))
    return rows


def test_every_row_of_the_readme_exit_table_has_a_case() -> None:
    documented = _readme_causes()
    assert len(documented) > 20
    tested = {(c.code, c.cause) for c in CASES}
    assert set(documented) == tested, (
        f"README rows without a case: {sorted(set(documented) - tested)};"
        f" cases without a README row: {sorted(tested - set(documented))}"
    )


# -- the table on exceptions built like dlt's (fast, in-process) -----------------------------
def _raised(make: Callable[[], BaseException], cause: BaseException) -> BaseException:
    """`make()` as if raised `from cause`."""
    outer = make()
    outer.__cause__ = cause
    return outer


def test_a_cause_is_found_under_dlt_wrappers_and_named_without_secrets() -> None:
    import psycopg2
    from dlt.destinations.exceptions import DatabaseTerminalException
    from dlt.load.exceptions import LoadClientJobFailed

    from pipelines.pipedrive_sync.exit_codes import CONFIG, FAILURE, Scope, classify

    rejected = psycopg2.OperationalError(
        'connection to server at "db" failed: FATAL:  password authentication failed for user'
        ' "loader" (postgresql://loader:s3cr3t-pw@db/analytics)\n'
    )
    wrapped = _raised(lambda: RuntimeError("step failed"), DatabaseTerminalException(rejected))
    failure = classify(wrapped, Scope(destination="warehouse"))
    assert failure.code == CONFIG
    assert "DESTINATION__WAREHOUSE__CREDENTIALS" in failure.message
    assert "s3cr3t-pw" not in failure.message and "\n" not in failure.message

    constraint = RuntimeError("Constraint Error: NOT NULL constraint failed: deals.x")
    job = LoadClientJobFailed("1700000000.1", "deals.abc123.0.parquet", "Traceback …", constraint)
    failure = classify(_raised(lambda: RuntimeError("load failed"), job))
    assert failure.code == FAILURE
    assert "table deals" in failure.message and "NOT NULL constraint failed" in failure.message
    assert "Traceback" not in failure.message
