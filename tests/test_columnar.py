"""The columnar fast path builds exactly the table the exact path builds, or declines the page."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from conftest import FAST_HTTP, TOKEN, Syncer
from test_custom_fields import FIELD_TYPES
from test_pages import STANDARD as PAGE_STANDARD

from sources.pipedrive import columnar, streams
from sources.pipedrive import source as source_module
from sources.pipedrive.columnar import build_columnar, decode_page, parse_schema
from sources.pipedrive.custom_fields import ColumnPlan, FieldDef, FieldOption, build_plan
from sources.pipedrive.entities import Api
from sources.pipedrive.http import Page, TemporaryError
from sources.pipedrive.pages import build_table
from sources.pipedrive_fake import FakePipedrive

STANDARD = {**PAGE_STANDARD, "emails": "json"}  # every standard type, and a json list of objects
RESERVED = set(STANDARD) | {"_dlt_id", "_dlt_load_id", "custom_fields"}
OPTIONS = (FieldOption(1, "VIP"), FieldOption(2, 'Part"ner'), FieldOption(3, "Größe"))
TYPES = [*FIELD_TYPES, "mystery_type"]  # every field type, plus one nobody knows


def key(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def make_plan(types: list[str] = TYPES) -> ColumnPlan:
    defs = [
        FieldDef(key(t), t.title() or "Untyped", t, OPTIONS if t in ("enum", "set") else (), True)
        for t in types
    ]
    return build_plan(defs, RESERVED, {})[0]


PLAN = make_plan()


def typical(n: int) -> dict[str, Any]:
    """A v2 record as the API sends it, every custom field type filled."""
    return {
        "id": n,
        "title": f"Deal {n} — ünïcödé",
        "value": n * 10,
        "is_deleted": n % 2 == 0,
        "update_time": f"2024-06-0{1 + n % 9}T12:00:0{n % 10}Z",
        "expected_close_date": "2024-07-01" if n % 3 else None,
        "due_time": "09:30:00" if n % 2 else None,
        "label_ids": [1, 2] if n % 2 else [],
        "custom_fields": {
            key("varchar"): f"text {n}",
            key("text"): None,
            key("phone"): "+49 30 1234",
            key("double"): 1.5 * n,
            key("int"): n,
            key("boolean"): n % 2 == 1,
            key("monetary"): {"value": 100.5 + n, "currency": "EUR"},
            key("enum"): 1 + n % 3,
            key("set"): [1, 3] if n % 2 else [],
            key("date"): "2024-05-01",
            key("daterange"): {"value": "2024-01-01", "until": "2024-02-01"},
            key("time"): {"value": "10:20:30", "timezone_id": 5, "timezone_name": "Europe/Berlin"},
            key("timerange"): {"value": "08:00", "until": "17:30"},
            key("address"): {
                "value": "Main St 1, Berlin",
                "locality": "Berlin",
                "country": "Germany",
                "postal_code": None,
            },
            key("user"): 17,
            key("org"): None,
            key("people"): 4,
            key("mystery_type"): None,
        },
    }


def both(
    rows: list[dict[str, Any]],
    plan: ColumnPlan | None = PLAN,
    constants: dict[str, Any] | None = None,
    deleted: dict[str, list[str]] | None = None,
) -> tuple[pa.Table, pa.Table | None]:
    """(exact table, columnar table or None if declined) of one page."""
    content = orjson.dumps(
        {"success": True, "data": rows, "additional_data": {"next_cursor": "abc"}}
    )
    exact = build_table(rows, STANDARD, plan, Api.V2, constants)
    body = decode_page(content, parse_schema(STANDARD, plan))
    if body is None:
        return exact, None
    assert body["additional_data"] == {"next_cursor": "abc"}
    assert len(body["data"]) == len(rows)
    return exact, build_columnar(body["data"], STANDARD, plan, constants, deleted)


def assert_same(rows: list[dict[str, Any]], **kwargs: Any) -> None:
    exact, fast = both(rows, **kwargs)
    assert fast is not None, "the fast path declined a page it should take"
    assert fast.schema == exact.schema
    assert fast.to_pylist() == exact.to_pylist()


def test_typical_records_of_every_field_type() -> None:
    assert_same([typical(n) for n in range(1, 40)])


def test_nulls_missing_keys_and_null_custom_fields() -> None:
    rows = [typical(1), {"id": 2, "custom_fields": None}, {"id": 3}, {"id": 4, "title": None}]
    sparse = typical(5)
    sparse["custom_fields"] = {key("enum"): 2}
    assert_same([*rows, sparse])


def test_constants_override_the_payload() -> None:
    assert_same([typical(1), typical(2)], constants={"is_deleted": True})


def test_entities_without_custom_fields() -> None:
    rows = [{k: v for k, v in typical(n).items() if k != "custom_fields"} for n in range(5)]
    assert_same(rows, plan=None)


def test_values_only_the_parsed_records_hold_exactly() -> None:
    """Objects (a missing member and a null look alike in arrow) and mixed numbers come
    from the records themselves: still exactly the exact path's output."""
    first, second = typical(1), typical(2)
    first["emails"] = [{"value": "a@x.com", "primary": True}]
    second["emails"] = [{"value": "b@x.com", "label": "work"}]
    first["extra_object"] = {"a": 1}
    second["extra_object"] = {"b": [1, 2]}
    first["custom_fields"][key("mystery_type")] = {"kind": "x"}
    second["custom_fields"][key("mystery_type")] = {"other": 2.5}
    assert_same([first, second])


