"""The command line as cron runs it: exit codes, one-line errors, locking, no secrets anywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI, CORE_ENTITIES, TOKEN, HeldRequest, run_cli, start_process

from pipelines.pipedrive_sync import exit_codes
from sources.pipedrive_fake import FakePipedrive, FaultRule


def _env(tmp_path: Path, fake: FakePipedrive | None, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env["DLT_DATA_DIR"] = str(tmp_path / "dlt-data")
    if token:
        env["PIPEDRIVE_API_TOKEN"] = token
    if fake is not None:
        env["PIPEDRIVE_BASE_URL"] = fake.base_url
    return env


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    return run_cli(args, env, cwd, timeout)


def _no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_run_succeeds_and_prints_a_summary(fake: FakePipedrive, tmp_path: Path) -> None:
    proc = _run(["run"], _env(tmp_path, fake), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pipedrive.duckdb").exists()
    for entity in CORE_ENTITIES:
        assert entity in proc.stdout
    assert "API requests" in proc.stdout


def test_missing_token_exits_78(tmp_path: Path) -> None:
    proc = _run(["run"], _env(tmp_path, None, token=None), tmp_path)
    assert proc.returncode == 78
    assert "PIPEDRIVE_API_TOKEN" in proc.stderr
    _no_traceback(proc)


def test_unknown_entity_exits_78(fake: FakePipedrive, tmp_path: Path) -> None:
    proc = _run(["run", "--entities", "deals,unicorns"], _env(tmp_path, fake), tmp_path)
    assert proc.returncode == 78
    assert "unicorns" in proc.stderr
    _no_traceback(proc)


def test_wrong_token_exits_77_and_leaves_no_state(fake: FakePipedrive, tmp_path: Path) -> None:
    proc = _run(["run"], _env(tmp_path, fake, token="wrong-token"), tmp_path)
    assert proc.returncode == 77
    assert "401" in proc.stderr and "wrong-token" not in proc.stderr
    _no_traceback(proc)
    assert not (tmp_path / "pipedrive.duckdb").exists()
    pipelines = tmp_path / "dlt-data" / "pipelines"
    states = list(pipelines.rglob("state.json")) if pipelines.exists() else []
    assert states == []


def test_a_second_run_while_one_holds_the_lock_exits_75_at_once(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    """A run of the same warehouse holds the DuckDB file: the second run does not wait."""
    env = _env(tmp_path, fake)
    with HeldRequest(fake, "/api/v2/deals") as hold:
        first = subprocess.Popen([*CLI, "run"], env=env, cwd=tmp_path)
        assert hold.wait()
        proc = _run(["run"], env, tmp_path)
        assert first.poll() is None  # the second run ended while the first was still held
    first.wait(120)
    assert proc.returncode == 75
    assert "another pipedrive-sync run is syncing this warehouse" in proc.stderr
    _no_traceback(proc)
    assert first.returncode == 0


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    env = _env(tmp_path, fake)
    fake.add_fault(FaultRule(path=r"/deals$", kind="stall", delay=30, times=1))
    proc = subprocess.Popen([*CLI, "run"], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not any(r.endpoint == "deals" for r in fake.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    fake.clear_faults()
    second = _run(["run"], env, tmp_path)
    assert second.returncode == 0, second.stderr


def test_the_token_appears_nowhere_a_run_leaves_behind(fake: FakePipedrive, tmp_path: Path) -> None:
    env = _env(tmp_path, fake)
    env["RUNTIME__LOG_LEVEL"] = "DEBUG"  # even verbose logs must not carry it
    fake.add_fault(FaultRule(path=r"/persons$", kind="status", status=500, times=1))
    first = _run(["run"], env, tmp_path)
    second = _run(
        ["run", "--entities", "deals"], _env(tmp_path, fake, token="wrong-" + TOKEN), tmp_path
    )
    assert first.returncode == 0 and second.returncode == 77
    needle = TOKEN.encode()
    outputs = (first.stdout + first.stderr + second.stdout + second.stderr).encode()
    assert needle not in outputs
    leaked = [
        path for path in tmp_path.rglob("*") if path.is_file() and needle in path.read_bytes()
    ]
    assert leaked == []
    assert not fake.token_leaked_in_url


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["entities"]])
def test_help_and_listing_work(command: list[str], tmp_path: Path) -> None:
    proc = _run(command, _env(tmp_path, None), tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip()


def _as_from_a_terminal(argv: list[str], before: str = "") -> str:
    """Python code running `pipedrive-sync argv` with Python's own SIGINT handler, as from a
    terminal (a test runner's worker may ignore SIGINT, and children inherit that); `before`
    runs first."""
    return (
        "import os, runpy, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"{before}\n"
        f"sys.argv = {['pipedrive-sync', *argv]!r}\n"
        "runpy.run_module('pipelines.pipedrive_sync', run_name='__main__')\n"
    )


def test_ctrl_c_mid_run_exits_130_in_one_line_and_the_next_run_completes(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    env = _env(tmp_path, fake)
    with HeldRequest(fake, "/api/v2/persons", timeout=30) as hold:
        code = _as_from_a_terminal(["run", "--entities", "deals,persons"])
        proc = start_process([sys.executable, "-c", code], env, tmp_path)
        try:
            assert hold.wait(), "the run never asked for persons"
            proc.send_signal(signal.SIGINT)
            lines: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:  # the held request ends once the signal is acknowledged
                lines.append(line)
                if "stopping after the current load" in line:
                    break
            hold.release()
            rest, stderr = proc.communicate(timeout=60)
            stdout = "".join(lines) + rest
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    _no_traceback(done)
    assert "interrupted" in stderr and "leaked" not in stderr
    again = _run(["run", "--entities", "deals,persons"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "persons" in again.stdout


def _ctrl_c_while_importing(module: str) -> str:
    """Code that sends SIGINT to its own process when `module` is first imported, as a Ctrl-C
    right after pressing Enter."""
    return f"""
import importlib.abc
class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize(
    ("module", "message"),
    [
        # the command line itself loading (the console script's guard)
        ("typer", "interrupted while starting; nothing was changed"),
        # `run` loading dlt and the source (typer turns this into a silent exit 130)
        ("dlt.common", exit_codes.INTERRUPTED_MESSAGE),
    ],
)
def test_ctrl_c_while_loading_prints_one_line_and_exits_130(
    module: str, message: str, tmp_path: Path
) -> None:
    code = _as_from_a_terminal(["run"], before=_ctrl_c_while_importing(module))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == exit_codes.INTERRUPTED, done.stderr
    _no_traceback(done)
    assert done.stderr.strip().splitlines() == [f"pipedrive-sync: {message}"]
    assert not list(tmp_path.iterdir())  # no database, no pipeline state
