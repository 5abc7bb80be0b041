"""A throwaway PostgreSQL server for the tests that need a real warehouse.

Started once per test process (initdb + pg_ctl from Debian's `postgresql` package, which
`.ci/postgres.sh` installs) in a temporary directory on a free port, with password
authentication, as the `postgres` user when running as root. No server binaries is a failure,
not a skip: CI installs them, and a developer sees what to install. `Server.database(name)`
creates a fresh database for a test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "pipedrive-test-pw"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql`"
    " package (`bash .ci/postgres.sh` does), or put initdb on PATH"
)


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    pytest.fail(INSTALL_HINT, pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    port: int
    directory: Path
    runner: list[str]
    bin_dir: Path

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """Create database `name` (dropped first if it exists); returns its URL."""
        import psycopg2

        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.database_url(name)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        command = [
            *self.runner,
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    bin_dir = _bin_dir()
    as_root = os.geteuid() == 0
    # as root the server runs as `postgres`, which must reach the directory: /tmp, not $TMPDIR
    directory = Path(tempfile.mkdtemp(prefix="pipedrive-pg-", dir="/tmp" if as_root else None))
    runner: list[str] = []
    if as_root:  # initdb refuses root: run the server as the package's system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                f"running as root but there is no `postgres` user; {INSTALL_HINT}", pytrace=False
            )
        os.chown(directory, user.pw_uid, user.pw_gid)
        runner = ["runuser", "-u", "postgres", "--"]
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if runner:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    init = subprocess.run(
        [
            *runner,
            str(bin_dir / "initdb"),
            "-D",
            str(directory / "data"),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, f"initdb failed: {init.stderr[-2000:]}"
    server = Server(_free_port(), directory, runner, bin_dir)
    options = (
        f"-p {server.port} -k {directory} -c listen_addresses=127.0.0.1"
        " -F -c full_page_writes=off -c synchronous_commit=off"
    )
    started = server.pg_ctl(
        "-l", str(directory / "server.log"), "-w", "-t", "60", "-o", options, "start"
    )
    if started.returncode != 0:
        log = (directory / "server.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}", pytrace=False)
    try:
        yield server
    finally:
        server.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows `sql` returns in the database at `url`."""
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        connection.close()