@pytest.mark.parametrize(
    "values",
    [
        ["a string", None, "another"],  # quoted, as JSON text
        [7, None, -1],
        [True, False, None],
        [{"k": [1]}, {"other": None}, None],
        [[{"value": "a@x.com"}], [], None],
    ],
)
def test_json_columns_hold_json_text_whatever_the_value(values: list[Any]) -> None:
    rows = [typical(n) for n in range(len(values))]
    for row, value in zip(rows, values, strict=True):
        row["emails"] = value
    assert_same(rows)


def test_undeclared_keys_of_every_json_type_land_as_text() -> None:
    rows = [typical(n) for n in range(4)]
    for n, row in enumerate(rows):
        row["new_text"] = f"t{n}"
        row["new_int"] = n
        row["new_bool"] = n % 2 == 0
        row["new_float"] = n + 0.5 if n else 3  # mixed int and float: taken from the records
        row["new_list"] = [n, n + 1]
        row["new_null"] = None
    assert_same(rows)


def test_values_the_exact_parsers_reject_become_variants_identically() -> None:
    rows = [typical(n) for n in range(3)]
    rows[0]["update_time"] = "not a time"
    rows[0]["expected_close_date"] = "2024-13-45"
    rows[1]["due_time"] = "25:99"
    rows[1]["custom_fields"][key("date")] = "yesterday"
    rows[2]["custom_fields"][key("time")] = {"value": "7:5", "timezone_name": None}
    rows[2]["custom_fields"][key("timerange")] = {"value": "9:00", "until": "99:00"}
    assert_same(rows)


def test_odd_spellings_among_repeated_good_ones_convert_as_the_exact_path_does() -> None:
    """A date or time column the vectorized cast declines (an impossible date among good ones)
    is converted per distinct spelling: every value, null and variant lands in its row."""
    rows = [typical(n) for n in range(40)]
    odd_dates = ["2024-02-30", "soon", " 2024-05-01 ", ""]
    odd_times = ["24:00", "9.30", "12:30 ", ""]
    for n, row in enumerate(rows):
        custom = row["custom_fields"]
        if n % 7 == 3:
            row["expected_close_date"] = odd_dates[n % 4]
            custom[key("date")] = odd_dates[(n + 1) % 4]
            custom[key("time")] = {"value": odd_times[n % 4], "timezone_name": None}
            row["due_time"] = odd_times[(n + 2) % 4]
        elif n % 5 == 0:
            custom[key("date")] = None
    exact, fast = both(rows)
    assert fast is not None
    assert fast.schema == exact.schema
    assert fast.to_pylist() == exact.to_pylist()
    assert "expected_close_date__v_text" in fast.column_names  # the odd ones are variants


@pytest.mark.parametrize(
    "text",
    [
        "00:00",
        "23:59:59",
        "24:00",
        "23:60",
        "12:30:60",
        "12:30:00.5",
        "12:30:00Z",
        " 12:30",
        "1:30",
    ],
)
def test_times_are_read_as_the_exact_parser_reads_them(text: str) -> None:
    rows = [typical(n) for n in range(3)]
    rows[0]["due_time"] = text
    rows[1]["custom_fields"][key("time")] = {"value": text, "timezone_name": None}
    exact, fast = both(rows)
    if fast is not None:  # the fast path may leave odd spellings to the exact one
        assert fast.to_pylist() == exact.to_pylist()
    if text in ("00:00", "23:59:59"):
        assert fast is not None


