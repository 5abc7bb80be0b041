"""`pipedrive-sync listen` as an operator sees it: what its log says while Pipedrive misbehaves.

Written from the README's "Near-real-time" section ("Logs like `run`'s", `retrying`), with the
in-process listener of `test_listen` against the fake Pipedrive.
"""

from __future__ import annotations

from dataclasses import replace

from conftest import FAST_HTTP, Syncer
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
