"""The one conversion layer (`convert`): every type's rule as a table of inputs → outputs, the
same answer for standard columns and custom fields, and vectorized casts that agree with it."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from sources.pipedrive.convert import (
    ARROW_TYPES,
    PARSERS,
    as_text,
    cast_strings,
    convert,
    iso_datetime,
    json_text,
    typed_column,
)
from sources.pipedrive.custom_fields import FieldDef, build_plan
from sources.pipedrive.entities import Api
from sources.pipedrive.pages import build_table

BIG = 2**63
BERLIN = timezone(timedelta(hours=2))
# data type -> [(value as JSON parsed it, typed value, variant text)]; a variant text means the
# value did not fit: the typed value is None and the text is what the variant column holds
CASES: dict[str, list[tuple[Any, Any, str | None]]] = {
    "bigint": [
        (None, None, None),
        (0, 0, None),
        (-7, -7, None),
        (BIG - 1, BIG - 1, None),
        (-BIG, -BIG, None),
        (BIG, None, str(BIG)),
        (-BIG - 1, None, str(-BIG - 1)),
        (7.0, 7, None),
        (-0.0, 0, None),
        (7.5, None, "7.5"),
        (1e300, None, "1e+300"),
        ("7", 7, None),
        (" -3 ", -3, None),
        ("+4", 4, None),
        ("00123", 123, None),
        ("8.0", 8, None),
        ("1e3", 1000, None),
        ("", None, None),
        ("  ", None, None),
        ("7.5", None, "7.5"),
        ("1e30", None, "1e30"),
        (str(BIG), None, str(BIG)),
        ("nan", None, "nan"),
        ("inf", None, "inf"),
        ("1_000", None, "1_000"),
        ("0x10", None, "0x10"),
        ("١٢", None, "١٢"),  # Arabic-Indic digits
        ("NULL", None, "NULL"),
        ("12 apples", None, "12 apples"),
        (True, None, "true"),
        (False, None, "false"),
        ([1], None, "[1]"),
        ({"value": 5}, None, '{"value":5}'),  # objects are references only in custom fields
    ],
    "double": [
        (None, None, None),
        (1.5, 1.5, None),
        (2, 2.0, None),
        (-0.0, -0.0, None),
        (2**53 + 1, float(2**53 + 1), None),  # as close as a double gets
        (10**400, None, "1" + "0" * 400),
        ("3.25", 3.25, None),
        (" -4e2 ", -400.0, None),
        ("00123", 123.0, None),
        (".5", 0.5, None),
        ("5.", 5.0, None),
        ("1e5", 100000.0, None),
        ("", None, None),
        ("1e999", None, "1e999"),
        ("nan", None, "nan"),
        ("-inf", None, "-inf"),
        ("1,5", None, "1,5"),
        ("1_0", None, "1_0"),
        ("NULL", None, "NULL"),
        ("€ 12", None, "€ 12"),
        (True, None, "true"),
        ({"value": 1}, None, '{"value":1}'),
    ],
    "bool": [
        (None, None, None),
        (True, True, None),
        (False, False, None),
        (1, True, None),
        (0, False, None),
        (1.0, True, None),
        (0.0, False, None),
        ("true", True, None),
        ("FALSE", False, None),
        (" True ", True, None),
        ("1", True, None),
        ("0", False, None),
        ("yes", True, None),
        ("No", False, None),
        ("", None, None),
        (2, None, "2"),
        (0.5, None, "0.5"),
        ("maybe", None, "maybe"),
        ("t", None, "t"),
        ("y", None, "y"),
        ("on", None, "on"),
        ([True], None, "[true]"),
        ({"a": 1}, None, '{"a":1}'),
    ],
    "timestamp": [
        (None, None, None),
        ("2024-06-01T12:00:00Z", datetime(2024, 6, 1, 12, tzinfo=UTC), None),
        ("2024-06-01T12:00:00.5Z", datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=UTC), None),
        (
            "2024-06-01T12:00:00.123456789Z",
            datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC),
            None,
        ),
        ("2024-06-01 12:00:01", datetime(2024, 6, 1, 12, 0, 1, tzinfo=UTC), None),  # v1: UTC
        ("2024-06-01T14:00:00+02:00", datetime(2024, 6, 1, 12, tzinfo=UTC), None),
        ("2024-06-01T14:00:00+0200", datetime(2024, 6, 1, 12, tzinfo=UTC), None),
        ("2024-06-01T14:00:00+02", datetime(2024, 6, 1, 12, tzinfo=UTC), None),
        ("2024-06-01T12:30Z", datetime(2024, 6, 1, 12, 30, tzinfo=UTC), None),
        ("2024-06-01T12Z", datetime(2024, 6, 1, 12, tzinfo=UTC), None),
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC), None),
        (" 2024-06-01T12:00:00Z ", datetime(2024, 6, 1, 12, tzinfo=UTC), None),
        ("", None, None),
        ("yesterday", None, "yesterday"),
        ("2024-06-01Z", None, "2024-06-01Z"),
        ("2024-02-30T00:00:00Z", None, "2024-02-30T00:00:00Z"),
        ("2024-06-01T24:00:00Z", None, "2024-06-01T24:00:00Z"),
        ("2024-06-01T12:00:60Z", None, "2024-06-01T12:00:60Z"),
        ("20240601T120000Z", None, "20240601T120000Z"),
        ("2024-W22-6", None, "2024-W22-6"),
        ("2024-6-1T12:00:00Z", None, "2024-6-1T12:00:00Z"),
        ("2024-06-01T12:00:00,5Z", None, "2024-06-01T12:00:00,5Z"),
        (1717243200, None, "1717243200"),
        ({"value": "2024-06-01T12:00:00Z"}, None, '{"value":"2024-06-01T12:00:00Z"}'),
    ],
    "date": [
        (None, None, None),
        ("2024-01-15", date(2024, 1, 15), None),
        ("2024-02-29", date(2024, 2, 29), None),
        (" 2024-01-15 ", date(2024, 1, 15), None),
        ("", None, None),
        ("2023-02-29", None, "2023-02-29"),
        ("2024-13-45", None, "2024-13-45"),
        ("15.01.2024", None, "15.01.2024"),
        ("20240115", None, "20240115"),
        ("2024-01-15T00:00:00Z", None, "2024-01-15T00:00:00Z"),
        ("2024-1-5", None, "2024-1-5"),
        (20240115, None, "20240115"),
        ({"a": 1}, None, '{"a":1}'),
    ],
    "time": [
        (None, None, None),
        ("00:00", time(0, 0), None),
        ("9:05", time(9, 5), None),
        ("23:59:59", time(23, 59, 59), None),
        ("12:30:00.5", time(12, 30, 0, 500000), None),
        ("12:30:00.123456", time(12, 30, 0, 123456), None),
        (" 12:30 ", time(12, 30), None),
        ("", None, None),
        ("24:00", None, "24:00"),
        ("23:60", None, "23:60"),
        ("12:30:60", None, "12:30:60"),
        ("12:30:00Z", None, "12:30:00Z"),
        ("12:30:00+02:00", None, "12:30:00+02:00"),
        ("1230", None, "1230"),
        ("12", None, "12"),
        ("12:30:00.1234567", None, "12:30:00.1234567"),
        ("7:5", None, "7:5"),
        (930, None, "930"),
    ],
    "text": [
        (None, None, None),
        ("hello", "hello", None),
        ("", "", None),
        ("  padded  ", "  padded  ", None),
        ("00123", "00123", None),
        ("NULL", "NULL", None),
        ("\u0000 \u2028 \ufeff 🚀", "\u0000 \u2028 \ufeff 🚀", None),  # byte for byte
        ("lone \ud800", "lone \ufffd", None),  # a caller's own string: still loads
        (12, "12", None),
        (1.5, "1.5", None),
        (True, "true", None),
        ({"a": "ü"}, '{"a":"ü"}', None),
        ([1, None], "[1,null]", None),
        (2**70, str(2**70), None),
    ],
    "json": [
        (None, None, None),
        ("x", '"x"', None),
        (5, "5", None),
        (False, "false", None),
        ({"k": [1, {"ü": None}]}, '{"k":[1,{"ü":null}]}', None),
        ({"big": 2**70}, '{"big":' + str(2**70) + "}", None),
        (["\ud800"], '["\ufffd"]', None),
    ],
}
CASE_LIST = [(t, *case) for t, cases in CASES.items() for case in cases]
CASE_IDS = [f"{t}-{i}" for t, cases in CASES.items() for i in range(len(cases))]
# a value of each type that arrow converts on its own, to put a case next to
CLEAN = {
    "bigint": 1,
    "double": 1.5,
    "bool": True,
    "timestamp": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "10:00",
    "text": "a",
    "json": 1,
}


@pytest.mark.parametrize(("data_type", "value", "typed", "variant"), CASE_LIST, ids=CASE_IDS)
def test_each_value_of_each_type(
    data_type: str, value: Any, typed: Any, variant: str | None
) -> None:
    if variant is not None:
        assert typed is None, "a case with a variant text has no typed value"
    layouts = [([value], 0), ([value, None], 0), ([CLEAN[data_type], value], 1), ([value] * 3, 2)]
    for values, position in layouts:
        array, variants = convert(values, data_type)
        assert array.type == ARROW_TYPES[data_type]
        assert array.to_pylist()[position] == typed
        got = None if variants is None else variants[position]
        assert got == variant
        if variant is None:
            assert variants is None or all(v is None for v in variants)


@pytest.mark.parametrize(("data_type", "value", "typed", "variant"), CASE_LIST, ids=CASE_IDS)
def test_the_parser_alone_gives_the_same_answer(
    data_type: str, value: Any, typed: Any, variant: str | None
) -> None:
    parse = PARSERS.get(data_type)
    if parse is None or value is None:
        return
    result = parse(value)
    if variant is not None:
        assert result is not None and result is not typed  # BAD
        assert convert([value], data_type)[1] == [variant]
    elif data_type == "time" and typed is not None:
        assert result == (
            ((typed.hour * 60 + typed.minute) * 60 + typed.second) * 1_000_000 + typed.microsecond
        )
    else:
        assert result == typed


# custom field type -> the data type of its column, in both API shapes
CUSTOM_TYPES = {
    "int": "bigint",
    "double": "double",
    "boolean": "bool",
    "date": "date",
    "varchar": "text",
}


@pytest.mark.parametrize("shape", [Api.V1, Api.V2])
@pytest.mark.parametrize("field_type", CUSTOM_TYPES)
def test_standard_columns_and_custom_fields_follow_one_rule(field_type: str, shape: Api) -> None:
    data_type = CUSTOM_TYPES[field_type]
    values = [value for value, _, _ in CASES[data_type] if not isinstance(value, dict)]
    key = "a" * 40
    plan, _ = build_plan([FieldDef(key, "Custom", field_type, (), True)], {"standard"}, {})
    if shape is Api.V2:
        rows = [{"standard": v, "custom_fields": {key: v}} for v in values]
    else:
        rows = [{"standard": v, key: v} for v in values]
    table = build_table(rows, {"standard": data_type}, plan, shape)
    assert table.column("standard").to_pylist() == table.column("custom").to_pylist()
    variants = [n for n in table.column_names if n.endswith("__v_text")]
    if variants:
        assert variants == ["standard__v_text", "custom__v_text"]
        assert (
            table.column("standard__v_text").to_pylist()
            == table.column("custom__v_text").to_pylist()
        )


def test_a_fraction_in_an_integer_column_is_a_variant_not_truncated() -> None:
    array, variant = typed_column([1.5, 2, -0.5], "bigint")
    assert array.to_pylist() == [None, 2, None]
    assert variant is not None and variant.to_pylist() == ["1.5", None, "-0.5"]


def test_no_variant_array_when_every_value_fits() -> None:
    for data_type, value in CLEAN.items():
        assert typed_column([value, None, value], data_type)[1] is None


def test_text_helpers() -> None:
    assert as_text(None) is None
    assert as_text("x") == "x"
    assert as_text(1.0) == "1.0"
    assert json_text({"a": [1.5, None, True]}) == '{"a":[1.5,null,true]}'
    assert json_text([2**64, "ü"]) == f'[{2**64},"ü"]'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-01T12:00:00Z", datetime(2024, 6, 1, 12, tzinfo=UTC)),
        ("2024-06-01T12:00:00.000001+00:00", datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=UTC)),
        ("2024-06-01T14:00:00+02:00", datetime(2024, 6, 1, 14, tzinfo=BERLIN)),
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01 12:00:00", datetime(2024, 6, 1, 12, tzinfo=UTC)),
    ],
)
def test_the_one_iso_time_parser(text: str, expected: datetime) -> None:
    parsed = iso_datetime(text)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["", "2024", "now", "2024-06-01T12:00:00 UTC", "01/06/2024"])
def test_the_iso_time_parser_rejects_what_is_not_iso(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        iso_datetime(text)


# pieces of date and time spellings, valid and not, for the vectorized casts
PIECES = [
    "2024", "-", "06", "01", "6", "1", "02-30", "13", "T", " ", "12", ":", "00", "30", "59", "60",
    "24", ".", "5", "123456", "1234567", "Z", "+02:00", "+0200", "-05", "", "x", "0000",
]  # fmt: skip
SPELLINGS = [
    "2024-06-01", "2024-06-01T12:00:00Z", "2024-06-01 12:00:00Z", "2024-06-01T12:00Z",
    "2024-06-01T12:00:00.5Z", "2024-06-01T12:00:00+02:00", "2024-06-01T12:00:00",
    "2024-02-30", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "0000-01-01", "0001-01-01",
    "9999-12-31T23:59:59.999999Z", "10:00", "23:59:59", "24:00", "9:30", "12:30:00.5",
    "2024-06-01T12:00:00-23:59", "2024-06-01T23:59:59+00:00",
]  # fmt: skip


def _random_spellings(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        base = rng.choice(SPELLINGS)
        if rng.random() < 0.5:
            cut = rng.randrange(len(base) + 1)
            base = base[:cut] + rng.choice(PIECES) + base[cut + rng.randint(0, 2) :]
        out.append(base)
    return out


@pytest.mark.parametrize("data_type", ["date", "timestamp", "time"])
@pytest.mark.parametrize("seed", range(3))
def test_vectorized_casts_agree_with_the_parsers_or_stand_aside(data_type: str, seed: int) -> None:
    spellings = SPELLINGS + _random_spellings(seed, 400)
    parse = PARSERS[data_type]
    cast_some = 0
    for text in spellings:
        cast = cast_strings(pa.array([text, None]), data_type)
        if cast is None:
            continue
        cast_some += 1
        expected = convert([text], data_type)[0].to_pylist()[0]
        assert parse(text) is not None
        assert cast.to_pylist() == [expected, None], text
    assert cast_some > 0
    # a whole column: taken only when every spelling is one arrow reads as the parser does
    column = pa.array(spellings)
    cast = cast_strings(column, data_type)
    assert cast is None or cast.to_pylist() == convert(spellings, data_type)[0].to_pylist()


def test_vectorized_casts_of_all_null_columns_and_other_types() -> None:
    assert cast_strings(pa.nulls(3, pa.string()), "date").to_pylist() == [None] * 3  # type: ignore[union-attr]
    assert cast_strings(pa.array([1, 2]), "date") is None
    assert cast_strings(pa.array(["a"]), "bigint") is None


def test_json_columns_read_back_from_any_warehouse() -> None:
    from sources.pipedrive.convert import from_json_text

    assert from_json_text('{"a": [1, "é"]}') == {"a": [1, "é"]}  # DuckDB, SQLite: text
    assert from_json_text(b"[1, 2]") == [1, 2]
    assert from_json_text([{"id": 1}]) == [{"id": 1}]  # PostgreSQL's driver: parsed
    assert from_json_text("not json") is None
    assert from_json_text(None) is None