def test_deleted_options_are_known_and_kept_as_their_id() -> None:
    rows = [typical(n) for n in range(3)]
    rows[0]["custom_fields"][key("enum")] = 9
    rows[1]["custom_fields"][key("set")] = [1, 9]
    assert_same(rows, deleted={key("enum"): ["9"], key("set"): ["9"]})


def test_an_option_the_definitions_do_not_know_declines_the_page() -> None:
    rows = [typical(1)]
    rows[0]["custom_fields"][key("enum")] = 9
    assert both(rows)[1] is None
    rows[0]["custom_fields"][key("enum")] = 1
    rows[0]["custom_fields"][key("set")] = [1, 8]
    assert both(rows)[1] is None


def test_a_custom_field_the_definitions_do_not_know_declines_the_page() -> None:
    rows = [typical(1)]
    rows[0]["custom_fields"][key("brand new")] = "x"
    assert both(rows)[1] is None


def test_set_with_null_items_matches_the_exact_path() -> None:
    rows = [typical(1)]
    rows[0]["custom_fields"][key("set")] = [1, None, 3]
    assert_same(rows)


MESSY_CHANGES = [
    {"value": "12"},  # a string where a number was
    {"value": "NULL"},
    {"id": 1.5},  # a fraction in an integer column
    {"title": 7},  # a number in a text column
    {"is_deleted": "yes"},
    {"label_ids": "1,2"},  # a json column of mixed kinds
    {"brand_new": "x"},  # an undeclared key of mixed kinds (5 on the other records)
    {"custom_fields": {key("double"): "1,5"}},
    {"custom_fields": {key("double"): "1e5"}},
    {"custom_fields": {key("varchar"): 123}},
    {"custom_fields": {key("monetary"): 12}},  # a bare number instead of the object
    {"custom_fields": {key("monetary"): {"value": "12.50", "currency": "EUR"}}},
    {"custom_fields": {key("address"): "Main St 1"}},
    {"custom_fields": {key("address"): {"value": "x", "postal_code": 10117}}},
    {"custom_fields": {key("enum"): "1"}},  # an id as a string
    {"custom_fields": {key("set"): ["1", "3"]}},
    {"custom_fields": {key("user"): {"id": 5, "name": "Ann"}}},
    {"custom_fields": []},
]


def _messy(change: dict[str, Any], n: int = 1) -> dict[str, Any]:
    row = typical(n)
    row["brand_new"] = 5
    for name, value in change.items():
        if name == "custom_fields" and isinstance(value, dict):
            row["custom_fields"].update(value)
        else:
            row[name] = value
    return row


@pytest.mark.parametrize("change", MESSY_CHANGES)
def test_values_of_another_json_type_are_read_from_the_records_column_by_column(
    change: dict[str, Any],
) -> None:
    """One odd value no longer sends the page to the exact path: arrow reads the page without
    its key, and that column alone is converted from the parsed records."""
    rows = [typical(2), _messy(change), typical(3)]
    rows[0]["brand_new"] = rows[2]["brand_new"] = 5
    assert_same(rows)
    body = decode_page(_content(rows), parse_schema(STANDARD, PLAN))
    assert body is not None and body["data"].fill_from_rows
    read = {f.name for f in body["data"].records.type}
    assert "title" in read or "title" in change  # the other columns still come from arrow


def test_a_narrowed_reading_lasts_for_the_pages_after_it() -> None:
    schema = parse_schema(STANDARD, PLAN)
    messy = [typical(1), _messy({"custom_fields": {key("double"): "1e5"}}, 2)]
    first = decode_page(_content(messy), schema)
    clean = [typical(n) for n in range(3, 6)]
    second = decode_page(_content(clean), schema)
    assert first is not None and second is not None
    assert first["data"].reading is second["data"].reading
    assert second["data"].fill_from_rows
    for rows, body in ((messy, first), (clean, second)):
        fast = build_columnar(body["data"], STANDARD, PLAN)
        assert fast is not None
        assert fast.to_pylist() == build_table(rows, STANDARD, PLAN, Api.V2).to_pylist()
    joined = columnar.ColumnarPage.joined([first["data"], second["data"]])
    assert joined is not None
    fast = build_columnar(joined, STANDARD, PLAN)
    assert fast is not None
    expected = build_table(messy + clean, STANDARD, PLAN, Api.V2)
    assert fast.to_pylist() == expected.to_pylist()


