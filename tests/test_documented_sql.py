"""Every SQL statement in README.md and docs/ runs as written on the demo warehouse.

`pipedrive-sync demo` builds the warehouse the README tells readers to try things on; each
statement of each ```sql block (and each `pipedrive-sync query "…"` of the shell examples)
runs on it and returns rows. The worked questions of docs/tables.md are portable SQL: they
also run on the same demo account synced into PostgreSQL and give the same answers.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN
from pg_server import Server

from pipelines.pipedrive_sync.docs import QUESTIONS
from pipelines.pipedrive_sync.warehouse import open_warehouse

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]
QUERY_COMMAND = re.compile(r'pipedrive-sync query (?:(?:-f|--format) \w+ )?"([^"]+)"')


def _statements(sql: str) -> list[str]:
    """The statements of a block (they end with `;` at the end of a line)."""
    parts = re.split(r";\s*$", sql, flags=re.M)
    return [p.strip() for p in parts if re.sub(r"--[^\n]*", "", p).strip()]


def documented_sql() -> list[tuple[str, str]]:
    """(where, statement) for every SQL statement in the documents."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        name = document.relative_to(ROOT)
        for n, block in enumerate(re.findall(r"```sql\n(.*?)```", text, re.S), 1):
            for m, statement in enumerate(_statements(block), 1):
                found.append((f"{name} sql block {n} #{m}", statement))
        for n, block in enumerate(re.findall(r"```bash\n(.*?)```", text, re.S), 1):
            for m, statement in enumerate(QUERY_COMMAND.findall(block), 1):
                found.append((f"{name} bash block {n} query #{m}", statement))
    return found


DOCUMENTED = documented_sql()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo warehouse, made the way the README says (`pipedrive-sync demo`)."""
    work = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env["DLT_DATA_DIR"] = str(work / "dlt-data")
    proc = subprocess.run(
        [*CLI, "demo", "--quiet"], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return work / "demo.duckdb"


def test_the_documents_have_sql_to_check() -> None:
    where = {w.split(" ")[0] for w, _ in DOCUMENTED}
    assert where == {"README.md", "docs/tables.md"}
    assert len(DOCUMENTED) >= 20


@pytest.mark.parametrize(("where", "sql"), DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_documented_sql_runs_on_the_demo_and_finds_rows(demo: Path, where: str, sql: str) -> None:
    with open_warehouse(demo) as connection:
        rows = connection.execute(sql).fetchall()
    assert rows, f"{where}: no rows on the demo warehouse:\n{sql}"


# -- the worked questions on PostgreSQL ------------------------------------------------------------
@pytest.fixture(scope="module")
def both(
    demo: Path, postgres: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """The demo account synced into PostgreSQL too, history backfilled like the demo does."""
    from pipelines.pipedrive_sync.cli import DEMO_TOKEN
    from pipelines.pipedrive_sync.runner import run_sync
    from pipelines.pipedrive_sync.settings import resolve
    from sources.pipedrive_fake import FakePipedrive

    work = tmp_path_factory.mktemp("demo-postgres")
    url = postgres.database("documented_sql")
    scale = {"deals": 500, "persons": 250, "organizations": 100, "activities": 500}
    with (
        pytest.MonkeyPatch.context() as patch,
        FakePipedrive(token=DEMO_TOKEN, seed=42, scale=scale, deal_stories=True) as fake,
    ):
        patch.setenv("DLT_DATA_DIR", str(work / "dlt-data"))
        patch.setenv("PIPEDRIVE_API_TOKEN", DEMO_TOKEN)
        patch.setenv("PIPEDRIVE_BASE_URL", fake.base_url)
        patch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
        settings = resolve(
            destination="postgres", backfill_history=True, backfill_max_tokens=20_000
        )
        assert run_sync(settings).code == 0
        yield demo, url
    assert TOKEN  # the test token never reaches the demo's account


def _plain(value: Any) -> Any:
    """A value as both databases' answers can be compared."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _expected(value: Any) -> Any:
    """Sums of doubles differ in their last digits with the order of addition."""
    plain = _plain(value)
    return pytest.approx(plain, rel=1e-9) if isinstance(plain, float) else plain


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(QUESTIONS))
def test_the_worked_questions_give_the_same_answers_in_postgres(
    both: tuple[Path, str], name: str
) -> None:
    import psycopg2

    demo, url = both
    sql = QUESTIONS[name][1]
    with open_warehouse(demo) as connection:
        expected = connection.execute(sql).fetchall()
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO pipedrive")
            cursor.execute(sql)
            got = cursor.fetchall()
    finally:
        connection.close()
    assert expected, f"{name}: no rows"
    assert [[_plain(v) for v in row] for row in got] == [
        [_expected(v) for v in row] for row in expected
    ]
