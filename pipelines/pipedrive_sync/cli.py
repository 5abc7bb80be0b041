"""`pipedrive-sync`: the command line. The only module that prints."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from . import exit_codes
from .output import Format
from .progress import LogFormat

if TYPE_CHECKING:
    from sources.pipedrive import RunContext

    from .result import RunResult
    from .settings import RunSettings
    from .warehouse import Reader

app = typer.Typer(
    name="pipedrive-sync",
    help="Sync Pipedrive CRM into DuckDB (or any dlt destination): complete, incremental, typed."
    " Then explore it: status, query, shell, fields.",
    epilog="Quick start: `pipedrive-sync demo` (no account needed), then"
    " `pipedrive-sync shell --duckdb-path demo.duckdb`. Docs: README.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEMO_TOKEN = "demo-token-not-a-secret"
DEMO_SQL = (
    "SELECT stage_name, deals_entered, round(median_days, 1) AS median_days,"
    " round(p80_days, 1) AS p80_days, round(100 * next_stage_rate) AS next_stage_pct,"
    " round(100 * won_rate) AS won_pct FROM stage_velocity"
    " WHERE pipeline_name = 'Sales' ORDER BY stage_order_nr"
)


def _quiet_libraries() -> None:
    # dlt logs progress and hints at WARNING, and at ERROR what the one-line failure already
    # says (a failed job's traceback, a thread pool that did not join after Ctrl-C)
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "CRITICAL")
    logging.getLogger("dlt").setLevel(logging.CRITICAL)
    # dlt's SQLAlchemy merge triggers a SQLAlchemy warning on every run; not ours to act on
    warnings.filterwarnings("ignore", module=r"dlt(\.|$)")


class _OneLineHandler(logging.Handler):
    """Our own warnings (e.g. a view that could not be created) as one stderr line each."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"pipedrive-sync: warning: {record.getMessage()}", err=True)


def _setup_logging(quiet: bool) -> None:
    _quiet_libraries()
    logger = logging.getLogger("pipelines.pipedrive_sync")
    logger.propagate = False
    logger.handlers = [] if quiet else [_OneLineHandler(logging.WARNING)]
    if quiet:
        logger.addHandler(logging.NullHandler())


_reported: list[exit_codes.Failure] = []  # what `_fail` printed (read by `main`)


def _fail(failure: exit_codes.Failure) -> NoReturn:
    typer.echo(f"pipedrive-sync: {failure.message}", err=True)
    _reported.append(failure)
    raise typer.Exit(failure.code)


@contextmanager
def _expected_failures(whole_sql_errors: bool = False) -> Iterator[None]:
    """Expected failures of the reading commands → one stderr line and their exit code
    (`whole_sql_errors`: DuckDB's whole message for the user's own SQL, with its "Did you
    mean …", candidate columns and the caret under the faulty part)."""
    import duckdb

    from .warehouse import WarehouseBusy, first_line

    try:
        yield
    except typer.Exit:
        raise
    except exit_codes.ConfigError as exc:
        _fail(exit_codes.Failure(exit_codes.CONFIG, str(exc), expected=True))
    except WarehouseBusy as exc:
        _fail(exit_codes.Failure(exit_codes.TEMPORARY, str(exc), expected=True))
    except duckdb.Error as exc:
        message = (str(exc).strip() if whole_sql_errors else "") or first_line(exc)
        _fail(exit_codes.Failure(exit_codes.FAILURE, message, expected=True))
    except Exception as exc:
        from dlt.destinations.exceptions import DatabaseException

        if not isinstance(exc, DatabaseException):
            raise
        # the SQL failed on another destination (its message may quote the SQL, not secrets)
        _fail(exit_codes.Failure(exit_codes.FAILURE, first_line(exc), expected=True))