def test_a_narrowed_page_still_declines_unknown_fields_and_options() -> None:
    for change in (
        {"custom_fields": {key("brand new"): "x", key("double"): "1e5"}},
        {"custom_fields": {key("enum"): "9"}},
        {"custom_fields": {key("set"): "1,8"}},
    ):
        assert both([typical(1), _messy(change, 2)])[1] is None, change


def _content(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"success": True, "data": rows, "additional_data": {"next_cursor": "c"}})


def test_escaped_surrogates_are_left_to_the_exact_path() -> None:
    content = b'{"success": true, "data": [{"id": 1, "title": "lone \\ud800 x"}]}'
    assert decode_page(content, parse_schema(STANDARD, PLAN)) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"success": false, "error": "nope", "data": []}',
        b'{"success": true}',
        b'{"success": true, "data": null}',
        b'{"success": true, "data": {"id": 1}}',
        b'{"success": true, "data": [null]}',
        b"<html>busy</html>",
        b'{"success": true, "data": [{"id": 1}]}\n{"success": true, "data": []}',
    ],
)
def test_odd_envelopes_are_left_to_the_exact_path(body: bytes) -> None:
    assert decode_page(body, parse_schema(STANDARD, PLAN)) is None


def test_an_empty_page_decodes_to_no_records() -> None:
    body = decode_page(b'{"success": true, "data": []}', parse_schema(STANDARD, PLAN))
    assert body is not None and len(body["data"]) == 0


