"""`pipedrive-sync listen` as an operator sees it: what its log says while Pipedrive misbehaves.

Written from the README's "Near-real-time" section ("Logs like `run`'s", `retrying`), with the
in-process listener of `test_listen` against the fake Pipedrive.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from conftest import FAST_HTTP, Syncer, run_cli
from test_listen import listening

from sources.pipedrive_fake.server import FaultRule


def test_a_batch_whose_request_is_retried_logs_retrying_while_it_waits(syncer: Syncer) -> None:
    """Like `run`: a JSON `retrying` event names the request being retried as soon as it
    fails, not only once the batch gave up after every attempt (or never, when a retry
    succeeds)."""
    fake = syncer.fake
    slow_retries = replace(FAST_HTTP, backoff_base=2.0, backoff_max=2.0, max_attempts=4)
    with listening(syncer, entities="deals", http=slow_retries) as running:
        fake.add_fault(FaultRule(path=r"^/api/v2/deals$", status=503, times=2))
        fake.update("deals", 1, title="changed while Pipedrive answers 503")
        running.applied(fake)
        retrying = running.lines("retrying")
        applied = running.lines("batch_applied")
    assert applied and applied[-1]["rows_by_entity"] == {"deals": 1}
    problems = [r.get("problem", "") for r in retrying]
    assert any("deals" in p and "503" in p for p in problems), retrying


def test_listen_help_says_where_events_arrive_without_a_public_url(tmp_path: Path) -> None:
    """`--public-url`'s help ends with its default: rich must not take it for markup."""
    env = {**os.environ, "COLUMNS": "200", "DLT_DATA_DIR": str(tmp_path / "dlt")}
    proc = run_cli(["listen", "--help"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "receives events at its path [default: none, events at /]." in proc.stdout
