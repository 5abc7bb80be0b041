"""What a newcomer trips on: help text, the demo's "Try it" line, the live view on an 80x24
terminal, a --start-date that cannot apply, and what is failing while requests are retried."""

from __future__ import annotations

import io
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import TOKEN
from rich.console import Console
from test_cli import _env, _run
from typer.testing import CliRunner

from pipelines.pipedrive_sync.cli import app
from pipelines.pipedrive_sync.progress import EntityProgress, LiveReporter, Snapshot
from sources.pipedrive.entities import DEFAULT_ENTITIES
from sources.pipedrive_fake import FakePipedrive

COMMANDS = ["run", "demo", "status", "query", "shell", "fields", "docs", "entities"]


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_option_text_whole(name: str) -> None:
    """Rich markup swallowed `[default: …]` ("DuckDB warehouse file .")."""
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")
    shown = _flat(CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"}).stdout)
    for param in command.commands[name].params:  # type: ignore[attr-defined]
        text = getattr(param, "help", None)
        if text and not getattr(param, "hidden", False):
            assert _flat(text.replace("\\[", "[")) in shown, (name, param.name)


def test_the_demo_try_it_line_runs_as_printed(tmp_path: Path) -> None:
    """After `make` the tool is in .venv/bin, not on the PATH: the line must still run."""
    script = Path(sys.executable).parent / "pipedrive-sync"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env["DLT_DATA_DIR"] = str(tmp_path / "dlt-data")
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != script.parent
    )
    demo = subprocess.run(
        [str(script), "demo", "--deals", "20"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    line = next(x for x in demo.stdout.splitlines() if x.startswith("Try it:"))
    command = line.removeprefix("Try it:").strip()
    tried = subprocess.run(
        ["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert tried.returncode == 0, (command, tried.stderr)
    assert shlex.split(command)[0] != "pipedrive-sync"
    assert "5 rows" in tried.stdout


def _live_view(snapshot: Snapshot) -> list[str]:
    """The live view's lines on an 80x24 terminal, without colour codes."""
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=True)
    console.print(LiveReporter(console)._render(snapshot))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", line) for line in text.splitlines()]


def test_the_live_view_fits_80x24_and_says_when_it_loads() -> None:
    entities = [EntityProgress(name, status="done", pages=3, rows=900) for name in DEFAULT_ENTITIES]
    for entity in entities[:3]:
        entity.status, entity.pages, entity.rows = "reading", 200, 100_000
    for entity in entities[-6:]:
        entity.status, entity.pages, entity.rows = "waiting", 0, 0
    loading = Snapshot(
        entities=entities,
        requests=1234,
        tokens=12340,
        elapsed=31.5,
        phase="loading",
        problem="persons: Pipedrive unavailable (503); retry 2 of 5",
        stopping="SIGINT (Ctrl-C) received: stopping after the current load",
    )
    lines = _live_view(loading)
    assert len(lines) <= 23  # the "Syncing …" line above it takes the 24th
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "reading" not in text and lines[2].startswith("deals ") and "│ loading │" in lines[2]
    assert "\nloading · 1,234 requests" in text
    assert re.search(r"^\+ 6 waiting, \d+ more$", text, re.MULTILINE), text
    assert "retrying: persons: Pipedrive unavailable (503)" in text
    assert "stopping after the current load" in text
    fetching = _live_view(Snapshot(entities=entities, phase="fetching"))
    assert len(fetching) <= 23 and "+ 14 done (12,600 rows)" in fetching
    assert sum("│ reading │" in line for line in fetching) == 3


def test_start_date_on_an_existing_warehouse_warns(fake: FakePipedrive, tmp_path: Path) -> None:
    env = _env(tmp_path, fake)
    assert _run(["run", "--entities", "deals"], env, tmp_path).returncode == 0
    again = _run(
        ["run", "--entities", "deals,persons", "--start-date", "2024-01-01T00:00:00Z"],
        env,
        tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip().splitlines() == [
        "pipedrive-sync: warning: --start-date 2024-01-01T00:00:00Z applies only to a first"
        " sync: deals already synced and go on from where they stopped (--full-refresh starts"
        " over from it)"
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_api_says_what_fails_while_it_retries(tmp_path: Path) -> None:
    env = _env(tmp_path, None)
    env["PIPEDRIVE_API_TOKEN"] = TOKEN
    env["PIPEDRIVE_BASE_URL"] = f"http://127.0.0.1:{_closed_port()}"
    env["SOURCES__PIPEDRIVE__MAX_ATTEMPTS"] = "3"
    env["SOURCES__PIPEDRIVE__BACKOFF_BASE"] = "1"
    proc = _run(["run", "--entities", "deals"], env, tmp_path)
    assert proc.returncode == 75, proc.stderr
    assert "retrying: users/me: connection failed (ConnectionError); retry 1 of 2" in proc.stdout
    json_log = _run(["run", "--entities", "deals", "--log-format", "json"], env, tmp_path)
    assert '"event": "retrying"' in json_log.stdout
