"""Which Pipedrive company a warehouse holds, and which sync state belongs to it.

A warehouse (one dataset of one destination) holds one company. Its `sync_identity` table, one
row written by the first run that loads into the dataset, records the company (id, domain, name
from `/v1/users/me`) and the dlt pipeline name whose state (cursors, pinned column names,
cadences) lives in the dataset. Every run compares the company its credentials belong to with
the recorded one before it writes anything: another company's run stops with `WrongCompany`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .http.errors import PipedriveError

IDENTITY_TABLE = "sync_identity"
DEFAULT_PIPELINE_NAME = "pipedrive"

IDENTITY_COLUMNS: list[dict[str, Any]] = [
    {"name": "company_id", "data_type": "bigint", "nullable": False},
    {"name": "company_domain", "data_type": "text"},
    {"name": "company_name", "data_type": "text"},
    {"name": "pipeline_name", "data_type": "text", "nullable": False},
    {"name": "claimed_at", "data_type": "timestamp"},
]


@dataclass(frozen=True)
class Company:
    """A Pipedrive company, as `/v1/users/me` describes the user's."""

    id: int
    domain: str = ""
    name: str = ""

    @classmethod
    def from_me(cls, data: Mapping[str, Any]) -> Company:
        """From the `data` object of `/v1/users/me`."""
        company_id = data.get("company_id")
        if isinstance(company_id, bool) or not isinstance(company_id, int | str):
            raise ValueError("/v1/users/me names no company_id")
        return cls(
            id=int(company_id),
            domain=str(data.get("company_domain") or ""),
            name=str(data.get("company_name") or ""),
        )

    def __str__(self) -> str:
        where = f"{self.domain}.pipedrive.com, " if self.domain else ""
        label = self.name or "company"
        return f"{label} ({where}id {self.id})"


@dataclass(frozen=True)
class Identity:
    """What a warehouse records about itself."""

    company: Company
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    claimed_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Identity:
        return cls(
            company=Company(
                id=int(row["company_id"]),
                domain=str(row.get("company_domain") or ""),
                name=str(row.get("company_name") or ""),
            ),
            pipeline_name=str(row.get("pipeline_name") or DEFAULT_PIPELINE_NAME),
            claimed_at=row.get("claimed_at"),
        )

    def row(self) -> dict[str, Any]:
        return {
            "company_id": self.company.id,
            "company_domain": self.company.domain,
            "company_name": self.company.name,
            "pipeline_name": self.pipeline_name,
            "claimed_at": self.claimed_at or datetime.now(UTC),
        }


class WrongCompany(PipedriveError):
    """The credentials belong to another company than the one the warehouse holds: a
    configuration error (exit 78)."""

    exit_code = 78


def check_company(recorded: Identity | None, company: Company, where: str) -> None:
    """Raise `WrongCompany` unless the warehouse is new or holds `company`."""
    if recorded is None or recorded.company.id == company.id:
        return
    raise WrongCompany(
        f"{where} holds Pipedrive company {recorded.company}, but the credentials belong to"
        f" {company}; nothing was written. Sync each company into its own dataset (--dataset)"
        " or DuckDB file (--duckdb-path)"
    )


def identity_to_write(
    recorded: Identity | None, company: Company, pipeline_name: str
) -> Identity | None:
    """The identity row this run must write: a claim, an update (the company's domain or name
    changed), or None when the recorded one is current."""
    claimed = recorded.claimed_at if recorded is not None else None
    current = Identity(company, pipeline_name, claimed)
    if recorded is not None and recorded == current:
        return None
    return current
