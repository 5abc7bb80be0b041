"""kill -9 a real sync at many points (fetch, normalize, load): the next run always converges.

Fetch-phase kill points are exact: the fake kills the process when it receives its Nth request.
Later points (normalize, load, post-load) are timed after the last request. Between rounds the
fake's data changes, so every round has real work to lose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, Syncer, all_deals, assert_matches_fake

from sources.pipedrive_fake import FakePipedrive

CLI = [sys.executable, "-m", "pipelines.pipedrive_sync", "run"]
TABLES = ("deals", "persons", "organizations", "activities", "products", "pipelines", "stages")


def _mutate(fake: FakePipedrive, round_no: int) -> None:
    deals = fake.records("deals")
    persons = fake.records("persons")
    fake.update("deals", deals[round_no % len(deals)]["id"], title=f"round {round_no}")
    fake.update("persons", persons[round_no % len(persons)]["id"], name=f"person {round_no}")
    fake.add("deals", title=f"added in round {round_no}")
    if round_no % 3 == 0:
        fake.delete("deals", deals[(round_no * 7) % len(deals)]["id"])
    if round_no % 4 == 1:
        fake.archive("deals", deals[(round_no * 5 + 1) % len(deals)]["id"])


def _killed_run(
    env: dict[str, str], cwd: Path, fake: FakePipedrive, kill_at: tuple[str, float]
) -> int:
    """Start the CLI and SIGKILL it at the given point; returns its exit status."""
    kind, value = kill_at
    fake.reset_requests()
    proc = subprocess.Popen(
        CLI, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    fired = threading.Event()

    def on_request(record: Any) -> None:
        if kind == "request" and record.n >= value and not fired.is_set():
            fired.set()
            os.kill(proc.pid, signal.SIGKILL)

    fake.on_request(on_request)
    try:
        if kind == "after_requests":
            # wait for the fetch phase to finish (no request for a while), then kill later
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                requests = fake.requests
                if requests and time.monotonic() - requests[-1].started > 0.05:
                    break
                time.sleep(0.01)
            time.sleep(value)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=120)
    finally:
        fake.on_request(None)


KILL_POINTS = [("request", n) for n in (1, 2, 3, 5, 7, 9, 12, 15, 18)] + [
    ("after_requests", t) for t in (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7)
]


@pytest.mark.slow
def test_kill_minus_nine_anywhere_never_duplicates_or_loses_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale = {"deals": 150, "persons": 60, "organizations": 30, "activities": 60, "products": 20}
    with FakePipedrive(token=TOKEN, seed=11, scale=scale) as fake:
        syncer = Syncer(fake, tmp_path, monkeypatch)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
        env.update(
            PIPEDRIVE_API_TOKEN=TOKEN,
            PIPEDRIVE_BASE_URL=fake.base_url,
            DLT_DATA_DIR=str(tmp_path / "dlt-data"),
            # small pages and chunks: many requests and several loads per run
            SOURCES__PIPEDRIVE__CHUNK_PAGES="2",
            SOURCES__PIPEDRIVE__PAGE_LIMIT="25",
        )
        (tmp_path / ".dlt").mkdir(exist_ok=True)
        (tmp_path / ".dlt" / "config.toml").write_text("")
        killed = 0
        for round_no, kill_at in enumerate(KILL_POINTS):
            _mutate(fake, round_no)
            status = _killed_run(env, tmp_path, fake, kill_at)
            killed += status == -signal.SIGKILL
            # the next (uninterrupted) run converges to exactly the fake's data
            try:
                result = syncer.run()
            except Exception as exc:
                raise AssertionError(f"round {round_no}, killed at {kill_at}: {exc}") from exc
            assert result.code == 0, (kill_at, result.message)
            for table in TABLES:
                expected = all_deals(fake) if table == "deals" else fake.records(table)
                assert_matches_fake(syncer, table, expected)
                duplicates = syncer.query(f"SELECT count(*) - count(DISTINCT id) FROM {table}")
                assert duplicates == [(0,)], (kill_at, table)
            repeated_versions = syncer.query(
                "SELECT count(*) FROM (SELECT deal_id, valid_from FROM deal_history"
                " GROUP BY deal_id, valid_from HAVING count(*) > 1) AS d"
            )
            assert repeated_versions == [(0,)], kill_at
        assert killed >= len(KILL_POINTS) // 2, "most runs must really have been killed mid-way"


class _Killed(BaseException):
    """Stands in for SIGKILL at one exact instruction."""


def _killed_then_rerun(syncer: Syncer, kills: list[tuple[object, str, Any]], **run: Any) -> None:
    """A run killed by `kills` (each an (owner, attribute, replacement) that raises `_Killed`
    at its point), then the same run, unpatched: it succeeds."""
    with pytest.MonkeyPatch.context() as patch:
        for owner, name, replacement in kills:
            patch.setattr(owner, name, replacement)
        with pytest.raises(_Killed):
            syncer.run(**run)
    result = syncer.run(**run)
    assert result.code == 0, result.message


def test_a_kill_between_normalize_commit_and_cleanup_converges(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    """dlt's normalize renames its output into place, then deletes the extracted package; a
    kill between the two left both behind and every later run failed to normalize."""
    from dlt.common.storages.load_storage import LoadStorage

    syncer.run()
    _mutate(fake, 1)
    commit = LoadStorage.commit_new_load_package

    def commit_then_die(self: LoadStorage, load_id: str) -> None:
        commit(self, load_id)
        raise _Killed

    _killed_then_rerun(syncer, [(LoadStorage, "commit_new_load_package", commit_then_die)])
    assert_matches_fake(syncer, "deals", all_deals(fake))


@pytest.mark.parametrize("table", ["deals", "deal_history"])
def test_a_load_job_rerun_after_a_kill_leaves_no_duplicate_rows(
    syncer: Syncer, fake: FakePipedrive, table: str
) -> None:
    """A kill after an appended job's insert committed but before dlt noted that on disk:
    dlt runs the job again on the next run, so the rows arrive twice (a first sync appends
    the deals and their history)."""
    from dlt.common.storages.load_package import PackageStorage

    complete = PackageStorage.complete_job
    note = PackageStorage.save_pending_transition
    job = f"{table}."

    def die_after_deals(self: PackageStorage, load_id: str, file_name: str) -> str:
        if file_name.startswith(job):
            raise _Killed
        return complete(self, load_id, file_name)

    def forget_deals(self: PackageStorage, load_id: str, file_name: str, *args: Any) -> None:
        if not file_name.startswith(job):
            note(self, load_id, file_name, *args)

    _killed_then_rerun(
        syncer,
        [
            (PackageStorage, "complete_job", die_after_deals),
            (PackageStorage, "save_pending_transition", forget_deals),
        ],
    )
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM deals") == [(0,)]
    assert_matches_fake(syncer, "deals", all_deals(fake))
    assert syncer.query(
        "SELECT count(*), count(DISTINCT deal_id), count(valid_to) FROM deal_history"
    ) == syncer.query("SELECT count(*), count(*), 0 FROM deals")


def test_a_kill_between_extract_commit_and_schema_save_converges(
    syncer: Syncer, fake: FakePipedrive, tmp_path: Path
) -> None:
    """dlt commits an extracted package before it saves the pipeline's schema, and normalizes
    with the pipeline's schema: a kill between the two left the new columns out of the schema
    and the package's load failing on every later run."""
    from dlt.common.storages.live_schema_storage import LiveSchemaStorage

    syncer.run()
    save = LiveSchemaStorage.commit_live_schema
    extracted = tmp_path / "dlt-data" / "pipelines"

    def die_once_extracted(self: LiveSchemaStorage, name: str) -> str | None:
        if any(extracted.glob("**/normalize/extracted/*/schema.json")):
            raise _Killed  # the package is committed, the pipeline's schema not yet saved
        return save(self, name)

    # files carry keys the declared schema lacks (file_type): columns only the package knows
    kill = (LiveSchemaStorage, "commit_live_schema", die_once_extracted)
    _killed_then_rerun(syncer, [kill], entities="files")
    assert "file_type" in syncer.columns("files")
    assert syncer.query("SELECT count(*) FROM files") == [(len(fake.records("files")),)]


def test_a_kill_while_the_local_state_is_being_replaced_converges(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    """Each run replaces the local dlt state with the warehouse's; a kill halfway through
    deleting the old one (its schema gone, its state file not yet) must not break the next."""
    import shutil

    syncer.run()
    _mutate(fake, 1)
    rmtree = shutil.rmtree

    def delete_schemas_then_die(path: Any, *args: Any, **kwargs: Any) -> None:
        schemas = Path(path) / "schemas"
        if schemas.is_dir():
            rmtree(schemas)
            raise _Killed
        rmtree(path, *args, **kwargs)

    _killed_then_rerun(syncer, [(shutil, "rmtree", delete_schemas_then_die)])
    assert_matches_fake(syncer, "deals", all_deals(fake))