# -- shared options --------------------------------------------------------------------------
EntitiesOpt = Annotated[
    str | None,
    typer.Option(
        "--entities",
        "-e",
        help="Comma-separated entities to sync (default: the core set). See `pipedrive-sync entities`.",
    ),
]
DuckdbOpt = Annotated[
    str | None,
    typer.Option(
        "--duckdb-path",
        help="DuckDB warehouse file \\[default: sources.pipedrive.duckdb_path, else ./pipedrive.duckdb].",
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Dataset (schema) name \\[default: DuckDB `main`, or `pipedrive` in a file an"
        " earlier version made; `pipedrive` on other destinations].",
    ),
]
ReadDestinationOpt = Annotated[
    str | None,
    typer.Option(
        "--destination",
        help="Read another dlt SQL destination (postgres, motherduck, snowflake…) with its"
        " credentials from dlt config \\[default: duckdb].",
    ),
]
DestinationOpt = Annotated[
    str | None,
    typer.Option(
        "--destination",
        help="Any dlt destination (duckdb, postgres, motherduck, snowflake, bigquery…);"
        " credentials come from dlt config \\[default: duckdb].",
    ),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="text: a live table on a terminal, plain timestamped lines otherwise (cron);"
        " json: one JSON object per line (run_started, entity_progress, entity_finished,"
        " run_finished; listen adds its own, e.g. batch_applied: see the README).",
        case_sensitive=False,
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors (on stderr).")
]
FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        "-f",
        help="table for people, csv or json (JSON lines) for programs.",
        case_sensitive=False,
    ),
]


def _read_settings(
    duckdb_path: str | None, dataset: str | None, destination: str | None = None
) -> RunSettings:
    """Where the reading commands look: the same resolution as `run`, no token needed."""
    from .settings import resolve

    return resolve(
        duckdb_path=duckdb_path, dataset=dataset, destination=destination, require_token=False
    )


@contextmanager
def _reader(
    duckdb_path: str | None, dataset: str | None, destination: str | None
) -> Iterator[tuple[RunSettings, Reader]]:
    """The settings and a reader of the warehouse the reading commands look at."""
    from .warehouse import open_reader

    settings = _read_settings(duckdb_path, dataset, destination)
    with open_reader(settings.destination, settings.duckdb_path, settings.dataset) as reader:
        yield settings, reader


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=160)  # log files: do not wrap at 80
    return console


# -- run / demo ------------------------------------------------------------------------------
def _sync(settings: RunSettings, log_format: LogFormat, quiet: bool) -> RunResult:
    """Run a sync with progress reporting; exits with the run's code on failure."""
    from sources.pipedrive import select_entities

    from .process_memory import tune_for_sync
    from .progress import RunInfo, Watcher, make_reporter
    from .runner import make_context, run_sync
    from .stopping import stop_on_signals

    tune_for_sync()

    entities = tuple(e.name for e in select_entities(settings.entities))
    reporter = make_reporter(log_format, quiet, _console())
    scope = exit_codes.Scope.of(settings)
    try:
        ctx = make_context(settings)
    except Exception as exc:  # noqa: BLE001 - e.g. an unreadable OAuth token store
        _fail(exit_codes.classify(exc, scope))
    ctx.notify = reporter.notice
    watcher = Watcher(ctx, entities, reporter)
    reporter.run_started(RunInfo.from_settings(settings, entities))
    try:
        with watcher, stop_on_signals(ctx):
            result = run_sync(settings, ctx)
    except Exception as exc:
        reporter.close()
        failure = _interrupted(ctx) or exit_codes.classify(exc, scope)
        reporter.run_failed(failure, watcher.snapshot())
        if not failure.expected and os.environ.get("PIPEDRIVE_SYNC_DEBUG"):
            raise
        _fail(failure)
    finally:
        reporter.close()
    reporter.run_finished(result, watcher.snapshot())
    for warning in result.warnings:  # even with --quiet: something needed repairing
        typer.echo(f"pipedrive-sync: warning: {warning}", err=True)
    if result.code != exit_codes.OK:
        _fail(exit_codes.Failure(result.code, result.message, expected=True))
    return result


def _interrupted(ctx: RunContext) -> exit_codes.Failure | None:
    """A run asked to stop by a signal exits 130/143, whatever the stop made fail."""
    stop = ctx.stop_requested
    if stop is None:
        return None
    message = f"{stop}: what earlier loads committed stays, the next run goes on from there"
    return exit_codes.Failure(stop.exit_code, message, expected=True)


