"""Progress and logs of `run` and `demo`: live table, plain lines, JSON lines, --quiet."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN
from rich.console import Console

from pipelines.pipedrive_sync.progress import (
    JsonReporter,
    LiveReporter,
    LogFormat,
    PlainReporter,
    QuietReporter,
    Reporter,
    Watcher,
    make_reporter,
)
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive import RunContext
from sources.pipedrive.entities import DEFAULT_ENTITIES
from sources.pipedrive.http import ApiTokenAuth, HttpSettings, PipedriveClient
from sources.pipedrive_fake import FakePipedrive, FaultRule

CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]
ENTITIES = list(DEFAULT_ENTITIES)


def _env(
    tmp_path: Path, fake: FakePipedrive | None, token: str = TOKEN, **extra: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPEDRIVE_", "SOURCES__", "FORCE_COLOR", "NO_COLOR", "TTY_"))
    }
    env["DLT_DATA_DIR"] = str(tmp_path / "dlt-data")
    env["PIPEDRIVE_API_TOKEN"] = token
    env["SOURCES__PIPEDRIVE__PAGE_LIMIT"] = "50"
    if fake is not None:
        env["PIPEDRIVE_BASE_URL"] = fake.base_url
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def _table_count(path: Path, table: str) -> int:
    with open_duckdb(path) as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_json_log_has_start_progress_per_entity_and_finish_events(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    # slow persons down so the run lasts long enough for progress events
    fake.add_fault(FaultRule(path=r"/persons$", kind="stall", delay=1.5, times=1, after=1))
    env = _env(tmp_path, fake, PIPEDRIVE_SYNC_PROGRESS_SECONDS="0.1")
    proc = _run(["run", "--log-format", "json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing but JSON
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert events[0]["entities"] == ENTITIES and events[0]["duckdb_path"] == "pipedrive.duckdb"
    progress = [e for e in events if e["event"] == "entity_progress"]
    assert progress and {"deals", "persons"} <= {e["entity"] for e in progress}
    assert all(e["rows"] > 0 and e["pages"] > 0 for e in progress)
    finished = {e["entity"]: e for e in events if e["event"] == "entity_finished"}
    assert list(finished) == ENTITIES
    for entity, event in finished.items():
        assert event["status"] == "ok"
        assert event["rows"] == _table_count(tmp_path / "pipedrive.duckdb", entity)
        assert event["requests"] >= 1 and event["tokens"] >= event["requests"]
    end = events[-1]
    assert end["exit_code"] == 0 and end["message"] is None
    assert end["rows"] == sum(e["rows"] for e in finished.values())
    assert end["requests"] > sum(e["requests"] for e in finished.values())  # + users/me, fields
    assert end["tokens"] >= end["requests"]
    assert TOKEN not in proc.stdout


def test_json_log_of_a_failed_run_ends_with_its_exit_code(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    proc = _run(
        ["run", "--log-format", "json"], _env(tmp_path, fake, token="wrong-token"), tmp_path
    )
    assert proc.returncode == 77
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events] == ["run_started", "run_finished"]
    assert events[-1]["exit_code"] == 77 and "401" in events[-1]["message"]
    assert (
        len(proc.stderr.strip().splitlines()) == 1
        and "wrong-token" not in proc.stdout + proc.stderr
    )


def test_plain_lines_when_stdout_is_not_a_terminal(fake: FakePipedrive, tmp_path: Path) -> None:
    proc = _run(["run", "--entities", "deals,stages"], _env(tmp_path, fake), tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "sync started → pipedrive.duckdb (dataset main): deals, stages" in lines[0]
    assert "sync finished: exit 0" in lines[-1]
    assert "API requests" in proc.stdout and "\x1b[" not in proc.stdout  # no terminal codes
    deals = _table_count(tmp_path / "pipedrive.duckdb", "deals")
    assert any(line.startswith("deals") and f"{deals:,}" in line for line in lines)


def test_quiet_prints_nothing_but_errors(fake: FakePipedrive, tmp_path: Path) -> None:
    ok = _run(["run", "--quiet", "--entities", "stages"], _env(tmp_path, fake), tmp_path)
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == ""
    assert _table_count(tmp_path / "pipedrive.duckdb", "stages") > 0
    bad = _run(["run", "-q"], _env(tmp_path, fake, token="wrong-token"), tmp_path)
    assert bad.returncode == 77 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1


def test_live_progress_on_a_terminal(fake: FakePipedrive, tmp_path: Path) -> None:
    env = _env(tmp_path, fake, FORCE_COLOR="1", TERM="xterm-256color", COLUMNS="120")
    proc = _run(["run", "--entities", "deals,persons"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b[?25l" in out  # the live display hides the cursor while it redraws
    assert "rows/s" in out and "pages" in out  # the progress table
    assert "API requests" in out and "sync started" not in out  # summary, no log lines


def test_demo_needs_no_account_and_ends_with_a_query_on_the_views(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env["DLT_DATA_DIR"] = str(tmp_path / "dlt-data")
    proc = _run(["demo", "--deals", "60"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "stage_velocity" in proc.stdout and "Qualified" in proc.stdout
    assert "history backfill: 60 deals left" in proc.stdout
    assert "shell --duckdb-path demo.duckdb" in proc.stdout
    assert _table_count(tmp_path / "demo.duckdb", "deals") == 60
    again = _run(["demo", "--deals", "60", "-q"], env, tmp_path)  # rebuilt, not appended to
    assert again.returncode == 0 and again.stdout == ""
    assert _table_count(tmp_path / "demo.duckdb", "deals") == 60


# -- in-process: the watcher and the reporters ------------------------------------------------
def _context() -> RunContext:
    client = PipedriveClient("http://127.0.0.1:9", ApiTokenAuth("not-used"), HttpSettings())
    return RunContext(client=client)


def _snapshot_after(ctx: RunContext, watcher: Watcher, **changes: Any) -> Any:
    for name, values in changes.items():
        report = ctx.report(name)
        for key, value in values.items():
            setattr(report, key, value)
    return watcher.snapshot()


def test_the_watcher_reports_each_entitys_counters_and_status() -> None:
    ctx = _context()
    watcher = Watcher(ctx, ("deals", "persons", "stages"), Reporter())
    first = watcher.snapshot()
    assert [(e.name, e.status) for e in first.entities] == [
        ("deals", "waiting"),
        ("persons", "waiting"),
        ("stages", "waiting"),
    ]
    snap = _snapshot_after(
        ctx,
        watcher,
        deals={"pages": 3, "rows": 1500},
        persons={"pages": 1, "rows": 80},
        stages={"status": "skipped", "message": "403"},
    )
    ctx.client.metrics.record("deals", tokens=10, rows=500)
    by_name = {e.name: e for e in snap.entities}
    assert by_name["deals"].status == "reading" and by_name["deals"].rows == 1500
    assert by_name["deals"].rate(snap.started) is not None
    assert by_name["persons"].rate(snap.started) is None  # one page says nothing about speed
    assert by_name["stages"].status == "skipped"
    later = watcher.snapshot()
    assert later.requests == 1 and later.tokens == 10


def test_live_reporter_draws_the_table_and_then_the_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")  # not a "dumb" terminal, whatever CI has
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    reporter = make_reporter(LogFormat.text, quiet=False, console=console)
    assert isinstance(reporter, LiveReporter)
    ctx = _context()
    with Watcher(ctx, ("deals",), reporter, interval=0.01) as watcher:
        reporter.run_started(_info())
        _snapshot_after(ctx, watcher, deals={"pages": 4, "rows": 2000})
        reporter.progress(watcher.snapshot())
    reporter.close()
    text = out.getvalue()
    assert "Syncing Pipedrive → pipedrive.duckdb (dataset pipedrive)" in text
    assert "deals" in text and "2,000" in text and "reading" in text


def _info() -> Any:
    from pipelines.pipedrive_sync.progress import RunInfo

    return RunInfo("duckdb", "pipedrive", ("deals",), "pipedrive.duckdb")


@pytest.mark.parametrize(
    ("fmt", "quiet", "terminal", "kind"),
    [
        (LogFormat.text, False, True, LiveReporter),
        (LogFormat.text, False, False, PlainReporter),
        (LogFormat.json, False, True, JsonReporter),
        (LogFormat.json, True, False, QuietReporter),
    ],
)
def test_reporter_choice(
    fmt: LogFormat, quiet: bool, terminal: bool, kind: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    console = Console(file=io.StringIO(), force_terminal=terminal)
    assert type(make_reporter(fmt, quiet, console)) is kind
