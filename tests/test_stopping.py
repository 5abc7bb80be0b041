"""Stopping a run with SIGINT (Ctrl-C) or SIGTERM (systemd, docker stop), in fetch and in load.

The first signal is acknowledged at once and the run stops after loading what it fetched
(cursors committed with it, the run recorded in `sync_runs`); a second one aborts at once.
Signals are sent for real: by the test, or by the child itself at an exact point of dlt's load.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, HeldRequest, run_cli, start_process
from test_cli import _as_from_a_terminal, _env

from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive_fake import FakePipedrive

ACK = "stopping after the current load"
LIBRARY_NOISE = ("thread pool", "lock indefinitely", "gracefully", "Traceback", "dlt")


def _start(code: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return start_process([sys.executable, "-c", code], env, cwd)


def _chunked_env(tmp_path: Path, fake: FakePipedrive) -> dict[str, str]:
    """One 50-row page per chunk: a first sync of 120 deals takes three loads."""
    env = _env(tmp_path, fake)
    env["SOURCES__PIPEDRIVE__CHUNK_PAGES"] = "1"
    env["SOURCES__PIPEDRIVE__PAGE_LIMIT"] = "50"
    env["SOURCES__PIPEDRIVE__PARALLEL_ENTITIES"] = "1"
    return env


def _signal_in_load(sig: signal.Signals, block_in: Path | None = None) -> str:
    """Code that sends `sig` to its own process while dlt loads the first `deals` file (the
    load job is running); with `block_in`, the job then writes that file and hangs."""
    block = (
        f"        open({str(block_in)!r}, 'w').close()\n        time.sleep(60)\n"
        if block_in
        else ""
    )
    return (
        "import time\n"
        "from dlt.common.destination.client import RunnableLoadJob\n"
        "_original = RunnableLoadJob.run_managed\n"
        "_sent = []\n"
        "def _run_managed(self, *args, **kwargs):\n"
        "    if not _sent and self.file_name().startswith('deals.'):\n"
        "        _sent.append(1)\n"
        f"        os.kill(os.getpid(), {int(sig)})\n"
        f"{block}"
        "    return _original(self, *args, **kwargs)\n"
        "RunnableLoadJob.run_managed = _run_managed\n"
    )


def _runs(db: Path) -> list[tuple[Any, ...]]:
    with open_duckdb(db) as con:
        return con.execute(
            "SELECT entity, status, exit_code FROM sync_runs ORDER BY finished_at, entity"
        ).fetchall()


def _count(db: Path, table: str) -> int:
    with open_duckdb(db) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _no_noise(stderr: str) -> None:
    assert not [word for word in LIBRARY_NOISE if word in stderr], stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]
)
def test_a_signal_during_a_load_stops_after_it_and_the_next_run_resumes(
    sig: signal.Signals, code: int, name: str, fake: FakePipedrive, tmp_path: Path
) -> None:
    env = _chunked_env(tmp_path, fake)
    child = _as_from_a_terminal(["run", "--entities", "deals"], before=_signal_in_load(sig))
    proc = _start(child, env, tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    _no_noise(stderr)
    assert name in stderr and "the next run" in stderr
    assert ACK in stdout  # acknowledged in the log, at once
    db = tmp_path / "pipedrive.duckdb"
    total = len(fake.records("deals", deleted=None, archived=None))
    loaded = _count(db, "deals")
    assert 0 < loaded < total  # the load in progress finished; no further chunk was read
    runs = _runs(db)
    assert ("deals", "stopped", code) in runs  # the interrupted run is recorded, as unfinished

    fake.reset_requests()
    again = run_cli(["run", "--entities", "deals"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    main_list = [r for r in fake.requests if r.path == "/api/v2/deals"]
    assert main_list and all("cursor" in r.query for r in main_list), [
        (r.n, sorted(r.query)) for r in main_list
    ]
    assert _count(db, "deals") == total


def test_ctrl_c_while_a_request_hangs_stops_without_waiting_for_it(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    """The answer never comes while the run stops: it does not wait for the read timeout."""
    env = _env(tmp_path, fake)
    env["SOURCES__PIPEDRIVE__READ_TIMEOUT"] = "60"
    with HeldRequest(fake, "/api/v2/persons", timeout=40) as hold:
        proc = _start(_as_from_a_terminal(["run", "--entities", "deals,persons"]), env, tmp_path)
        try:
            assert hold.wait(), "the run never asked for persons"
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)  # well before the held answer
            held = not hold.released
        finally:
            if proc.poll() is None:
                proc.kill()
    assert held
    assert proc.returncode == 130, stderr
    _no_noise(stderr)
    assert ACK in stdout
    runs = _runs(tmp_path / "pipedrive.duckdb")
    assert ("persons", "stopped", 130) in runs


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def test_a_second_signal_aborts_at_once_and_the_next_run_converges(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    env = _chunked_env(tmp_path, fake)
    marker = tmp_path / "load-started"
    child = _as_from_a_terminal(
        ["run", "--entities", "deals"], before=_signal_in_load(signal.SIGINT, block_in=marker)
    )
    proc = _start(child, env, tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        while ACK not in lines.get(timeout=60):  # the first signal was taken
            pass
        assert proc.poll() is None  # still loading (the job hangs)
        proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read() if proc.stderr else ""  # ends when the process does
        proc.wait(timeout=30)  # well before the hanging job would return
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert marker.exists()
    assert proc.returncode == 130, stderr
    _no_noise(stderr)
    assert "aborted" in stderr

    again = run_cli(["run", "--entities", "deals"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    db = tmp_path / "pipedrive.duckdb"
    assert _count(db, "deals") == len(fake.records("deals", deleted=None, archived=None))
    with open_duckdb(db) as con:
        assert con.execute("SELECT count(*) - count(DISTINCT id) FROM deals").fetchone() == (0,)


def test_a_rate_limit_wait_ends_when_the_run_stops(fake: FakePipedrive) -> None:
    """Pipedrive may ask to wait up to two minutes; a stop request does not wait it out."""
    from sources.pipedrive.entities import Api
    from sources.pipedrive.http import ApiTokenAuth, PipedriveClient, RunStopped
    from sources.pipedrive_fake import FaultRule

    fake.add_fault(FaultRule(path=r"/deals$", kind="rate_limit", retry_after=100, times=None))
    client = PipedriveClient(fake.base_url, ApiTokenAuth(TOKEN))
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            client.get_json(Api.V2, "deals", cost=10, label="deals")
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    while not client.metrics.rate_limited:
        worker.join(timeout=0.05)
        assert worker.is_alive() or outcome, "the request ended before its 429"
    client.stop_event.set()
    worker.join(timeout=30)  # well before the 100 s Pipedrive asked for
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RunStopped)
    assert client.metrics.problem == "deals: rate limited, waiting 100s"