RUN_EPILOG = """Examples:

  PIPEDRIVE_API_TOKEN=... pipedrive-sync run

  pipedrive-sync run --entities deals,persons --start-date 2024-01-01T00:00:00Z

  pipedrive-sync run --destination postgres --log-format json

  pipedrive-sync run --backfill-history      # older deal history too, within a token allowance

  */5 * * * * cd /srv/pipedrive && .venv/bin/pipedrive-sync run --quiet

Destination credentials follow dlt: DESTINATION__POSTGRES__CREDENTIALS=postgresql://...

Exit status: 0 ok, 1 bug, 75 temporary (retry later), 77 token rejected, 78 configuration,
130/143 stopped by Ctrl-C/SIGTERM (after the load under way; a second one aborts at once)."""


@app.command(epilog=RUN_EPILOG)
def run(
    entities: EntitiesOpt = None,
    duckdb_path: DuckdbOpt = None,
    dataset: DatasetOpt = None,
    destination: DestinationOpt = None,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh", help="Drop the synced tables and state, then sync everything."
        ),
    ] = False,
    start_date: Annotated[
        str | None,
        typer.Option("--start-date", help="On a first sync, only records updated since this time."),
    ] = None,
    refresh_fields: Annotated[
        bool,
        typer.Option("--refresh-fields", help="Re-read custom-field definitions now."),
    ] = False,
    hard_deletes: Annotated[
        bool | None,
        typer.Option(
            "--hard-deletes/--soft-deletes",
            help="Delete rows Pipedrive deleted, instead of flagging is_deleted = true.",
        ),
    ] = None,
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile",
            help="List every id now to flag records deleted in Pipedrive (default: once a day).",
        ),
    ] = False,
    refresh_all: Annotated[
        bool,
        typer.Option(
            "--refresh-all",
            help="Re-read every slow-moving list now (users, currencies, goals…),"
            " whatever its cadence.",
        ),
    ] = False,
    backfill_history: Annotated[
        bool,
        typer.Option(
            "--backfill-history",
            help="After the sync, read older deal history from Pipedrive's deal changelogs"
            " into deal_history (one changelog request per deal; the cost in API tokens is shown"
            " first). Resumes"
            " where the last one stopped: repeat it on later runs until it says complete.",
        ),
    ] = False,
    backfill_max_tokens: Annotated[
        int | None,
        typer.Option(
            "--backfill-max-tokens",
            help="API tokens this run may spend on the backfill"
            " \\[default: sources.pipedrive.backfill_max_tokens, else 10000].",
        ),
    ] = None,
    pipeline_name: Annotated[
        str | None,
        typer.Option(
            "--pipeline-name",
            hidden=True,
            help="No longer used: the warehouse records which sync state belongs to it.",
        ),
    ] = None,
    log_format: LogFormatOpt = LogFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Sync Pipedrive into the warehouse; only what changed since the last run."""
    _setup_logging(quiet)
    if pipeline_name is not None and not quiet:
        typer.echo(
            "pipedrive-sync: warning: --pipeline-name is no longer used: the warehouse records"
            " which sync state belongs to it (its sync_identity table)",
            err=True,
        )
    from .settings import resolve

    try:
        settings = resolve(
            entities=entities,
            destination=destination,
            duckdb_path=duckdb_path,
            dataset=dataset,
            full_refresh=full_refresh,
            start_date=start_date,
            refresh_fields=refresh_fields,
            hard_deletes=hard_deletes,
            reconcile=reconcile,
            refresh_all=refresh_all,
            backfill_history=backfill_history,
            backfill_max_tokens=backfill_max_tokens,
        )
    except Exception as exc:  # noqa: BLE001 - classified: one line and the right exit code
        _fail(exit_codes.classify(exc))
    _sync(settings, log_format, quiet)


LISTEN_EPILOG = """Examples:

  PIPEDRIVE_WEBHOOK_USER=hooks PIPEDRIVE_WEBHOOK_PASSWORD=... pipedrive-sync listen

  pipedrive-sync listen --host 0.0.0.0 --public-url https://sync.example.com/pipedrive

  curl -s localhost:8787/healthz

