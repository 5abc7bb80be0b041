"""`pipedrive-sync shell`: harlequin on the warehouse when installed, else a small SQL prompt."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import duckdb
from rich.console import Console

from .output import Format, print_cursor
from .warehouse import first_line, quote_identifier, table_names

PROMPT = "pipedrive> "
CONTINUATION = "      ...> "
MAX_ROWS = 200
HELP = """Statements end with `;` (they may span lines). Commands:
  .tables          tables and views of the dataset
  .schema TABLE    columns and types of a table or view
  .help            this text
  .quit            leave (also Ctrl-D)"""


def find_harlequin() -> str | None:
    """harlequin next to this Python (same virtualenv) or on PATH."""
    beside = Path(sys.executable).parent / "harlequin"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("harlequin")


def run_harlequin(
    executable: str, path: Path, catalog: str, dataset: str, read_only: bool = True
) -> int:
    """Start harlequin on the file with the dataset selected (via a DuckDB init script)."""
    with tempfile.TemporaryDirectory(prefix="pipedrive-sync-") as tmp:
        init = Path(tmp) / "init.sql"
        init.write_text(
            f"USE {quote_identifier(catalog)}.{quote_identifier(dataset)};\n"
            "SET TimeZone = 'UTC';\n",
            encoding="utf-8",
        )
        command = [executable, "--init-path", str(init)]
        if read_only:
            command.append("--read-only")
        command.append(str(path))
        return subprocess.call(command)


def _dot_command(connection: duckdb.DuckDBPyConnection, line: str, console: Console) -> bool:
    """Handle a `.command`; returns False when the prompt should end."""
    name, _, argument = line.partition(" ")
    argument = argument.strip().rstrip(";").strip()
    if name in (".quit", ".exit"):
        return False
    if name == ".help":
        console.print(HELP, markup=False)
    elif name == ".tables":
        cursor = connection.execute(
            "SELECT table_name AS name, CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END"
            " AS kind FROM information_schema.tables WHERE table_catalog = current_database()"
            " AND table_schema = current_schema() ORDER BY table_name"
        )
        print_cursor(cursor, Format.table, sys.stdout, console)
    elif name == ".schema":
        if not argument or argument not in table_names(connection):
            raise ValueError(f"no table or view {argument!r}: see .tables")
        cursor = connection.execute(
            "SELECT column_name AS column, data_type AS type FROM information_schema.columns"
            " WHERE table_catalog = current_database() AND table_schema = current_schema()"
            " AND table_name = ? ORDER BY ordinal_position",
            [argument],
        )
        print_cursor(cursor, Format.table, sys.stdout, console, max_rows=0)
    else:
        raise ValueError(f"unknown command {name}: try .help")
    return True


def _read_line(stdin: TextIO, interactive: bool, continuation: bool) -> str | None:
    if not interactive:
        line = stdin.readline()
        return line if line else None
    try:
        return input(CONTINUATION if continuation else PROMPT) + "\n"
    except EOFError:
        return None


def run_prompt(
    connection: duckdb.DuckDBPyConnection,
    stdin: TextIO,
    console: Console,
    interactive: bool,
    err: TextIO | None = None,
) -> int:
    """Read statements until EOF or `.quit`; print each result as a table.

    Errors print one line and the prompt goes on. Returns 1 when reading from a pipe and some
    statement failed (so scripts notice), else 0.
    """
    err = err or sys.stderr
    if interactive:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401 - line editing and history for input()
        console.print("SQL on the Pipedrive warehouse; statements end with `;`, .help for help.")
    buffer: list[str] = []
    failed = 0

    def execute(sql: str) -> None:
        nonlocal failed
        if not sql.strip().strip(";").strip():
            return
        try:
            for statement in connection.extract_statements(sql):
                print_cursor(
                    connection.execute(statement), Format.table, sys.stdout, console, MAX_ROWS
                )
        except duckdb.Error as exc:
            failed += 1
            err.write(f"error: {first_line(exc)}\n")
            err.flush()

    while True:
        try:
            line = _read_line(stdin, interactive, continuation=bool(buffer))
        except KeyboardInterrupt:
            buffer = []
            console.print()
            continue
        if line is None:
            break
        stripped = line.strip()
        if not buffer and (stripped.startswith(".") or stripped in ("\\q", "exit", "quit")):
            try:
                if stripped in ("\\q", "exit", "quit") or not _dot_command(
                    connection, stripped, console
                ):
                    break
            except (ValueError, duckdb.Error) as exc:
                failed += 1
                err.write(f"error: {first_line(exc)}\n")
                err.flush()
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            execute("".join(buffer))
            buffer = []
    if buffer:
        execute("".join(buffer))
    return 1 if failed and not interactive else 0