def test_a_sync_loads_the_same_tables_with_and_without_the_fast_path(
    fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[bool] = []
    real_build = columnar.build_columnar

    def spy(*args: Any, **kwargs: Any) -> pa.Table | None:
        table = real_build(*args, **kwargs)
        built.append(table is not None)
        return table

    monkeypatch.setattr(source_module, "build_columnar", spy)
    fast = Syncer(fake, tmp_path / "fast.duckdb", monkeypatch)
    exact = Syncer(fake, tmp_path / "exact.duckdb", monkeypatch)
    tables = ("deals", "persons", "organizations", "activities", "products")
    for round_no in range(2):
        assert fast.run().code == 0
        assert exact.run(options={"columnar": False}).code == 0
        for table in tables:
            sql = f"SELECT * FROM {table} ORDER BY id"
            assert fast.columns(table) == exact.columns(table)
            assert fast.query(sql) == exact.query(sql), f"{table}, round {round_no}"
        deal = fake.records("deals")[0]["id"]
        fake.update(
            "deals", deal, title="changed", custom_fields={fake.field_key("deals", "Título"): "x"}
        )
        fake.add("persons", name="Someone new")
    assert any(built), "the fast path never built a page"


ODD_STRINGS = ["", " ", "x", "2024-01-02", "2024-01-02T03:04:05Z", "2024-02-30", "10:20", "9:5"]
ODD_STRINGS += ["25:00", "23:59:59.5", "1", "1.5", "-3", "1e3", "true", "ünï", "1,3", "12, 9"]
VALUE_KINDS: dict[str, Any] = {
    "str": lambda r: r.choice(ODD_STRINGS),
    "int": lambda r: r.choice([0, 1, -1, 2**40, 3, 9, 12]),
    "float": lambda r: r.choice([1.5, 2.0, -0.0, 1e300, 0.1]),
    "number": lambda r: r.choice([1, 2.5, 3, 0.0]),
    "bool": lambda r: r.choice([True, False]),
    "ints": lambda r: [r.choice([1, 2, 3, 9, 12]) for _ in range(r.randint(0, 3))],
    "strings": lambda r: [r.choice(ODD_STRINGS) for _ in range(r.randint(0, 2))],
    "object": lambda r: {
        k: r.choice([*ODD_STRINGS, None])
        for k in r.sample(["value", "currency", "until", "timezone_name", "locality"], 2)
    },
    "money": lambda r: {"value": r.choice([1, 2.5, None]), "currency": r.choice(["EUR", None])},
    "option object": lambda r: {"id": r.choice([1, 2, 9]), "label": "L"},
}


def _maker(rng: random.Random) -> Any:
    """Values of one random JSON kind, or (messy accounts) of a random kind per record."""
    if rng.random() < 0.3:
        return lambda r: VALUE_KINDS[r.choice(list(VALUE_KINDS))](r)
    return VALUE_KINDS[rng.choice(list(VALUE_KINDS))]


@pytest.mark.parametrize("seed", range(6))
def test_random_pages_either_decline_or_match_the_row_path(seed: int) -> None:
    """Each key of a page gets values of one random JSON kind (as real pages do) or, on
    messy accounts, of mixed kinds: whatever the fast path takes must equal the row path,
    value for value, and it declines only for what the exact path must refresh."""
    rng = random.Random(seed)
    taken = 0
    for _ in range(150):
        rows = [typical(n) for n in range(rng.randint(1, 6))]
        for name in rng.sample([*STANDARD, "brand_new"], rng.randint(0, 3)):
            make = _maker(rng)
            for row in rows:
                row[name] = None if rng.random() < 0.3 else make(rng)
        for field_type in rng.sample(TYPES, rng.randint(0, 5)):
            make = _maker(rng)
            for row in rows:
                row["custom_fields"][key(field_type)] = None if rng.random() < 0.3 else make(rng)
        deleted = {key("enum"): ["9", "12", "0", "-1", "2"], key("set"): ["9", "12", "0", "-1"]}
        exact, fast = both(rows, deleted=deleted)
        if fast is not None:
            taken += 1
            assert fast.schema == exact.schema
            assert fast.to_pylist() == exact.to_pylist()
        else:  # only an option nobody knows declines now
            assert _unknown_option(rows, deleted), rows
    assert taken > 100


def _unknown_option(rows: list[dict[str, Any]], deleted: dict[str, list[str]]) -> bool:
    from sources.pipedrive.custom_fields import option_ids

    for field_type in ("enum", "set"):
        known = {str(o.id) for o in OPTIONS} | set(deleted[key(field_type)])
        for row in rows:
            if not set(option_ids(row["custom_fields"].get(key(field_type)))) <= known:
                return True
    return False


# -- pages converted together --------------------------------------------------------------------
def columnar_page(rows: list[dict[str, Any]], plan: ColumnPlan = PLAN) -> columnar.ColumnarPage:
    body = decode_page(orjson.dumps({"success": True, "data": rows}), parse_schema(STANDARD, plan))
    assert body is not None
    page: columnar.ColumnarPage = body["data"]
    return page


def listed(items: Any, n: int, last: bool = False) -> Page:
    return Page(items=items, body={}, request="deals", next_position=f"c{n}", is_last=last)


def test_joined_pages_build_the_table_of_all_their_rows() -> None:
    rows = [typical(n) for n in range(7)]
    parts = [columnar_page(rows[:3]), columnar_page(rows[3:5]), columnar_page(rows[5:])]
    joined = columnar.ColumnarPage.joined(parts)
    assert joined is not None and len(joined) == 7
    assert joined.rows() == orjson.loads(orjson.dumps(rows))
    fast = build_columnar(joined, STANDARD, PLAN)
    assert fast is not None
    assert fast.to_pylist() == build_table(rows, STANDARD, PLAN, Api.V2).to_pylist()


def test_a_key_null_on_some_pages_takes_the_type_the_others_give_it() -> None:
    rows = [typical(1), typical(2)]  # label_ids: [] on one page (list<null>), ids on the other
    parts = [columnar_page(rows[:1]), columnar_page(rows[1:])]
    assert parts[0].records.type != parts[1].records.type
    joined = columnar.ColumnarPage.joined(parts)
    assert joined is not None
    fast = build_columnar(joined, STANDARD, PLAN)
    assert fast is not None
    assert fast.to_pylist() == build_table(rows, STANDARD, PLAN, Api.V2).to_pylist()


def test_pages_whose_records_really_differ_in_type_are_not_joined() -> None:
    one, other = typical(1), typical(3)
    one["brand_new_key"], other["brand_new_key"] = 5, "five"
    assert columnar.ColumnarPage.joined([columnar_page([one]), columnar_page([other])]) is None


def test_grouped_pages_join_until_enough_rows_the_last_page_or_a_chunk_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "GROUP_ROWS", 4)
    parts = [columnar_page([typical(2 * n), typical(2 * n + 1)]) for n in range(5)]
    pages = [listed(part, n, last=n == 4) for n, part in enumerate(parts)]
    got = [(len(p.items), p.next_position, n) for p, n in streams.grouped_pages(iter(pages), None)]
    assert got == [(4, "c1", 2), (4, "c3", 2), (2, "c4", 1)]
    got = [(len(p.items), p.next_position, n) for p, n in streams.grouped_pages(iter(pages), 3)]
    assert got == [(4, "c1", 2), (2, "c2", 1), (4, "c4", 2)]  # 3 pages per chunk


