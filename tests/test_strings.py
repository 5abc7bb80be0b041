"""Any string Pipedrive can send loads, on the columnar and the exact path, into any warehouse.

Strings a warehouse cannot hold are repaired where the JSON comes in (`http.jsonbody`): lone
surrogates (half of a UTF-16 pair, which JSON escapes as `\\ud800`) and NUL (PostgreSQL rejects
it in text and jsonb) become U+FFFD; everything else arrives byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from conftest import FAST_HTTP, Syncer
from pg_server import Server

from sources.pipedrive import source as source_module
from sources.pipedrive.columnar import build_columnar
from sources.pipedrive_fake import FakePipedrive
from sources.pipedrive_fake.server import FaultRule

LONG = "ü€😀x" * 50_000  # 200,000 characters
# kind -> (the string Pipedrive sends, the string the warehouse holds)
STRINGS: dict[str, tuple[str, str]] = {
    "lone high surrogate": ("a\ud800b", "a\ufffdb"),
    "lone low surrogate": ("\udc00 at the start", "\ufffd at the start"),
    "both halves, swapped": ("x\ude00\ud83dy", "x\ufffd\ufffdy"),
    "NUL": ("a\x00b\x00", "a\ufffdb\ufffd"),
    "line and paragraph separators": ("a\u2028b\u2029c", "a\u2028b\u2029c"),
    "BOM inside a string": ("\ufeffstart and \ufeff inside", "\ufeffstart and \ufeff inside"),
    "200k characters": (LONG, LONG),
    "RTL and emoji": (
        "שלום עולם 👋🏽 مرحبا 👨‍👩‍👧‍👦 \u202eevil\u202c end",
        "שלום עולם 👋🏽 مرحبا 👨‍👩‍👧‍👦 \u202eevil\u202c end",
    ),
    "escapes that look like surrogates": ("\\ud800 and \\\\udc00", "\\ud800 and \\\\udc00"),
}
PATHS = {"columnar": True, "exact": False}
# small pages: the planted records sit on pages fetched after the first page made the column
# plan, which the columnar path waits for
SMALL_PAGES = replace(FAST_HTTP, page_limit=5)


@pytest.fixture
def columnar_tables(monkeypatch: pytest.MonkeyPatch) -> list[pa.Table | None]:
    """Every table the columnar path built (None: it declined the page)."""
    built: list[pa.Table | None] = []

    def spy(*args: Any, **kwargs: Any) -> pa.Table | None:
        table = build_columnar(*args, **kwargs)
        built.append(table)
        return table

    monkeypatch.setattr(source_module, "build_columnar", spy)
    return built


def _column(syncer: Syncer, key: str) -> str:
    rows = syncer.query(f"SELECT column_name FROM custom_fields WHERE field_key = '{key}'")
    column: str = rows[0][0]
    return column


def _plant(fake: FakePipedrive, sent: str) -> tuple[int, str, int]:
    """The string in a deal's title and a custom text field, and all over a person's
    json `emails` (values and keys); returns (deal id, custom field key, person id)."""
    deal = fake.records("deals")[0]["id"]
    varchar = fake.field_key_for_type("deals", "varchar")
    fake.update("deals", deal, title=sent, custom_fields={varchar: sent})
    person = fake.records("persons")[0]["id"]
    emails = [{"value": sent, "primary": True, "label": "work"}, {sent: [sent, 1]}]
    fake.update("persons", person, name=sent, emails=emails)
    return deal, varchar, person


def _expected_emails(stored: str) -> list[dict[str, Any]]:
    return [{"value": stored, "primary": True, "label": "work"}, {stored: [stored, 1]}]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", STRINGS)
def test_any_string_loads_into_duckdb(
    syncer: Syncer, columnar_tables: list[pa.Table | None], kind: str, path: str
) -> None:
    sent, stored = STRINGS[kind]
    deal, varchar, person = _plant(syncer.fake, sent)
    result = syncer.run(
        entities="deals,persons", http=SMALL_PAGES, options={"columnar": PATHS[path]}
    )
    assert result.code == 0, result.message
    column = _column(syncer, varchar)
    assert syncer.query(f"SELECT title, {column} FROM deals WHERE id = {deal}") == [
        (stored, stored)
    ]
    ((name, emails),) = syncer.query(f"SELECT name, emails FROM persons WHERE id = {person}")
    assert name == stored
    assert orjson.loads(emails) == _expected_emails(stored)
    if PATHS[path]:  # the fast path took the pages holding the strings
        # (another page may decline once: the fake's records hold options deleted from the
        # definitions, which the exact path must meet once to remember, and which pages reach
        # the fast path before it has depends on timing)
        assert columnar_tables
        ids = {i for t in columnar_tables if t is not None for i in t.column("id").to_pylist()}
        assert {deal, person} <= ids
    else:
        assert not columnar_tables


@pytest.mark.parametrize("path", PATHS)
def test_a_body_that_starts_with_a_byte_order_mark_loads(syncer: Syncer, path: str) -> None:
    for endpoint in (r"/api/v2/deals$", r"/v1/leads$"):
        syncer.fake.add_fault(FaultRule(path=endpoint, kind="bom", times=None))
    result = syncer.run(entities="deals,leads", options={"columnar": PATHS[path]})
    assert result.code == 0, result.message
    deals = {r["id"] for r in syncer.fake.records("deals", deleted=None, archived=None)}
    assert {r[0] for r in syncer.query("SELECT id FROM deals")} == deals
    assert syncer.query("SELECT count(*) FROM leads")[0][0] == len(syncer.fake.records("leads"))
    assert any(r.fault == "bom" for r in syncer.fake.requests)


POSTGRES_KINDS = ("lone high surrogate", "lone low surrogate", "NUL")


@pytest.fixture
def postgres_syncer(
    syncer: Syncer, postgres: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Syncer, str]]:
    """A syncer into a fresh PostgreSQL database; yields it and the database's URL."""
    url = postgres.database("strings_" + tmp_path.name.replace("-", "_").lower()[-40:])
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    yield syncer, url


def _postgres_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO pipedrive")
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", POSTGRES_KINDS)
def test_strings_postgres_rejects_arrive_repaired(
    postgres_syncer: tuple[Syncer, str], kind: str, path: str
) -> None:
    syncer, url = postgres_syncer
    sent, stored = STRINGS[kind]
    deal, varchar, person = _plant(syncer.fake, sent)
    result = syncer.run(
        entities="deals,persons",
        destination="postgres",
        http=SMALL_PAGES,
        options={"columnar": PATHS[path]},
    )
    assert result.code == 0, result.message
    mapping = f"SELECT column_name FROM custom_fields WHERE field_key = '{varchar}'"
    ((column,),) = _postgres_rows(url, mapping)
    rows = _postgres_rows(url, f"SELECT title, {column} FROM deals WHERE id = {deal}")
    assert rows == [(stored, stored)]
    ((name, emails),) = _postgres_rows(url, f"SELECT name, emails FROM persons WHERE id = {person}")
    assert name == stored
    assert (orjson.loads(emails) if isinstance(emails, str) else emails) == _expected_emails(stored)