Webhook credentials (HTTP Basic auth, required): PIPEDRIVE_WEBHOOK_USER and
PIPEDRIVE_WEBHOOK_PASSWORD, or sources.pipedrive.webhook.user / .password in .dlt/secrets.toml.
Stop with SIGTERM or Ctrl-C: what was received is applied first (exit 0 within 10 s).

Exit status: 0 stopped, 1 bug, 75 the warehouse is held by another sync, 77 token rejected,
78 configuration (no webhook credentials, the port is taken, too many webhooks)."""


@app.command(epilog=LISTEN_EPILOG)
def listen(
    entities: EntitiesOpt = None,
    duckdb_path: DuckdbOpt = None,
    dataset: DatasetOpt = None,
    destination: DestinationOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address the webhook receiver listens on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the webhook receiver.")] = 8787,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="The URL Pipedrive reaches the receiver at: registers the webhooks v2 there"
            " (idempotently) and receives events at its path \\[default: none, events at /].",
        ),
    ] = None,
    poll_minutes: Annotated[
        float,
        typer.Option(
            "--poll-minutes",
            help="Minutes between the normal incremental runs (the safety net for missed"
            " deliveries).",
        ),
    ] = 60.0,
    log_format: LogFormatOpt = LogFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Keep the warehouse current within seconds: apply Pipedrive's webhooks v2 as they come."""
    _setup_logging(quiet)
    from .listen import ListenLog, resolve_listen, run_listener
    from .process_memory import tune_for_sync
    from .settings import resolve

    try:
        settings = resolve(
            entities=entities, destination=destination, duckdb_path=duckdb_path, dataset=dataset
        )
        listen_settings = resolve_listen(host, port, public_url, poll_minutes)
    except Exception as exc:  # noqa: BLE001 - classified: one line and the right exit code
        _fail(exit_codes.classify(exc))
    tune_for_sync()
    scope = exit_codes.Scope.of(settings)
    log = ListenLog(log_format, quiet, _console())
    try:
        code = run_listener(settings, listen_settings, log)
    except Exception as exc:
        failure = exit_codes.classify(exc, scope)
        log.emit(
            "listen_stopped",
            f"listener stopped: exit {failure.code}",
            exit_code=failure.code,
            message=failure.message,
        )
        if not failure.expected and os.environ.get("PIPEDRIVE_SYNC_DEBUG"):
            raise
        _fail(failure)
    raise typer.Exit(code)


DEMO_EPILOG = """Then explore it:

  pipedrive-sync shell --duckdb-path demo.duckdb

  pipedrive-sync query --duckdb-path demo.duckdb "SELECT * FROM deals_enriched LIMIT 5"

  pipedrive-sync status --duckdb-path demo.duckdb"""


