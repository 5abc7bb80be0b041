"""Page → typed arrow table: standard columns, undeclared keys, bad values into variant columns."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pyarrow as pa

from sources.pipedrive.convert import TIMESTAMP, typed_column
from sources.pipedrive.entities import Api
from sources.pipedrive.pages import build_table

STANDARD = {
    "id": "bigint",
    "title": "text",
    "value": "double",
    "is_deleted": "bool",
    "update_time": "timestamp",
    "expected_close_date": "date",
    "due_time": "time",
    "label_ids": "json",
}


def test_standard_columns_get_their_pinned_types_even_when_all_null() -> None:
    table = build_table([{"id": 1}, {"id": 2}], STANDARD, None, Api.V2)
    assert table.schema.field("update_time").type == TIMESTAMP
    assert table.schema.field("expected_close_date").type == pa.date32()
    assert table.schema.field("due_time").type == pa.time64("us")
    assert table.schema.field("value").type == pa.float64()
    assert table.column("title").to_pylist() == [None, None]


def test_values_convert_from_api_representations() -> None:
    rows = [
        {
            "id": 7,
            "title": "Deal",
            "value": 12,
            "is_deleted": False,
            "update_time": "2024-06-01T12:00:00Z",
            "expected_close_date": "2024-07-01",
            "due_time": "15:30:00",
            "label_ids": [1, 2],
        },
        {
            "id": 8,
            "update_time": "2024-06-01 12:00:01",  # v1 style, meant as UTC
            "label_ids": None,
        },
    ]
    table = build_table(rows, STANDARD, None, Api.V2)
    assert table.column("value").to_pylist() == [12.0, None]
    assert table.column("update_time").to_pylist() == [
        datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        datetime(2024, 6, 1, 12, 0, 1, tzinfo=UTC),
    ]
    assert table.column("expected_close_date").to_pylist() == [date(2024, 7, 1), None]
    assert table.column("due_time").to_pylist() == [time(15, 30), None]
    assert table.column("label_ids").to_pylist() == ["[1,2]", None]


def test_a_value_of_the_wrong_type_goes_to_a_variant_column() -> None:
    rows = [{"id": 1, "value": "not a number"}, {"id": "2", "value": "3.5"}]
    table = build_table(rows, STANDARD, None, Api.V2)
    assert table.column("id").to_pylist() == [1, 2]
    assert table.column("value").to_pylist() == [None, 3.5]
    assert table.column("value__v_text").to_pylist() == ["not a number", None]


def test_bad_timestamps_do_not_fail_the_page() -> None:
    array, variant = typed_column(["2024-06-01T12:00:00Z", "yesterday", None], "timestamp")
    assert array.to_pylist()[0] == datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert array.to_pylist()[1:] == [None, None]
    assert variant is not None and variant.to_pylist() == [None, "yesterday", None]


def test_undeclared_keys_land_as_text_and_nested_values_as_json_text() -> None:
    rows = [{"id": 1, "brand_new": 5, "nested": {"a": [1]}}, {"id": 2, "brand_new": "x"}]
    table = build_table(rows, STANDARD, None, Api.V2)
    assert table.column("brand_new").to_pylist() == ["5", "x"]
    assert table.column("nested").to_pylist() == ['{"a":[1]}', None]
    assert "custom_fields" not in table.column_names


def test_constants_fill_their_column_and_override_the_payload() -> None:
    table = build_table(
        [{"id": 1, "is_archived": False}],
        {**STANDARD, "is_archived": "bool"},
        None,
        Api.V2,
        {"is_archived": True},
    )
    assert table.column("is_archived").to_pylist() == [True]


def test_long_strings_and_odd_unicode_pass_through_untouched() -> None:
    odd = "\u0000 zero \U0001f525 \u202e rtl " + "x" * 100_000
    table = build_table([{"id": 1, "title": odd}], STANDARD, None, Api.V2)
    assert table.column("title").to_pylist() == [odd]


def test_numbers_beyond_int64_become_variants_not_a_crash() -> None:
    rows = [{"id": 1e300}, {"id": 2**70}, {"id": "1e30"}, {"id": 5}]
    table = build_table(rows, {"id": "bigint"}, None, Api.V2)
    assert table.column("id").to_pylist() == [None, None, None, 5]
    assert table.column("id__v_text").to_pylist() == ["1e+300", str(2**70), "1e30", None]
