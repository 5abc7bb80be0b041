"""`pipedrive-sync listen`: webhooks v2 from the fake Pipedrive's real delivery, applied exactly.

The fake POSTs its events to the listener under Pipedrive's policy (retries on a millisecond
scale here); every wait is on a condition (`fake.wait_webhooks`, `Listener.wait_applied`,
`/healthz`), never a fixed sleep. The warehouse a listener keeps is compared with a fresh,
reconciled sync of the same fake: what the events changed must be exact.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from conftest import FAST_HTTP as FAST_HTTP_SETTINGS
from conftest import TOKEN, Syncer, table_rows
from pg_server import rows as pg_rows
from rich.console import Console

from pipelines.pipedrive_sync.listen import Listener, ListenLog, ListenSettings
from pipelines.pipedrive_sync.progress import LogFormat
from pipelines.pipedrive_sync.runner import run_sync
from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive_fake import FakePipedrive, WebhookFault
from sources.pipedrive_fake.server import RequestRecord

CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]
HOOK_USER, HOOK_PASSWORD = "pipedrive", "hook-password-0123"
ENTITIES = (
    "deals,persons,organizations,activities,products,pipelines,stages,leads,notes,deal_products"
)
TABLES = ENTITIES.split(",")
WAIT = 120.0  # the most any condition below may take on a busy machine


# -- an in-process listener --------------------------------------------------------------------
@dataclass
class Running:
    listener: Listener
    thread: threading.Thread
    log: io.StringIO
    outcome: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.port}{self.listener.listen.path}"

    def post(
        self, body: bytes | dict[str, Any], auth: Any = (HOOK_USER, HOOK_PASSWORD), **kw: Any
    ) -> requests.Response:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return requests.post(self.url, data=data, auth=auth, timeout=30, **kw)

    def health(self) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.listener.port}/healthz", timeout=30)

    def lines(self, event: str) -> list[dict[str, Any]]:
        records = [orjson.loads(line) for line in self.log.getvalue().splitlines() if line]
        return [r for r in records if r.get("event") == event]

    def applied(self, fake: FakePipedrive) -> None:
        """Every event the fake made so far is delivered, journaled and applied."""
        fake.wait_webhooks(WAIT)
        assert self.listener.wait_applied(WAIT), self.log.getvalue()[-2000:]

    def stop(self) -> Any:
        self.listener.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        return self.outcome[0]


def _fast_webhooks(fake: FakePipedrive) -> None:
    """Retries after 3, 30, 150 ms (only possible before the first registration)."""
    if not fake.webhooks.registrations() and not fake.webhooks.removed():
        fake.webhooks.configure(time_scale=0.001)


@contextmanager
def listening(
    syncer: Syncer,
    *,
    entities: str = ENTITIES,
    public_url: str | None = None,
    port: int = 0,
    latency_seconds: float = 0.05,
    poll_interval: timedelta = timedelta(hours=1),
    subscribe: bool = True,
    ready: bool = True,
    **overrides: Any,
) -> Iterator[Running]:
    """A listener in a thread of this process, subscribed at the fake (unless `public_url`
    makes it register itself), caught up when the block starts."""
    fake = syncer.fake
    _fast_webhooks(fake)
    settings = syncer.settings(entities=entities, **overrides)
    listen = ListenSettings(
        user=HOOK_USER,
        password=HOOK_PASSWORD,
        host="127.0.0.1",
        port=port,
        public_url=public_url,
        poll_interval=poll_interval,
        latency_seconds=latency_seconds,
    )
    log = io.StringIO()
    listener = Listener(settings, listen, ListenLog(LogFormat.json, False, Console(), out=log))
    running = Running(listener, threading.Thread(target=lambda: None), log)

    def work() -> None:
        try:
            running.outcome.append(listener.run())
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            running.outcome.append(exc)
            listener.listening.set()
            listener.ready.set()

    running.thread = threading.Thread(target=work, daemon=True)
    running.thread.start()
    try:
        assert listener.listening.wait(WAIT)
        if running.outcome:
            raise running.outcome[0]
        if subscribe and public_url is None:
            fake.webhooks.register(
                running.url, "*", "*", http_auth_user=HOOK_USER, http_auth_password=HOOK_PASSWORD
            )
        if ready:
            assert listener.ready.wait(WAIT)
            if running.outcome:
                raise running.outcome[0]
        yield running
    finally:
        if running.thread.is_alive():
            result = running.stop()
            if isinstance(result, BaseException):
                raise result
            assert result == 0


# -- comparing with a fresh sync ---------------------------------------------------------------
def _rows(db: Path, table: str) -> dict[Any, dict[str, Any]]:
    key = "id"
    with open_duckdb(db) as con:
        cursor = con.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    return {r[key]: {k: v for k, v in r.items() if not k.startswith("_dlt")} for r in rows}


def _reference(syncer: Syncer, tmp_path: Path) -> Path:
    """A fresh sync of the fake with every id listed (the truth to compare with)."""
    settings = syncer.settings(entities=ENTITIES, reconcile=True)
    settings.duckdb_path = tmp_path / "reference.duckdb"
    assert run_sync(settings).code == 0
    return tmp_path / "reference.duckdb"


def assert_exact(syncer: Syncer, reference: Path, flagged: dict[str, set[Any]]) -> None:
    """Every live row equals the fresh sync's, column by column; the rows of records that are
    gone are exactly `flagged` (still there, `is_deleted`)."""
    for table in TABLES:
        mine = _rows(syncer.db_path, table)
        truth = _rows(reference, table)
        gone = {i for i, r in mine.items() if r.get("is_deleted") and i not in truth}
        assert gone == flagged.get(table, set()), table
        assert set(mine) - gone == set(truth), table
        for record_id, expected in truth.items():
            row = mine[record_id]
            missing = set(expected) - set(row)
            assert not missing, f"{table} lacks columns {missing}"
            differs = {c: (row[c], v) for c, v in expected.items() if row[c] != v}
            assert not differs, f"{table} id={record_id}: {differs}"


# -- events end to end -------------------------------------------------------------------------
def test_updates_additions_deletes_merges_and_archives_are_exact(
    syncer: Syncer, tmp_path: Path
) -> None:
    fake = syncer.fake
    with listening(syncer) as running:
        deals = [d["id"] for d in fake.records("deals", archived=False)]
        persons = [p["id"] for p in fake.records("persons")]
        orgs = [o["id"] for o in fake.records("organizations")]
        leads = [lead["id"] for lead in fake.records("leads", archived=False)]
        notes = [n["id"] for n in fake.records("notes")]
        budget = fake.field_key_for_type("deals", "monetary")
        fake.update(
            "deals",
            deals[0],
            title="Renamed",
            custom_fields={budget: {"value": 12.5, "currency": "EUR"}},
        )
        added = fake.add("deals", title="Brand new")["id"]
        fake.delete("deals", deals[1])
        fake.archive("deals", deals[2])
        fake.delete("persons", persons[0])  # a hidden delete: persons vanish from the lists
        fake.merge("persons", persons[1], into=persons[2], name="Merged Person")
        fake.merge("organizations", orgs[0], into=orgs[1])
        activity = fake.records("activities")[0]["id"]
        fake.delete("activities", activity)
        fake.update("products", fake.records("products")[0]["id"], name="Renamed product")
        fake.update("stages", fake.records("stages")[0]["id"], name="Renamed stage")
        fake.update("leads", leads[0], title="Lead renamed")
        fake.archive("leads", leads[1])
        fake.delete("leads", leads[2])
        fake.add("notes", content="a new note")
        fake.delete("notes", notes[0])
        fake.add_deal_product(deals[3], fake.records("products")[1]["id"])
        running.applied(fake)
        batches = running.lines("batch_applied")
        assert batches and sum(b["events"] for b in batches) >= 19
        assert running.stop() == 0
    reference = _reference(syncer, tmp_path)
    assert_exact(
        syncer,
        reference,
        {
            "persons": {persons[0], persons[1]},
            "organizations": {orgs[0]},
            "activities": {activity},
            "leads": {leads[2]},
            "notes": {notes[0]},
        },
    )
    deal_rows = table_rows(syncer, "deals")
    assert deal_rows[deals[0]]["title"] == "Renamed"
    assert deal_rows[added]["title"] == "Brand new"
    assert deal_rows[deals[1]]["is_deleted"] is True
    assert deal_rows[deals[2]]["is_archived"] is True
    assert table_rows(syncer, "leads")[leads[1]]["is_archived"] is True


def test_custom_fields_take_the_same_path_as_a_run(syncer: Syncer) -> None:
    """A new field becomes a column (in the views too), a new option gets its label, and a
    renamed option is rewritten in the rows already loaded — all from one event."""
    fake = syncer.fake
    with listening(syncer, entities="deals,pipelines,stages") as running:
        enum_key = fake.field_key_for_type("deals", "enum")
        renamed = fake.field("deals", enum_key).options[0]
        holders = [
            d["id"]
            for d in fake.records("deals", deleted=None, archived=None)
            if (d["custom_fields"] or {}).get(enum_key) == renamed.id
        ]
        assert holders
        fake.rename_option("deals", enum_key, renamed.id, "Renamed option")
        fresh = fake.add_option("deals", enum_key, "Fresh option")
        added = fake.add_field("deals", "Webhook Score", "double")
        deal = fake.records("deals", archived=False)[0]["id"]
        fake.update("deals", deal, custom_fields={enum_key: fresh, added: 7.5})
        running.applied(fake)
    enum_column = syncer.query(
        f"SELECT column_name FROM custom_fields WHERE field_key = '{enum_key}'"
    )[0][0]
    rows = table_rows(syncer, "deals")
    assert rows[deal]["webhook_score"] == 7.5 and rows[deal][enum_column] == "Fresh option"
    assert {rows[h][enum_column] for h in holders if h != deal} == {"Renamed option"}
    assert syncer.query(f"SELECT webhook_score FROM deals_enriched WHERE id = {deal}") == [(7.5,)]


def test_batches_read_changed_records_by_id_without_moving_the_cursors(
    syncer: Syncer,
) -> None:
    """100 changed deals cost one `ids` request (10 tokens), and the next poll still reads
    from where the last poll stopped."""
    fake = syncer.fake
    with listening(syncer, entities="deals,persons", latency_seconds=3600) as running:
        state_before = _streams_state(syncer)
        fake.reset_requests()
        for deal in fake.records("deals", archived=False)[:100]:
            fake.update("deals", deal["id"], title=f"bulk {deal['id']}")
        running.applied(fake)  # 100 events start a batch without waiting for the window
        reads = [r for r in fake.requests if r.path.startswith("/api/v2/deals")]
        assert len(reads) == 1 and "ids" in reads[0].query, [r.path for r in reads]
        assert [b["tokens"] for b in running.lines("batch_applied")] == [10]
        assert _streams_state(syncer) == state_before
    rows = table_rows(syncer, "deals")
    assert sum(1 for r in rows.values() if str(r["title"]).startswith("bulk ")) == 100


def test_leads_and_notes_take_their_cheapest_path(syncer: Syncer) -> None:
    """A few changes: 2 tokens a record by id (an archived lead included); many: the list,
    read as a poll reads it."""
    fake = syncer.fake
    with listening(syncer, entities="leads,notes", latency_seconds=3600) as running:
        leads = [lead["id"] for lead in fake.records("leads", archived=False)]
        fake.reset_requests()
        fake.update("leads", leads[0], title="by id")
        fake.archive("leads", leads[1])
        for note in fake.records("notes")[:2]:
            fake.update("notes", note["id"], content="by id")
        fake.wait_webhooks(WAIT)
        assert running.stop() == 0  # applies the 4 journaled events at once
        few = [r.path for r in fake.requests if r.method == "GET"]
    assert sorted(p.rsplit("/", 1)[0] for p in few) == ["/v1/leads"] * 2 + ["/v1/notes"] * 2
    assert table_rows(syncer, "leads")[leads[1]]["is_archived"] is True
    with listening(syncer, entities="leads,notes", latency_seconds=3600) as running:
        fake.reset_requests()
        for note in fake.records("notes")[:12]:
            fake.update("notes", note["id"], content="through the list")
        fake.wait_webhooks(WAIT)
        assert running.stop() == 0
        many = [r.path for r in fake.requests if r.method == "GET"]
    assert many == ["/v1/notes"]
    notes = table_rows(syncer, "notes")
    assert all(notes[n["id"]]["content"] == "through the list" for n in fake.records("notes")[:12])


def _streams_state(syncer: Syncer) -> Any:
    state = syncer.pipeline().state["sources"]["pipedrive"]["resources"]
    return {name: state[name]["streams"] for name in ("deals", "persons")}


def test_retried_duplicated_and_reordered_deliveries_converge(syncer: Syncer) -> None:
    fake = syncer.fake
    with listening(syncer, entities="deals,persons") as running:
        fake.webhooks.add_fault(WebhookFault("duplicate", times=None))
        fake.webhooks.add_fault(WebhookFault("fail", attempt=1, times=4))  # retried later
        fake.webhooks.pause()
        deal = fake.records("deals", archived=False)[0]["id"]
        for version in range(5):
            fake.update("deals", deal, title=f"version {version}")
        person = fake.records("persons")[0]["id"]
        fake.update("persons", person, name="About to go")
        fake.delete("persons", person)
        fake.webhooks.resume("reverse")  # the newest first: the oldest state arrives last
        running.applied(fake)
        delivered = fake.webhook_deliveries(state="delivered")
        assert any(a.duplicate for d in delivered for a in d.attempts)
        assert any(len(d.attempts) > 1 for d in delivered)
        journaled = sum(b["events"] for b in running.lines("batch_applied"))
        assert journaled == len(delivered)  # each event once, however often it came
    assert table_rows(syncer, "deals")[deal]["title"] == "version 4"
    assert table_rows(syncer, "persons")[person]["is_deleted"] is True


def test_the_poll_catches_what_webhooks_missed(syncer: Syncer) -> None:
    fake = syncer.fake
    with listening(syncer, entities="deals", poll_interval=timedelta(seconds=0.5)) as running:
        fake.webhooks.add_fault(WebhookFault("fail", times=None))  # every delivery fails
        deal = fake.records("deals", archived=False)[0]["id"]
        fake.update("deals", deal, title="never delivered")
        fake.wait_webhooks(WAIT)
        assert fake.webhook_deliveries(state="dropped")
        polls = running.listener.status.polls
        with running.listener._progress:  # two polls: the second began after the change
            assert running.listener._progress.wait_for(
                lambda: running.listener.status.polls >= polls + 2, WAIT
            )
    assert table_rows(syncer, "deals")[deal]["title"] == "never delivered"


# -- the receiver ------------------------------------------------------------------------------
def _body(entity: str = "deal", action: str = "change", entity_id: Any = "1") -> dict[str, Any]:
    return {
        "meta": {
            "action": action,
            "entity": entity,
            "entity_id": entity_id,
            "id": f"ev-{entity}-{entity_id}",
            "version": "2.0",
        },
        "data": {"id": entity_id},
        "previous": None,
    }


def test_bad_requests_are_refused_cleanly_and_the_receiver_stays_up(syncer: Syncer) -> None:
    fake = syncer.fake
    with listening(syncer, entities="deals,persons", subscribe=False) as running:
        assert running.post(_body(), auth=None).status_code == 401
        refused = running.post(_body(), auth=(HOOK_USER, "wrong"))
        assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
        assert running.post(b"{not json").status_code == 400
        assert running.post({"data": {}}).status_code == 400  # no meta: not webhooks v2
        assert running.post(_body(entity_id="not-a-number")).status_code == 400
        assert running.post(b"x" * (1024 * 1024 + 1)).status_code == 413
        assert (
            requests.post(
                running.url + "elsewhere", data=b"{}", auth=(HOOK_USER, HOOK_PASSWORD), timeout=30
            ).status_code
            == 404
        )
        assert requests.get(running.url, timeout=30).status_code == 405
        for method in ("PUT", "PATCH", "DELETE"):
            other = requests.request(method, running.url, data=b"{}", timeout=30)
            assert other.status_code == 405 and other.headers["Allow"] == "POST"
            assert "error" in other.json()
        for unknown in ("deal_installment", "board", "project"):  # not known, or not synced
            answer = running.post(_body(entity=unknown))
            assert answer.status_code == 200 and answer.json()["ignored"] is True
        ignored = running.lines("event_ignored")
        assert [i["object"] for i in ignored] == ["deal_installment", "board", "project"]
        assert {r["status"] for r in running.lines("request_refused")} == {400, 401, 404, 405, 413}
        assert "Traceback" not in running.log.getvalue()
        health = running.health()
        assert health.status_code == 200 and health.json()["pending_events"] == 0
        deal = fake.records("deals", archived=False)[0]["id"]
        fake.update("deals", deal, title="still applied")
        fake.webhooks.register(
            running.url, "*", "deal", http_auth_user=HOOK_USER, http_auth_password=HOOK_PASSWORD
        )
        fake.update("deals", deal, title="applied after the bad requests")
        running.applied(fake)
    assert table_rows(syncer, "deals")[deal]["title"] == "applied after the bad requests"


def test_an_event_the_journal_cannot_store_is_refused_with_503_and_logged(
    syncer: Syncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with listening(syncer, entities="deals", subscribe=False) as running:
        journal = running.listener._journal
        assert journal is not None

        def disk_full(*_: Any) -> Any:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(journal, "append", disk_full)
        answer = running.post(_body())
        assert answer.status_code == 503 and "retry later" in answer.json()["error"]
        refused = running.lines("request_refused")
        assert [r["status"] for r in refused] == [503]
        assert "No space left on device" in refused[0]["reason"]
        assert running.health().json()["pending_events"] == 0


def test_healthz_is_503_until_caught_up_then_reports_progress(syncer: Syncer) -> None:
    fake = syncer.fake
    release = threading.Event()
    held = threading.Event()

    def hold(record: RequestRecord) -> None:
        if record.path == "/api/v2/deals" and not held.is_set():
            held.set()
            release.wait(WAIT)

    fake.on_request(hold)
    try:
        with listening(syncer, entities="deals", ready=False) as running:
            assert held.wait(WAIT)
            starting = running.health()
            assert starting.status_code == 503
            assert starting.json()["status"] == "starting"
            release.set()
            assert running.listener.ready.wait(WAIT)
            fake.update("deals", fake.records("deals", archived=False)[0]["id"], title="seen")
            running.applied(fake)
            report = running.health()
            assert report.status_code == 200
            body = report.json()
            assert body["status"] == "ready" and body["pending_events"] == 0
            assert body["lag_seconds"] == 0.0 and body["events_applied"] == 1
            assert body["last_poll"] and body["last_applied_event_time"] and body["last_batch"]
    finally:
        release.set()
        fake.on_request(None)


# -- the warehouse while listening ---------------------------------------------------------------
def _env(tmp_path: Path, fake: FakePipedrive, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt-data"),
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=fake.base_url,
        PIPEDRIVE_WEBHOOK_USER=HOOK_USER,
        PIPEDRIVE_WEBHOOK_PASSWORD=HOOK_PASSWORD,
    )
    env.update(extra)
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_run_exits_75_while_listen_holds_the_warehouse(syncer: Syncer, tmp_path: Path) -> None:
    env = _env(tmp_path, syncer.fake)
    with listening(syncer, entities="deals"):
        proc = _cli(["run", "--entities", "deals"], env, tmp_path)
        second = _cli(["listen", "--entities", "deals", "--port", "0"], env, tmp_path)
    assert proc.returncode == 75, proc.stderr
    assert "pipedrive-sync listen` keeps this warehouse current" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert second.returncode == 75, second.stderr
    after = _cli(["run", "--entities", "deals"], env, tmp_path)  # the listener has stopped
    assert after.returncode == 0, after.stderr


def test_readers_query_the_warehouse_while_events_are_applied(
    syncer: Syncer, tmp_path: Path
) -> None:
    fake = syncer.fake
    env = _env(tmp_path, fake)
    deals = [d["id"] for d in fake.records("deals", archived=False)][:30]
    with listening(syncer, entities="deals,persons") as running:
        done = threading.Event()

        def keep_changing() -> None:
            for n, deal in enumerate(deals):
                fake.update("deals", deal, title=f"busy {n}")
                if n % 3 == 0:
                    running.listener.wait_applied(WAIT)  # let batches run between the reads
            done.set()

        writer = threading.Thread(target=keep_changing)
        writer.start()
        reads = []
        while not done.is_set() or len(reads) < 3:
            reads.append(_cli(["query", "SELECT count(*) FROM deals"], env, tmp_path))
        writer.join(WAIT)
        status = _cli(["status"], env, tmp_path)
        running.applied(fake)
    assert all(r.returncode == 0 for r in reads), [r.stderr for r in reads]
    assert status.returncode == 0, status.stderr
    assert {table_rows(syncer, "deals")[d]["title"] for d in deals} == {
        f"busy {n}" for n in range(30)
    }


# -- stopping, crashing, restarting ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """`pipedrive-sync listen` in a process of its own (JSON log on stdout)."""

    def __init__(
        self,
        tmp_path: Path,
        fake: FakePipedrive,
        port: int,
        latency_seconds: float,
        *args: str,
        log_format: str = "json",
    ) -> None:
        self.port = port
        env = _env(tmp_path, fake, SOURCES__PIPEDRIVE__WEBHOOK_LATENCY_SECONDS=str(latency_seconds))
        self.out = open(tmp_path / f"listen-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*CLI, "listen", "--port", str(port), "--log-format", log_format, *args],
            env=env,
            cwd=tmp_path,
            stdout=self.out,
            stderr=subprocess.PIPE,
            text=True,
        )

    def health(self) -> dict[str, Any] | None:
        try:
            answer = requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        except requests.ConnectionError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def wait_health(self, condition: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            body = self.health()
            if body is not None and condition(body):
                return body
            time.sleep(0.05)
        raise AssertionError(f"no such health: {self.log()[-2000:]}")

    def log(self) -> str:
        self.out.flush()
        self.out.seek(0)
        return self.out.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        self.out.close()


def _hidden_changes(fake: FakePipedrive) -> dict[str, Any]:
    """Changes an incremental poll cannot see (deletions of records that leave the lists),
    plus one it can."""
    changes = {
        "person": fake.records("persons")[0]["id"],
        "lead": fake.records("leads", archived=False)[0]["id"],
        "note": fake.records("notes")[0]["id"],
        "deal": fake.records("deals", archived=False)[0]["id"],
    }
    fake.delete("persons", changes["person"])
    fake.delete("leads", changes["lead"])
    fake.delete("notes", changes["note"])
    fake.update("deals", changes["deal"], title="after the crash")
    return changes


def _assert_hidden_changes(syncer: Syncer, changes: dict[str, Any]) -> None:
    assert table_rows(syncer, "persons")[changes["person"]]["is_deleted"] is True
    assert table_rows(syncer, "leads")[changes["lead"]]["is_deleted"] is True
    assert table_rows(syncer, "notes")[changes["note"]]["is_deleted"] is True
    assert table_rows(syncer, "deals")[changes["deal"]]["title"] == "after the crash"


def _reconciled(syncer: Syncer) -> None:
    """Two runs, the second listing every id: the next id listing is a day away, so a poll
    alone cannot find the deletions (only the journal knows them)."""
    assert syncer.run(entities=ENTITIES).code == 0
    assert syncer.run(entities=ENTITIES, reconcile=True).code == 0


def _before_a_kill(syncer: Syncer) -> tuple[FakePipedrive, int]:
    """Fast webhook retries, a reconciled warehouse, and a port for the listener processes."""
    _fast_webhooks(syncer.fake)
    _reconciled(syncer)
    return syncer.fake, _free_port()


def test_kill_9_loses_nothing_acknowledged_and_a_restart_converges(
    syncer: Syncer, tmp_path: Path
) -> None:
    fake, port = _before_a_kill(syncer)
    url = f"http://127.0.0.1:{port}/pipedrive/hooks"
    first = Process(tmp_path, fake, port, 3600, "--entities", ENTITIES, "--public-url", url)
    try:
        first.wait_health(lambda h: h["status"] == "ready")
        registered = {w.id for w in fake.webhooks.registrations()}
        changes = _hidden_changes(fake)
        fake.wait_webhooks(WAIT)  # every event acknowledged: journaled, not applied yet
        assert first.wait_health(lambda h: h["pending_events"] == 4)["events_applied"] == 0
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(WAIT)
    finally:
        first.close()
    with next(tmp_path.rglob("journal.jsonl")).open("ab") as journal:
        journal.write(b'{"seq": 99, "event": {"ent')  # a write the kill cut short
    second = Process(tmp_path, fake, port, 0.05, "--entities", ENTITIES, "--public-url", url)
    try:
        second.wait_health(lambda h: h["events_applied"] == 4 and h["pending_events"] == 0)
        assert {w.id for w in fake.webhooks.registrations()} == registered  # reused
        replayed = [
            line
            for line in map(orjson.loads, second.log().splitlines())
            if line.get("event") == "journal_replayed"
        ]
        assert [(r["events"], r["torn_lines"]) for r in replayed] == [(4, 1)]
    finally:
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(WAIT) == 0
        second.close()
    _assert_hidden_changes(syncer, changes)


def test_kill_9_in_the_middle_of_a_batch_converges_after_a_restart(
    syncer: Syncer, tmp_path: Path
) -> None:
    fake, port = _before_a_kill(syncer)
    url = f"http://127.0.0.1:{port}/"
    held, release = threading.Event(), threading.Event()

    def hold(record: RequestRecord) -> None:
        if "ids" in record.query and not held.is_set():
            held.set()
            release.wait(WAIT)

    first = Process(tmp_path, fake, port, 0.05, "--entities", ENTITIES, "--public-url", url)
    try:
        first.wait_health(lambda h: h["status"] == "ready")
        fake.on_request(hold)
        changes = _hidden_changes(fake)
        assert held.wait(WAIT)  # a batch is reading the changed records
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(WAIT)
    finally:
        release.set()
        fake.on_request(None)
        first.close()
    fake.wait_webhooks(WAIT)  # what could not be delivered meanwhile was retried or dropped
    second = Process(tmp_path, fake, port, 0.05, "--entities", ENTITIES, "--public-url", url)
    try:
        second.wait_health(lambda h: h["pending_events"] == 0 and h["events_applied"] >= 1)
    finally:
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(WAIT) == 0
        second.close()
    _assert_hidden_changes(syncer, changes)


@pytest.mark.parametrize(
    ("signum", "log_format", "drained"),
    [
        (signal.SIGTERM, "json", '"event": "journal_drained", "applied": 4, "left": 0'),
        (signal.SIGINT, "text", "stopping: applied 4 journaled events\n"),
    ],
)
def test_sigterm_and_ctrl_c_apply_what_is_journaled_and_exit_0(
    syncer: Syncer, tmp_path: Path, signum: int, log_format: str, drained: str
) -> None:
    fake = syncer.fake
    _fast_webhooks(fake)
    _reconciled(syncer)
    port = _free_port()
    listener = Process(tmp_path, fake, port, 3600, "--entities", ENTITIES, log_format=log_format)
    try:
        listener.wait_health(lambda h: h["status"] == "ready")
        fake.webhooks.register(
            f"http://127.0.0.1:{port}/",
            "*",
            "*",
            http_auth_user=HOOK_USER,
            http_auth_password=HOOK_PASSWORD,
        )
        changes = _hidden_changes(fake)
        fake.wait_webhooks(WAIT)
        listener.wait_health(lambda h: h["pending_events"] == 4)
        listener.proc.send_signal(signum)
        assert listener.proc.wait(WAIT) == 0
        assert listener.proc.stderr is not None
        assert listener.proc.stderr.read() == ""
        log = listener.log()
        assert drained in log
        if log_format == "text":
            assert "batch applied: 4 events (deal 1, lead 1, note 1, person 1)" in log
    finally:
        listener.close()
    _assert_hidden_changes(syncer, changes)


# -- configuration -------------------------------------------------------------------------------
def test_without_webhook_credentials_it_exits_78(fake: FakePipedrive, tmp_path: Path) -> None:
    env = _env(tmp_path, fake)
    del env["PIPEDRIVE_WEBHOOK_PASSWORD"]
    proc = _cli(["listen", "--port", "0"], env, tmp_path)
    assert proc.returncode == 78
    assert "PIPEDRIVE_WEBHOOK_PASSWORD" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_webhook_password_never_appears_in_logs(syncer: Syncer, tmp_path: Path) -> None:
    fake = syncer.fake
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    with listening(syncer, entities="deals", port=port, public_url=url) as running:
        fake.update("deals", fake.records("deals", archived=False)[0]["id"], title="x")
        running.applied(fake)
        assert running.lines("webhooks_registered")
        log = running.log.getvalue()
    assert HOOK_PASSWORD not in log and TOKEN not in log


# -- registering the webhooks -------------------------------------------------------------------
def _client(fake: FakePipedrive) -> Any:
    from sources.pipedrive.http import ApiTokenAuth, PipedriveClient

    return PipedriveClient(fake.base_url, ApiTokenAuth(TOKEN), FAST_HTTP_SETTINGS)


def _wanted(
    url: str, objects: tuple[str, ...] = ("deal", "person"), password: str = HOOK_PASSWORD
) -> Any:
    from sources.pipedrive.webhooks import Wanted

    return Wanted(
        url=url, objects=objects, user=HOOK_USER, password=password, name="pipedrive-sync test"
    )


def test_registration_reuses_its_own_removes_its_stale_ones_and_never_touches_others(
    fake: FakePipedrive,
) -> None:
    from sources.pipedrive.webhooks import register_webhooks

    url = "https://sync.example.com/pipedrive"
    others = [
        fake.webhooks.register("https://elsewhere.example.com/a", "*", "deal"),
        fake.webhooks.register("https://elsewhere.example.com/b", "create", "person"),
    ]
    stale_object = fake.webhooks.register(
        url, "*", "lead", http_auth_user=HOOK_USER, http_auth_password=HOOK_PASSWORD
    )
    client = _client(fake)
    first = register_webhooks(client, _wanted(url))
    assert sorted(first.objects) == ["deal", "person"] and len(first.created) == 2
    assert first.removed == [stale_object.id] and first.kept == []
    again = register_webhooks(client, _wanted(url))  # a restart: nothing changes
    assert (
        again.created == [] and again.removed == [] and sorted(again.kept) == sorted(first.created)
    )
    mine = [w for w in fake.webhooks.registrations() if w.subscription_url == url]
    assert {
        (w.event_object, w.event_action, w.version, w.http_auth_user, w.http_auth_password)
        for w in mine
    } == {
        ("deal", "*", "2.0", HOOK_USER, HOOK_PASSWORD),
        ("person", "*", "2.0", HOOK_USER, HOOK_PASSWORD),
    }
    duplicate = fake.webhooks.register(
        url, "*", "deal", http_auth_user=HOOK_USER, http_auth_password=HOOK_PASSWORD
    )
    changed = register_webhooks(client, _wanted(url, password="a-new-password"))  # rotated
    assert set(changed.removed) == {*first.created, duplicate.id} and len(changed.created) == 2
    assert {w.id for w in fake.webhooks.registrations() if w.subscription_url != url} == {
        w.id for w in others
    }


def test_a_registration_whose_deliveries_failed_is_replaced_not_reused(
    fake: FakePipedrive,
) -> None:
    from sources.pipedrive.webhooks import register_webhooks

    _fast_webhooks(fake)
    url = f"http://127.0.0.1:{_free_port()}/pipedrive"  # nobody listens: deliveries fail
    client = _client(fake)
    first = register_webhooks(client, _wanted(url))
    by_object = {w.event_object: w.id for w in fake.webhooks.registrations()}
    fake.update("deals", fake.records("deals", archived=False)[0]["id"], title="while down")
    fake.wait_webhooks(WAIT)
    again = register_webhooks(client, _wanted(url))
    assert again.removed == [by_object["deal"]] and len(again.created) == 1
    assert again.kept == [by_object["person"]]  # never failed: reused
    assert set(again.ids) - set(first.created) == set(again.created)


def _ban_scenario(syncer: Syncer) -> tuple[int, str, list[int]]:
    """Bans that last Pipedrive's 30 minutes even under the tests' fast webhook clock; a port
    and public URL for the listener; 11 deals to change."""
    syncer.fake.webhooks.configure(ban_seconds=1800.0 / 0.001)
    port = _free_port()
    deals = [d["id"] for d in syncer.fake.records("deals", archived=False)[:11]]
    return port, f"http://127.0.0.1:{port}/pipedrive/hooks", deals


def _delivered(fake: FakePipedrive, deal: int) -> bool:
    ours = [
        d
        for d in fake.webhook_deliveries(entity="deal")
        if d.body["meta"]["entity_id"] == str(deal)
    ]
    return bool(ours) and ours[-1].state == "delivered"


def test_a_restart_after_deliveries_failed_while_down_gets_the_events_again(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    port, url, deals = _ban_scenario(syncer)
    with listening(syncer, public_url=url, port=port):
        pass
    for n, deal in enumerate(deals[:10]):  # 10 failed first attempts: Pipedrive bans the hook
        fake.update("deals", deal, title=f"while down {n}")
    fake.wait_webhooks(WAIT)
    assert any(w.bans for w in fake.webhooks.registrations())
    with listening(syncer, public_url=url, port=port) as running:
        fake.update("deals", deals[10], title="after the restart")
        running.applied(fake)
        assert _delivered(fake, deals[10])
    titles = {i: r["title"] for i, r in table_rows(syncer, "deals").items()}
    assert titles[deals[10]] == "after the restart"
    assert [titles[d] for d in deals[:10]] == [f"while down {n}" for n in range(10)]


def test_a_webhook_banned_while_listening_is_replaced_before_the_next_poll(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    port, url, deals = _ban_scenario(syncer)
    with listening(
        syncer, public_url=url, port=port, poll_interval=timedelta(seconds=1)
    ) as running:
        fake.webhooks.add_fault(
            WebhookFault(kind="fail", entity="deal", attempt=1, times=10, status=502)
        )
        for n, deal in enumerate(deals[:10]):
            fake.update("deals", deal, title=f"refused {n}")
        fake.wait_webhooks(WAIT)
        assert any(w.bans for w in fake.webhooks.registrations())
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not any(
            line["created"] for line in running.lines("webhooks_registered")[1:]
        ):
            time.sleep(0.1)
        fake.update("deals", deals[10], title="after the ban")
        running.applied(fake)
        assert _delivered(fake, deals[10])


def test_registration_respects_the_40_webhooks_per_user_limit(fake: FakePipedrive) -> None:
    from sources.pipedrive.webhooks import WebhookSetupError, register_webhooks

    url = "https://sync.example.com/pipedrive"
    for n in range(37):
        fake.webhooks.register(f"https://elsewhere.example.com/{n}", "*", "deal")
    client = _client(fake)
    squeezed = register_webhooks(client, _wanted(url, ("deal", "person", "lead", "note")))
    assert squeezed.objects == ["*"] and len(squeezed.created) == 1  # 37 + 4 > 40: one for all
    assert len(fake.webhooks.registrations()) == 38
    for n in range(2):
        fake.webhooks.register(f"https://more.example.com/{n}", "*", "deal")
    with pytest.raises(WebhookSetupError, match="40 webhooks per user"):
        register_webhooks(client, _wanted("https://another.example.com/", ("deal",)))
    assert len(fake.webhooks.registrations()) == 40


# -- PostgreSQL ----------------------------------------------------------------------------------
@pytest.mark.postgres
def test_listen_keeps_a_postgresql_warehouse_current_and_holds_it(
    postgres: Any, syncer: Syncer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.database("listen")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    fake = syncer.fake
    deal = fake.records("deals", archived=False)[0]["id"]
    persons = [p["id"] for p in fake.records("persons")[:3]]
    with listening(syncer, entities="deals,persons", destination="postgres") as running:
        fake.update("deals", deal, title="Postgres sees it")
        fake.delete("persons", persons[0])
        fake.merge("persons", persons[1], into=persons[2], name="Survivor")
        running.applied(fake)
        while_listening = _cli(
            ["run", "--destination", "postgres", "--entities", "deals"],
            _env(tmp_path, fake, DESTINATION__POSTGRES__CREDENTIALS=url),
            tmp_path,
        )
    assert while_listening.returncode == 75, while_listening.stderr
    assert "pipedrive-sync listen pid" in while_listening.stderr
    assert pg_rows(url, f"SELECT title FROM pipedrive.deals WHERE id = {deal}") == [
        ("Postgres sees it",)
    ]
    flags = dict(pg_rows(url, "SELECT id, coalesce(is_deleted, false) FROM pipedrive.persons"))
    assert (flags[persons[0]], flags[persons[1]], flags[persons[2]]) == (True, True, False)
    assert pg_rows(url, f"SELECT name FROM pipedrive.persons WHERE id = {persons[2]}") == [
        ("Survivor",)
    ]