def test_grouped_pages_pass_exact_pages_at_once_and_keep_order() -> None:
    rows = [{"id": 9}]
    pages = [
        listed(columnar_page([typical(1)]), 0),
        listed(rows, 1),
        listed(columnar_page([typical(2)]), 2, last=True),
    ]
    got = [(p.items, n) for p, n in streams.grouped_pages(iter(pages), None)]
    assert [n for _, n in got] == [1, 1, 1]
    assert got[1][0] == rows and got[0][0] is pages[0].items


def test_grouped_pages_hand_out_what_was_read_before_a_failure() -> None:
    def failing() -> Iterator[Page]:
        yield listed(columnar_page([typical(1)]), 0)
        yield listed(columnar_page([typical(3)]), 1)
        raise TemporaryError("the connection dropped")

    handed: list[Any] = []
    with pytest.raises(TemporaryError):
        for page, count in streams.grouped_pages(failing(), None):
            handed.append((len(page.items), page.next_position, count))
    assert handed == [(2, "c1", 2)]


def test_chunked_syncs_of_joined_pages_load_what_the_exact_path_loads(
    fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "GROUP_ROWS", 120)  # groups of 3 pages of 50
    fast = Syncer(fake, tmp_path / "fast.duckdb", monkeypatch)
    exact = Syncer(fake, tmp_path / "exact.duckdb", monkeypatch)
    fast_result = fast.run(options={"chunk_pages": 2})
    exact_result = exact.run(options={"columnar": False, "chunk_pages": 2})
    assert fast_result.code == exact_result.code == 0
    assert fast_result.chunks == exact_result.chunks > 1
    for table in ("deals", "persons", "organizations"):
        sql = f"SELECT * FROM {table} ORDER BY id"
        assert fast.query(sql) == exact.query(sql), table


def test_a_messy_account_loads_the_same_tables_either_way_and_the_fast_path_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbers as strings, strings as numbers, v1-style objects, bare values for objects, odd
    spellings and records with every field null (`FakePipedrive(messy=True)`): the fast path
    takes every page it is offered, and loads what the exact path loads."""
    built: list[pa.Table | None] = []
    narrowed: list[bool] = []
    cut_out: list[bool] = []  # narrowed and the left-out values cut from the bytes
    real_build = columnar.build_columnar

    def spy(page: columnar.ColumnarPage, *args: Any, **kwargs: Any) -> pa.Table | None:
        table = real_build(page, *args, **kwargs)
        built.append(table)
        narrowed.append(page.fill_from_rows)
        cut_out.append(page.fill_from_rows and not page.parsed)
        return table

    monkeypatch.setattr(source_module, "build_columnar", spy)
    scale = {"deals": 400, "persons": 120, "organizations": 60, "activities": 100}
    with FakePipedrive(token=TOKEN, seed=3, scale=scale, messy=True) as fake:
        fast = Syncer(fake, tmp_path / "fast.duckdb", monkeypatch)
        exact = Syncer(fake, tmp_path / "exact.duckdb", monkeypatch)
        http = replace(FAST_HTTP, page_limit=25)
        assert fast.run(http=http).code == 0
        assert exact.run(http=http, options={"columnar": False}).code == 0
    for table in ("deals", "persons", "organizations", "activities", "products"):
        assert fast.columns(table) == exact.columns(table)
        sql = f"SELECT * FROM {table} ORDER BY id"
        assert fast.query(sql) == exact.query(sql), table
    assert any(c.endswith("__v_text") for c in fast.columns("deals"))  # messy values landed
    # the fast path takes the messy pages; a page may decline once for an option the fake's
    # records hold after it was deleted, when it reaches the fast path before the exact one
    declined = sum(t is None for t in built)
    assert len(built) >= 8 and declined <= len(built) // 10, (declined, len(built))
    assert sum(narrowed) >= 4  # pages whose messy columns alone came from the records
    assert sum(cut_out) >= sum(narrowed) // 2  # without parsing the page whole


# -- values left out of a narrowed reading, cut out of the page's bytes ---------------------------
def narrowed_schema() -> columnar.PageSchema:
    """A schema narrowed by a messy page: `value`, `label_ids` and two custom fields are
    left out of arrow's reading for the pages after it."""
    schema = parse_schema(STANDARD, PLAN)
    change = {
        "value": "12",
        "label_ids": "1,2",
        "custom_fields": {key("double"): "1e5", key("monetary"): 12},
    }
    first = decode_page(_content([typical(1), _messy(change, 2)]), schema)
    assert first is not None and first["data"].fill_from_rows
    return schema


