"""`pipedrive-sync`: the command line. The only module that prints."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from . import exit_codes
from .summary import print_summary

app = typer.Typer(
    name="pipedrive-sync",
    help="Sync Pipedrive CRM into DuckDB (or any dlt destination): complete, incremental, typed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _quiet_libraries() -> None:
    # dlt logs progress and hints at WARNING; our summary says what matters
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    logging.getLogger("dlt").setLevel(logging.ERROR)


def _fail(failure: exit_codes.Failure) -> None:
    typer.echo(f"pipedrive-sync: {failure.message}", err=True)
    raise typer.Exit(failure.code)


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
    typer.Option("--duckdb-path", help="DuckDB file to write [default: ./pipedrive.duckdb]."),
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="Dataset (schema) name [default: pipedrive].")
]
DestinationOpt = Annotated[
    str | None,
    typer.Option(
        "--destination",
        help="Any dlt destination (duckdb, postgres, motherduck, snowflake, bigquery…);"
        " credentials come from dlt config [default: duckdb].",
    ),
]


@app.command()
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
    pipeline_name: Annotated[
        str | None, typer.Option("--pipeline-name", help="Override the local dlt pipeline name.")
    ] = None,
) -> None:
    """Sync Pipedrive into the warehouse; only what changed since the last run."""
    _quiet_libraries()
    from .runner import run_sync
    from .settings import resolve

    try:
        settings = resolve(
            entities=entities,
            destination=destination,
            duckdb_path=duckdb_path,
            dataset=dataset,
            pipeline_name=pipeline_name,
            full_refresh=full_refresh,
            start_date=start_date,
            refresh_fields=refresh_fields,
            hard_deletes=hard_deletes,
            reconcile=reconcile,
        )
        result = run_sync(settings)
    except Exception as exc:
        failure = exit_codes.classify(exc)
        if not failure.expected and os.environ.get("PIPEDRIVE_SYNC_DEBUG"):
            raise
        _fail(failure)
        return
    print_summary(result)
    if result.code != exit_codes.OK:
        typer.echo(f"pipedrive-sync: {result.message}", err=True)
        raise typer.Exit(result.code)


@app.command()
def demo(
    duckdb_path: Annotated[
        str, typer.Option("--duckdb-path", help="Where to write the demo warehouse.")
    ] = "demo.duckdb",
    deals: Annotated[int, typer.Option(help="How many deals the fake account has.")] = 500,
) -> None:
    """Sync a bundled fake Pipedrive account into ./demo.duckdb: no account, no network needed."""
    _quiet_libraries()
    from sources.pipedrive_fake import FakePipedrive

    from .runner import run_sync
    from .settings import resolve

    scale = {"deals": deals, "persons": deals // 2, "organizations": deals // 5, "activities": deals}
    token = "demo-token-not-a-secret"
    with FakePipedrive(token=token, seed=42, scale=scale) as fake:
        os.environ["PIPEDRIVE_API_TOKEN"] = token
        os.environ["PIPEDRIVE_BASE_URL"] = fake.base_url
        try:
            settings = resolve(duckdb_path=duckdb_path, pipeline_name="pipedrive_demo")
            result = run_sync(settings)
        except Exception as exc:  # noqa: BLE001
            _fail(exit_codes.classify(exc))
            return
    print_summary(result)
    sample = (
        "SELECT stage_id, count(*) AS deals, round(sum(value)) AS value FROM deals"
        " WHERE status = 'open' GROUP BY ALL ORDER BY deals DESC LIMIT 5"
    )
    from .warehouse import open_duckdb

    with open_duckdb(duckdb_path) as connection:
        typer.echo(f"\nTry it:  pipedrive-sync query --duckdb-path {duckdb_path} \"{sample}\"\n")
        connection.sql(sample).show()


@app.command("entities")
def list_entities() -> None:
    """List the entities this tool can sync, with endpoint, API version and strategy."""
    from sources.pipedrive.entities import ENTITIES

    for entity in ENTITIES:
        paths = ", ".join(f"/{s.path}" for s in entity.streams)
        default = "default" if entity.default else "opt-in"
        typer.echo(
            f"{entity.name:16} {entity.api.value}  {entity.strategy.value:14} {default:8} {paths}"
        )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("pipedrive-sync: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