@app.command(epilog=DEMO_EPILOG)
def demo(
    duckdb_path: Annotated[
        str, typer.Option("--duckdb-path", help="Where to write the demo warehouse.")
    ] = "demo.duckdb",
    deals: Annotated[int, typer.Option(help="How many deals the fake account has.")] = 500,
    log_format: LogFormatOpt = LogFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Sync a bundled fake Pipedrive account into ./demo.duckdb: no account, no network needed."""
    _setup_logging(quiet)
    from sources.pipedrive_fake import FakePipedrive

    from .settings import resolve

    if deals < 1:
        _fail(exit_codes.Failure(exit_codes.CONFIG, "--deals must be at least 1", expected=True))
    scale = {
        "deals": deals,
        "persons": deals // 2,
        "organizations": deals // 5,
        "activities": deals,
    }
    # deals that moved up their pipelines and were won or lost, as their changelogs tell
    with FakePipedrive(token=DEMO_TOKEN, seed=42, scale=scale, deal_stories=True) as fake:
        os.environ["PIPEDRIVE_API_TOKEN"] = DEMO_TOKEN
        os.environ["PIPEDRIVE_BASE_URL"] = fake.base_url
        try:
            # a fresh fake each time: rebuild the demo warehouse instead of syncing increments;
            # the history backfill reads every deal's changelog (no budget to mind here)
            settings = resolve(
                duckdb_path=duckdb_path,
                destination="duckdb",
                full_refresh=True,
                backfill_history=True,
                backfill_max_tokens=20 * deals + 1_000,
            )
        except Exception as exc:  # noqa: BLE001
            _fail(exit_codes.classify(exc))
        _sync(settings, log_format, quiet)
    if quiet or log_format is LogFormat.json:
        return
    from .output import print_cursor
    from .warehouse import open_warehouse

    console = _console()
    path = f" --duckdb-path {duckdb_path}" if duckdb_path != "pipedrive.duckdb" else ""
    console.print(
        "\nHow deals move through the Sales pipeline (view stage_velocity):", markup=False
    )
    with _expected_failures(), open_warehouse(duckdb_path) as connection:
        print_cursor(connection.execute(DEMO_SQL), Format.table, sys.stdout, console)
    me = _how_to_call_me()
    console.print(
        f'\nTry it:  {me} query{path} "SELECT * FROM deal_stage_history LIMIT 5"'
        f"\n         {me} shell{path}",
        markup=False,
        soft_wrap=True,
    )


def _how_to_call_me() -> str:
    """This command as the shell it runs from can call it again: `pipedrive-sync` when that is
    on the PATH, else the path it was started by (`.venv/bin/pipedrive-sync` after `make`)."""
    import shlex
    import shutil

    started = Path(sys.argv[0])
    if started.name != "pipedrive-sync":  # `python -m pipelines.pipedrive_sync`
        python = Path(sys.executable)
        return f"{shlex.quote(_shortest(python))} -m pipelines.pipedrive_sync"
    found = shutil.which("pipedrive-sync")
    if found and Path(found).resolve() == started.resolve():
        return "pipedrive-sync"
    return shlex.quote(_shortest(started))


def _shortest(path: Path) -> str:
    """`path` relative to the working directory when it is inside it, else absolute."""
    absolute = path.absolute()
    try:
        relative = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
    return relative if "/" in relative else f"./{relative}"


# -- reading the warehouse -------------------------------------------------------------------
STATUS_EPILOG = """Examples:

  pipedrive-sync status

  pipedrive-sync status --max-age 2h || alert "pipedrive data is stale"

  pipedrive-sync status --format json

  pipedrive-sync status -f openmetrics > /var/lib/node_exporter/textfile/pipedrive.prom.tmp

  pipedrive-sync status --destination postgres

Every entity ever synced into the warehouse is checked; one without a successful sync is
stale. Exit status: 0 fresh, 1 some entity is stale (the line on stderr names them), 75 the
file is locked by a running sync (or the destination cannot be reached), 78 no such warehouse
or dataset, or an unknown entity."""


class StatusFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    openmetrics = "openmetrics"


@app.command(epilog=STATUS_EPILOG)
def status(
    duckdb_path: DuckdbOpt = None,
    dataset: DatasetOpt = None,
    destination: ReadDestinationOpt = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            help="Also stale: an entity whose last successful sync is older than this"
            " (30m, 2h, 1d, 1h30m).",
        ),
    ] = None,
    entities: Annotated[
        str | None,
        typer.Option(
            "--entities",
            "-e",
            help="Entities to check \\[default: every entity ever synced into the warehouse].",
        ),
    ] = None,
    fmt: Annotated[
        StatusFormat,
        typer.Option(
            "--format",
            "-f",
            help="table; csv; json (one object per entity and line); openmetrics (for"
            " Prometheus' textfile collector).",
            case_sensitive=False,
        ),
    ] = StatusFormat.table,
) -> None:
    """Per entity: last successful sync, rows, last run outcome, staleness, cadences."""
    _setup_logging(quiet=False)
    from .status import check_entities, parse_duration, read_status, stale_line, tokens_today

    with _expected_failures():
        limit = parse_duration(max_age) if max_age else None
        wanted = (
            check_entities([e.strip() for e in entities.split(",") if e.strip()])
            if entities
            else None
        )
        with _reader(duckdb_path, dataset, destination) as (settings, reader):
            rows = read_status(reader, wanted, max_age=limit, settings=settings)
            used = tokens_today(reader) if fmt is StatusFormat.openmetrics else None
            where = reader.where
    _print_status(rows, fmt, where, settings, used)
    line = stale_line(rows, limit)
    if line:
        _fail(exit_codes.Failure(exit_codes.FAILURE, line, expected=True))


def _print_status(
    rows: list[Any], fmt: StatusFormat, where: str, settings: RunSettings, used: int | None
) -> None:
    from .status import print_status

    if fmt is StatusFormat.openmetrics:
        from .metrics import write_openmetrics

        write_openmetrics(rows, settings.dataset, sys.stdout, used, settings.daily_token_budget)
        return
    print_status(rows, Format(fmt.value), sys.stdout, _console(), where)


QUERY_EPILOG = """Examples:

  pipedrive-sync query "SELECT status, count(*) FROM deals GROUP BY ALL"

  pipedrive-sync query --format csv "SELECT * FROM deals_enriched" > deals.csv

  pipedrive-sync query -f json "SELECT * FROM open_pipeline_summary" | jq .

Tables: deals, persons, organizations, activities, products, pipelines, stages, custom_fields,
sync_runs; views: deals_enriched, open_pipeline_summary. Times are UTC."""


@app.command(epilog=QUERY_EPILOG)
def query(
    sql: Annotated[
        str,
        typer.Argument(help="The SQL to run (the destination's dialect); `-` reads stdin."),
    ],
    fmt: FormatOpt = Format.table,
    duckdb_path: DuckdbOpt = None,
    dataset: DatasetOpt = None,
    destination: ReadDestinationOpt = None,
    max_rows: Annotated[
        int,
        typer.Option("--max-rows", help="Rows shown in table format (0: all); csv/json print all."),
    ] = 1000,
) -> None:
    """Run SQL against the warehouse (the dataset is the default schema) and print it."""
    _setup_logging(quiet=False)
    from .output import print_cursor

    text = sys.stdin.read() if sql == "-" else sql
    if not text.strip():
        _fail(exit_codes.Failure(exit_codes.CONFIG, "no SQL given", expected=True))
    with (
        _expected_failures(whole_sql_errors=True),
        _reader(duckdb_path, dataset, destination) as (_, reader),
        reader.cursor(text) as cursor,
    ):
        print_cursor(cursor, fmt, sys.stdout, _console(), max_rows=max_rows)


class ShellUi(StrEnum):
    auto = "auto"
    harlequin = "harlequin"
    prompt = "prompt"


SHELL_EPILOG = """With harlequin installed (pip install 'pipedrive-sync\\[shell]') you get its full
terminal UI on the warehouse, dataset selected; otherwise a simple SQL prompt:
statements end with `;`, `.tables` lists tables, `.schema deals` shows columns, `.quit` leaves.
Also reads statements from a pipe:

  echo "SELECT count(*) FROM deals;" | pipedrive-sync shell"""


@app.command(epilog=SHELL_EPILOG)
def shell(
    duckdb_path: DuckdbOpt = None,
    dataset: DatasetOpt = None,
    ui: Annotated[
        ShellUi,
        typer.Option(
            "--ui",
            help="auto: harlequin when installed and on a terminal, else the prompt;"
            " harlequin; prompt.",
            case_sensitive=False,
        ),
    ] = ShellUi.auto,
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="Open read-write (default read-only: the sync owns the file)."
        ),
    ] = False,
) -> None:
    """Interactive SQL on the DuckDB warehouse: harlequin when installed, a simple prompt otherwise."""
    _setup_logging(quiet=False)
    from .shell import find_harlequin, run_harlequin, run_prompt
    from .warehouse import open_warehouse

    harlequin = find_harlequin()
    if ui is ShellUi.harlequin and harlequin is None:
        _fail(
            exit_codes.Failure(
                exit_codes.CONFIG,
                "harlequin is not installed: pip install 'pipedrive-sync[shell]' (or harlequin)",
                True,
            )
        )
    interactive = sys.stdin.isatty()
    with _expected_failures():
        settings = _read_settings(duckdb_path, dataset)
        with open_warehouse(settings.duckdb_path, settings.dataset, read_only=not write) as con:
            catalog = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            use_harlequin = ui is ShellUi.harlequin or (ui is ShellUi.auto and interactive)
            if harlequin and use_harlequin:
                con.close()
                code = run_harlequin(
                    harlequin, settings.duckdb_path, catalog, settings.dataset, read_only=not write
                )
                raise typer.Exit(code)
            code = run_prompt(con, sys.stdin, _console(), interactive=interactive)
    raise typer.Exit(code)


FIELDS_EPILOG = """Examples:

  pipedrive-sync fields

  pipedrive-sync fields --entity deal

  pipedrive-sync fields -e person --format csv"""


@app.command(epilog=FIELDS_EPILOG)
def fields(
    entity: Annotated[
        str | None,
        typer.Option("--entity", "-e", help="Only this entity (deal, person, organization…)."),
    ] = None,
    fmt: FormatOpt = Format.table,
    duckdb_path: DuckdbOpt = None,
    dataset: DatasetOpt = None,
    destination: ReadDestinationOpt = None,
    all_fields: Annotated[
        bool, typer.Option("--all", help="Include fields deleted in Pipedrive (is_active false).")
    ] = False,
) -> None:
    """The custom-field mapping: which column holds which Pipedrive field, per entity."""
    _setup_logging(quiet=False)
    from .output import print_cursor
    from .status import custom_fields_sql

    with _expected_failures(), _reader(duckdb_path, dataset, destination) as (_, reader):
        sql = custom_fields_sql(
            reader, entity, include_inactive=all_fields, with_options=fmt is not Format.table
        )
        with reader.cursor(sql) as cursor:
            print_cursor(cursor, fmt, sys.stdout, _console(), max_rows=0)


@app.command("entities")
def list_entities() -> None:
    """List the entities this tool can sync, with endpoint, API version and strategy."""
    from sources.pipedrive.entities import ENTITIES

    width = max(len(e.name) for e in ENTITIES)
    strategy_width = max(len(e.strategy.value) for e in ENTITIES)
    for entity in ENTITIES:
        paths = ", ".join(dict.fromkeys(f"/{s.path}" for s in entity.streams))
        default = "default" if entity.default else "opt-in"
        typer.echo(
            f"{entity.name:{width}}  {entity.api.value}  {entity.strategy.value:{strategy_width}}"
            f"  {default:7}  {paths}"
        )


@app.command()
def docs(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the table reference.")
    ] = Path("docs/tables.md"),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file is not up to date.")
    ] = False,
) -> None:
    """Write the table reference (every table, column and type) from the dlt schema."""
    from .docs import render

    text = render()
    if check:
        if not output.is_file() or output.read_text(encoding="utf-8") != text:
            _fail(
                exit_codes.Failure(
                    exit_codes.FAILURE,
                    f"{output} is out of date: run `pipedrive-sync docs` (or `make schema-docs`)",
                    True,
                )
            )
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pipedrive-sync {version('pipedrive-sync')}")
        except PackageNotFoundError:
            typer.echo("pipedrive-sync (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Sync Pipedrive CRM into DuckDB (or any dlt destination): complete, incremental, typed."""


def main() -> None:
    """Console-script entry point."""
    _reported.clear()
    try:
        app()
    except (KeyboardInterrupt, SystemExit) as stop:
        code = stop.code if isinstance(stop, SystemExit) else exit_codes.INTERRUPTED
        if code not in exit_codes.SIGNALLED:
            raise
        # typer turns a Ctrl-C outside the run's own handling (e.g. while a command imports
        # dlt) into a silent exit 130
        if not _reported:
            typer.echo(f"pipedrive-sync: {exit_codes.INTERRUPTED_MESSAGE}", err=True)
    else:
        return
    # stopped by a signal: the run has closed its DuckDB file; skip the interpreter's teardown,
    # which would wait for threads still blocked in a request and print DuckDB's report of
    # objects still alive
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


if __name__ == "__main__":
    main()
