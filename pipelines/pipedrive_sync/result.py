"""What a run did: rendered by the CLI summary, written to `sync_runs`, inspected by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sources.pipedrive import RunContext
from sources.pipedrive.backfill import BackfillOutcome
from sources.pipedrive.http import RequestMetrics
from sources.pipedrive.identity import Company

from . import exit_codes


@dataclass
class RunResult:
    """What a run did; rendered by the CLI summary and inspected by tests."""

    code: int = exit_codes.OK
    message: str = ""
    ctx: RunContext | None = None
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    seconds: float = 0.0
    chunks: int = 0
    vanished: dict[str, int] = field(default_factory=dict)
    labels_rewritten: int = 0
    load_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a load package set aside
    pipeline_name: str = ""
    backfill: BackfillOutcome | None = None  # what --backfill-history did this run

    @property
    def reports(self) -> list[Any]:
        return self.ctx.ordered_reports() if self.ctx else []

    @property
    def company(self) -> Company | None:
        return self.ctx.company if self.ctx else None