def cut(content: bytes, schema: columnar.PageSchema) -> columnar.ColumnarPage:
    """The page decoded with `schema`, its table checked against the exact path's."""
    body = decode_page(content, schema)
    assert body is not None, "the fast path declined a page it should take"
    page: columnar.ColumnarPage = body["data"]
    parsed_before = page.parsed
    fast = build_columnar(page, STANDARD, PLAN)
    assert fast is not None
    exact = build_table(orjson.loads(content)["data"], STANDARD, PLAN, Api.V2)
    assert fast.schema == exact.schema
    assert fast.to_pylist() == exact.to_pylist()
    assert page.parsed == parsed_before  # building needed nothing more from the records
    return page


def test_left_out_values_are_cut_from_the_bytes_without_parsing_the_page() -> None:
    schema = narrowed_schema()
    page = cut(_content([typical(n) for n in range(3, 9)]), schema)
    assert page.fill_from_rows and not page.parsed
    assert {"value", "label_ids"}.isdisjoint(f.name for f in page.records.type)


def test_left_out_keys_are_declared_in_the_order_the_records_hold_them() -> None:
    """msgspec matches a record's keys fastest in the order they are declared: the narrowed
    reading declares them as the records that narrowed it hold them. Another order is only
    slower: the values read are the same."""
    schema = narrowed_schema()
    left_out = schema.reading.left_out
    assert left_out is not None
    record = _messy({}, 2)
    assert left_out.record_keys[: len(record)] == list(record)
    assert left_out.custom_keys[: len(record["custom_fields"])] == list(record["custom_fields"])
    rows = [typical(n) for n in range(3, 7)]
    rows[1] = dict(reversed(rows[1].items()))
    rows[2]["custom_fields"] = dict(reversed(rows[2]["custom_fields"].items()))
    rows[3]["value"] = "messy again"
    assert not cut(_content(rows), schema).parsed


def test_records_missing_left_out_keys_or_their_custom_fields() -> None:
    schema = narrowed_schema()
    rows = [typical(n) for n in range(3, 9)]
    del rows[0]["value"], rows[1]["label_ids"], rows[2]["custom_fields"][key("double")]
    rows[3]["custom_fields"] = None
    del rows[4]["custom_fields"]
    rows[5] = {"id": 99}
    assert not cut(_content(rows), schema).parsed


def test_left_out_values_of_any_shape_and_nesting() -> None:
    schema = narrowed_schema()
    rows = [typical(n) for n in range(3, 8)]
    rows[0]["value"] = {"a": [1, {"b": None, "c": [True, 1.5e300]}], "d": {}}
    rows[1]["label_ids"] = [[1, 2], {"x": "y"}, -0.0, "3"]
    rows[2]["custom_fields"][key("double")] = {"value": 1, "nested": {"deeper": [None]}}
    rows[3]["custom_fields"][key("monetary")] = {"value": "12.50", "currency": None, "x": []}
    rows[4]["value"] = "BIG"
    content = _content(rows).replace(b'"BIG"', b"18446744073709551616123")  # beyond 64 bits
    assert not cut(content, schema).parsed


def test_escapes_in_left_out_values_read_as_the_parsed_records_read_them() -> None:
    schema = narrowed_schema()
    rows = [typical(n) for n in range(3, 6)]
    rows[0]["value"] = "ESC1"
    rows[1]["custom_fields"][key("double")] = "ESC2"
    rows[2]["label_ids"] = ["ESC3"]
    content = (
        _content(rows)
        .replace(b'"ESC1"', b'"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\n\\t\\u0041"')
        .replace(b'"ESC2"', b'"\\u00e9\\u00E9 \\uFFFD"')
        .replace(b'"ESC3"', b'"\\ud83d\\ude00"')
    )
    assert b"\\u00e9" in content
    page = cut(content, schema)
    assert not page.parsed
    assert page.left_out.standard["value"][0] == 'café 😀 "q" \\ / \n\tA'


@pytest.mark.parametrize("place", ['"value":"LONE"', '"v":"LONE"', '"title":"LONE"'])
def test_an_escaped_lone_surrogate_declines_a_narrowed_page(place: str) -> None:
    """`http.jsonbody.clean` repairs them before any parser sees a body; one that got past it
    cannot be parsed exactly, so the page is left to the exact path, wherever it is."""
    schema = narrowed_schema()
    content = _content([typical(3), typical(4)]).replace(b'"id":4', b'"id":4,' + place.encode())
    content = content.replace(b'"LONE"', b'"lone \\ud800 x"')
    assert decode_page(content, schema) is None
    cut(_content([typical(5)]), schema)  # and the pages after it are read as before


def test_a_key_only_in_the_last_record() -> None:
    schema = narrowed_schema()
    rows = [typical(n) for n in range(3, 8)]
    for row in rows[:-1]:
        del row["value"], row["label_ids"]
        del row["custom_fields"][key("double")]
    rows[-1]["custom_fields"][key("double")] = "last"
    assert not cut(_content(rows), schema).parsed
    rows[-1]["only_last"] = {"nested": ["x"]}  # an undeclared key, new to the run
    assert cut(_content(rows), schema).parsed  # the page is parsed whole once
    again = cut(_content(rows), schema)  # the key is known now
    assert not again.parsed and "only_last" in again.left_out.undeclared


def test_undeclared_keys_are_learned_and_then_cut_out() -> None:
    schema = narrowed_schema()
    rows = [typical(n) for n in range(3, 7)]
    rows[1]["brand_new"] = 5
    rows[2]["other_new"] = None  # only null: still a column, as on the exact path
    assert cut(_content(rows), schema).parsed
    rows[3]["brand_new"] = "text"
    page = cut(_content(rows), schema)
    assert not page.parsed
    assert set(page.left_out.undeclared) == {"brand_new", "other_new"}
    page = cut(_content([typical(9)]), schema)  # a page without them has no such columns
    assert not page.parsed and page.left_out.undeclared == {}


def test_a_narrowed_page_with_a_new_custom_field_or_odd_holder() -> None:
    schema = narrowed_schema()
    unknown = typical(3)
    unknown["custom_fields"][key("brand new")] = 1
    body = decode_page(_content([typical(4), unknown]), schema)
    assert body is not None and build_columnar(body["data"], STANDARD, PLAN) is None
    odd = [typical(5), typical(6)]
    odd[1]["custom_fields"] = []  # v1 style: no custom fields
    assert cut(_content(odd), schema).parsed


def test_joined_pages_cut_and_parsed_build_the_table_of_all_their_rows() -> None:
    schema = narrowed_schema()
    plain = [typical(n) for n in range(3, 6)]
    plain[0]["value"] = {"deep": [1]}
    learned = [typical(n) for n in range(6, 8)]
    learned[-1]["late_key"] = [1, "x"]  # only in the last record of the last page
    pages = []
    for part in (plain, learned):
        body = decode_page(_content(part), schema)
        assert body is not None
        pages.append(body["data"])
    assert [page.parsed for page in pages] == [False, True]
    joined = columnar.ColumnarPage.joined(pages)
    assert joined is not None
    fast = build_columnar(joined, STANDARD, PLAN)
    assert fast is not None
    exact = build_table(plain + learned, STANDARD, PLAN, Api.V2)
    assert fast.schema == exact.schema
    assert fast.to_pylist() == exact.to_pylist()
    later = decode_page(_content([typical(9)]), schema)  # read with the key learned
    assert later is not None and columnar.ColumnarPage.joined([pages[1], later["data"]]) is None


@pytest.mark.parametrize("seed", range(4))
def test_random_pages_read_with_one_narrowed_schema_match_the_row_path(seed: int) -> None:
    """Pages of one run share their reading: after the first messy page, whatever the fast
    path takes (cut out of the bytes or, once per new key, parsed whole) equals the row path."""
    rng = random.Random(seed)
    schema = narrowed_schema()
    deleted = {key("enum"): ["9", "12", "0", "-1", "2"], key("set"): ["9", "12", "0", "-1"]}
    cut_out = 0
    for _ in range(80):
        rows = [typical(n) for n in range(rng.randint(1, 6))]
        for name in rng.sample([*STANDARD, "brand_new", "other_new"], rng.randint(0, 3)):
            make = _maker(rng)
            for row in rows:
                if rng.random() < 0.2:
                    row.pop(name, None)
                else:
                    row[name] = None if rng.random() < 0.3 else make(rng)
        for field_type in rng.sample(TYPES, rng.randint(0, 4)):
            make = _maker(rng)
            for row in rows:
                row["custom_fields"][key(field_type)] = None if rng.random() < 0.3 else make(rng)
        content = _content(rows)
        body = decode_page(content, schema)
        fast = None if body is None else build_columnar(body["data"], STANDARD, PLAN, None, deleted)
        if fast is None:
            assert _unknown_option(rows, deleted), rows
            continue
        exact = build_table(orjson.loads(content)["data"], STANDARD, PLAN, Api.V2)
        assert fast.schema == exact.schema
        assert fast.to_pylist() == exact.to_pylist()
        cut_out += not body["data"].parsed
    assert cut_out > 20
