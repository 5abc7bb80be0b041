"""Custom fields: definitions -> column plan -> typed pyarrow arrays, in both record shapes."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pytest
from dlt.common.normalizers.naming.snake_case import NamingConvention

from sources.pipedrive.custom_fields import (
    ADDRESS_COMPONENTS,
    ARROW_TYPES,
    ColumnPlan,
    FieldDef,
    FieldOption,
    LabelChange,
    OutputColumn,
    build_plan,
    is_custom_key,
    known_labels,
    normalize_page,
    option_label_changes,
    parse_definitions,
)
from sources.pipedrive.entities import Api

V1, V2 = Api.V1, Api.V2
SHAPES = pytest.mark.parametrize("shape", [V1, V2])
MISSING: Any = object()
RESERVED = {"id", "title", "value", "currency", "update_time", "_dlt_id", "_dlt_load_id"}
ID_TYPES = ["user", "org", "people", "deal", "project", "stage", "activity"]
OPTIONS = (FieldOption(1, "VIP"), FieldOption(2, "Partner"), FieldOption(3, "Lead"))


def key(n: int | str) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def fdef(
    field_type: str,
    name: str = "Field",
    *,
    n: int | str = 1,
    options: tuple[FieldOption, ...] = (),
    subfields: tuple[str, ...] = (),
    is_custom: bool = True,
    is_active: bool = True,
) -> FieldDef:
    return FieldDef(key(n), name, field_type, options, is_custom, is_active, subfields)


def plan_of(*defs: FieldDef, pinned: Mapping[str, str] | None = None) -> ColumnPlan:
    return build_plan(list(defs), RESERVED, pinned or {})[0]


def simple_rows(f: FieldDef, shape: Api, values: Sequence[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, v in enumerate(values):
        if shape == V2:
            rows.append({"id": i, "custom_fields": {} if v is MISSING else {f.key: v}})
        else:
            rows.append({"id": i} if v is MISSING else {"id": i, f.key: v})
    return rows


def v1_rows(f: FieldDef, values: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """v1 rows from {suffix: value}; "" is the hash key itself."""
    return [{"id": i, **{f.key + s: v for s, v in parts.items()}} for i, parts in enumerate(values)]


def v2_rows(f: FieldDef, values: Sequence[Any]) -> list[dict[str, Any]]:
    return simple_rows(f, V2, values)


def run(rows: Sequence[Mapping[str, Any]], shape: Api, *defs: FieldDef) -> dict[str, pa.Array]:
    plan = plan_of(*defs)
    result = normalize_page(rows, plan, shape)
    for name, arr in result.items():
        assert len(arr) == len(rows), name
        assert isinstance(arr, pa.Array)
    columns = plan.columns()
    for name, arr in result.items():
        if name.endswith("__v_text"):
            assert arr.type == pa.string()
            assert name.removesuffix("__v_text") in columns
        else:
            assert arr.type == ARROW_TYPES[columns[name]["data_type"]], name
    assert [n for n in result if not n.endswith("__v_text")] == list(columns)
    return result


def py(result: Mapping[str, pa.Array]) -> dict[str, list[Any]]:
    return {k: v.to_pylist() for k, v in result.items()}


LONG_TEXT = "Lorem ipsum ✓ " * 10_000
ODD_TEXT = (
    "\U0001d518\U0001d52b\U0001d526 \u200b\u200d e\u0301 \ufeff RTL \u202e ﷽ \x00 \t\n 🇩🇪👍🏽"
)


# --------------------------------------------------------------------------- definitions


V2_DEFS: list[Any] = [
    {
        "field_name": "Title",
        "field_code": "title",
        "field_type": "varchar",
        "options": None,
        "subfields": None,
        "is_custom_field": False,
        "is_optional_response_field": False,
    },
    {
        "field_name": "Customer Type",
        "field_code": key("ct"),
        "field_type": "enum",
        "options": [
            {"id": 1, "label": "VIP", "color": "red", "update_time": None},
            {"id": 2, "label": "Partner", "color": None},
        ],
        "subfields": None,
        "is_custom_field": True,
    },
    {
        "field_name": "Budget",
        "field_code": key("budget"),
        "field_type": "monetary",
        "options": None,
        "subfields": [
            {
                "field_code": key("budget") + "_currency",
                "field_name": "Currency of Budget",
                "field_type": "varchar",
            }
        ],
        "is_custom_field": True,
    },
    {
        "field_name": "Office",
        "field_code": key("office"),
        "field_type": "address",
        "subfields": [
            {"field_code": key("office") + "_locality", "field_name": "x", "field_type": "varchar"},
            {
                "field_code": key("office") + "_plus_code",
                "field_name": "y",
                "field_type": "varchar",
            },
            None,
            {"field_name": "no code"},
        ],
        "is_custom_field": True,
    },
    {"field_code": key("bare")},  # everything else missing
    {"field_name": "no code", "field_type": "varchar"},  # skipped
    "not a dict",
]

V1_DEFS: list[dict[str, Any]] = [
    {
        "id": 1,
        "key": "title",
        "name": "Title",
        "field_type": "varchar",
        "options": None,
        "active_flag": True,
        "edit_flag": False,
    },
    {
        "id": 2,
        "key": key("ct"),
        "name": "Customer Type",
        "field_type": "enum",
        "options": [{"id": 190, "label": "Default"}, {"id": 191, "label": None}, {"label": "x"}],
        "active_flag": True,
        "edit_flag": True,
    },
    {
        "id": 3,
        "key": key("old"),
        "name": "Old field",
        "field_type": "double",
        "options": None,
        "active_flag": False,
        "edit_flag": True,
    },
    {
        "id": 4,
        "key": key("budget"),
        "name": None,
        "field_type": "monetary",
        "subfields": [
            {"key": key("budget") + "_currency", "name": "Currency", "field_type": "varchar"}
        ],
    },
    {"id": 5, "key": None, "name": "no key"},
]


def test_parse_v2_definitions() -> None:
    defs = parse_definitions(V2_DEFS, V2)
    assert [d.key for d in defs] == ["title", key("ct"), key("budget"), key("office"), key("bare")]
    title, ct, budget, office, bare = defs
    assert not title.is_custom and title.name == "Title" and title.field_type == "varchar"
    assert ct == FieldDef(
        key("ct"), "Customer Type", "enum", (FieldOption(1, "VIP"), FieldOption(2, "Partner")), True
    )
    assert budget.subfields == ("currency",)
    assert office.subfields == ("locality", "plus_code")
    assert office.options == ()
    # missing members get defaults; the 40-hex key makes it custom when the flag is missing
    assert bare == FieldDef(key("bare"), "", "", (), is_custom=True)


def test_parse_v1_definitions() -> None:
    defs = parse_definitions(V1_DEFS, V1)
    assert [d.key for d in defs] == ["title", key("ct"), key("old"), key("budget")]
    title, ct, old, budget = defs
    assert not title.is_custom and ct.is_custom and old.is_custom
    assert ct.options == (FieldOption(190, "Default"), FieldOption(191, "191"))
    assert ct.is_active and not old.is_active
    assert budget.name == "" and budget.subfields == ("currency",)


def test_parse_definitions_tolerates_garbage() -> None:
    assert parse_definitions([], V2) == []
    weird = [{"field_code": key(1), "is_custom_field": "yes", "options": "nope", "subfields": 3}]
    (d,) = parse_definitions(weird, V2)
    assert d.is_custom and d.options == () and d.subfields == ()
    not_custom = [{"field_code": "label_ids", "field_type": "set", "options": [{"id": "a"}]}]
    (d,) = parse_definitions(not_custom, V2)
    assert not d.is_custom and d.options == (FieldOption("a", "a"),)


def test_field_def_round_trips_through_dict() -> None:
    for d in [*parse_definitions(V2_DEFS, V2), *parse_definitions(V1_DEFS, V1)]:
        assert FieldDef.from_dict(orjson.loads(orjson.dumps(d.to_dict()))) == d


def test_is_custom_key() -> None:
    assert is_custom_key(key(1))
    assert is_custom_key(key(1) + "_currency")
    assert is_custom_key(key(1) + "_admin_area_level_1")
    assert not is_custom_key("title")
    assert not is_custom_key(key(1)[:39])
    assert not is_custom_key(key(1) + "x")


# --------------------------------------------------------------------------- plan


def test_plan_columns_types_for_every_field_type() -> None:
    defs = [
        fdef("varchar", "A varchar", n=1),
        fdef("varchar_auto", "A varchar auto", n=2),
        fdef("text", "A text", n=3),
        fdef("phone", "A phone", n=4),
        fdef("varchar_options", "A varchar options", n=5),
        fdef("double", "A double", n=6),
        fdef("int", "An int", n=7),
        fdef("boolean", "A bool", n=8),
        fdef("monetary", "Budget", n=9),
        fdef("date", "A date", n=10),
        fdef("daterange", "A daterange", n=11),
        fdef("time", "A time", n=12),
        fdef("timerange", "A timerange", n=13),
        fdef("enum", "An enum", n=14, options=OPTIONS),
        fdef("set", "A set", n=15, options=OPTIONS),
        *[fdef(t, f"A {t}", n=100 + i) for i, t in enumerate(ID_TYPES)],
        fdef("lead", "A lead", n=16),
        fdef("address", "Office", n=17),
        fdef("picture", "A picture", n=18),
        fdef("", "No type", n=19),
        fdef("varchar", "Title", n=20),  # standard column on deals -> title_custom
        fdef("varchar", "Not custom", n=21, is_custom=False),
    ]
    plan, pins = build_plan(defs, RESERVED, {})
    cols = {name: hint["data_type"] for name, hint in plan.columns().items()}
    expected = {
        "a_varchar": "text",
        "a_varchar_auto": "text",
        "a_text": "text",
        "a_phone": "text",
        "a_varchar_options": "text",
        "a_double": "double",
        "an_int": "bigint",
        "a_bool": "bool",
        "budget": "double",
        "budget_currency": "text",
        "a_date": "date",
        "a_daterange": "date",
        "a_daterange_until": "date",
        "a_time": "time",
        "a_time_timezone": "text",
        "a_timerange": "time",
        "a_timerange_until": "time",
        "an_enum": "text",
        "a_set": "json",
        **{f"a_{t}": "bigint" for t in ID_TYPES},
        "a_lead": "text",
        "office": "text",
        **{f"office_{c}": "text" for c in ADDRESS_COMPONENTS},
        "a_picture": "json",
        "no_type": "json",
        "title_custom": "text",
    }
    assert cols == expected
    assert list(cols) == list(expected)  # plan order = definition order
    for name, hint in plan.columns().items():
        assert hint == {"name": name, "data_type": expected[name], "nullable": True}
    assert key(21) not in pins
    assert pins == {fp.field.key: fp.column for fp in plan.fields}
    snake = NamingConvention(max_length=63)
    assert all(snake.normalize_identifier(c) == c for c in cols)


def test_plan_labels_and_outputs() -> None:
    plan = plan_of(fdef("enum", "Customer Type", options=OPTIONS), fdef("monetary", "Budget", n=2))
    enum, money = plan.fields
    assert enum.labels == {"1": "VIP", "2": "Partner", "3": "Lead"}
    assert enum.outputs == (OutputColumn("customer_type", "text"),)
    assert money.labels == {}
    assert money.outputs == (
        OutputColumn("budget", "double"),
        OutputColumn("budget_currency", "text"),
    )


def test_build_plan_keeps_pins_and_adds_new_ones() -> None:
    renamed = fdef("enum", "Kundentyp", n=1, options=OPTIONS)
    new = fdef("monetary", "Budget", n=2)
    plan, pins = build_plan([renamed, new], RESERVED, {key(1): "customer_type"})
    assert pins == {key(1): "customer_type", key(2): "budget"}
    assert list(plan.columns()) == ["customer_type", "budget", "budget_currency"]


def test_new_field_never_takes_a_pinned_sub_output() -> None:
    budget = fdef("monetary", "Budget", n=1)
    clash = fdef("varchar", "Budget Currency", n=2)
    _, pins = build_plan([clash, budget], RESERVED, {key(1): "budget"})
    assert pins[key(2)] == "budget_currency_2"


def test_inactive_pinned_field_keeps_its_columns() -> None:
    old = fdef("monetary", "Old budget", n=1, is_active=False)
    plan, pins = build_plan([old], RESERVED, {key(1): "old_budget"})
    assert pins == {key(1): "old_budget"}
    assert plan.columns()["old_budget_currency"]["data_type"] == "text"
    (fp,) = plan.fields
    assert fp.field.is_active is False


def test_deleted_pinned_field_is_planned_from_previous_definition() -> None:
    gone = fdef("daterange", "Contract", n=1)
    plan, pins = build_plan([], RESERVED, {key(1): "contract"}, previous=[gone])
    assert pins == {key(1): "contract"}
    (fp,) = plan.fields
    assert fp.field.is_active is False and fp.field.field_type == "daterange"
    assert plan.columns() == {
        "contract": {"name": "contract", "data_type": "date", "nullable": True},
        "contract_until": {"name": "contract_until", "data_type": "date", "nullable": True},
    }
    # values of a deleted field are simply null
    result = py(normalize_page([{"id": 1, "custom_fields": {}}], plan, V2))
    assert result == {"contract": [None], "contract_until": [None]}


def test_deleted_pinned_field_without_previous_definition_is_listed_without_outputs() -> None:
    plan, pins = build_plan([], RESERVED, {key(1): "mystery"})
    assert pins == {key(1): "mystery"}
    (fp,) = plan.fields
    assert fp.column == "mystery" and fp.field.is_active is False and fp.outputs == ()
    assert plan.columns() == {}
    assert normalize_page([{"id": 1}], plan, V1) == {}
    assert plan.v1_keys() == {key(1)}


def test_v1_keys() -> None:
    plan = plan_of(
        fdef("varchar", "A", n=1),
        fdef("monetary", "B", n=2),
        fdef("daterange", "C", n=3),
        fdef("time", "D", n=4),
        fdef("timerange", "E", n=5),
        fdef("address", "F", n=6, subfields=("plus_code",)),
        fdef("picture", "G", n=7, subfields=("thumb",)),
        fdef("varchar", "Standard", n=8, is_custom=False),
    )
    assert plan.v1_keys() == {
        key(1),
        key(2),
        key(2) + "_currency",
        key(3),
        key(3) + "_until",
        key(4),
        key(4) + "_timezone_id",
        key(4) + "_timezone_name",
        key(5),
        key(5) + "_until",
        key(5) + "_timezone_id",
        key(5) + "_timezone_name",
        key(6),
        *(f"{key(6)}_{c}" for c in ADDRESS_COMPONENTS),
        key(6) + "_plus_code",
        key(7),
        key(7) + "_thumb",
    }


# --------------------------------------------------------------------------- simple types

# (field_type, input values, expected column values, expected variant values or None)
SIMPLE_CASES: list[tuple[str, list[Any], list[Any], list[Any] | None]] = [
    (
        "varchar",
        ["hello", None, MISSING, "", LONG_TEXT, ODD_TEXT, 12, 1.5, True, {"a": "ü"}, [1]],
        ["hello", None, None, "", LONG_TEXT, ODD_TEXT, "12", "1.5", "true", '{"a":"ü"}', "[1]"],
        None,
    ),
    (
        "text",
        [LONG_TEXT, None, "\ud800x", "a\ud83d\ude00b"],
        [LONG_TEXT, None, "\ufffdx", "a😀b"],
        None,
    ),
    ("phone", ["+49 30 123", 4930123, MISSING], ["+49 30 123", "4930123", None], None),
    ("varchar_auto", ["Berlin", None], ["Berlin", None], None),
    ("varchar_options", ["a", None], ["a", None], None),
    (
        "lead",
        ["adf21080-0e10-11eb-879b-05d71fb426ec", None, MISSING],
        ["adf21080-0e10-11eb-879b-05d71fb426ec", None, None],
        None,
    ),
    (
        "double",
        [1.5, 2, "3.25", " -4e2 ", "0", None, MISSING, "", "abc", True, {"v": 1}, "1e999", 10**400],
        [1.5, 2.0, 3.25, -400.0, 0.0, None, None, None, None, None, None, None, None],
        [None] * 8 + ["abc", "true", '{"v":1}', "1e999", "1" + "0" * 400],
    ),
    (
        "int",
        [5, "7", 7.0, " -3 ", "8.0", None, MISSING, "", "7.5", 2**70, "x", False, [1]],
        [5, 7, 7, -3, 8, None, None, None, None, None, None, None, None],
        [None] * 8 + ["7.5", str(2**70), "x", "false", "[1]"],
    ),
    (
        "boolean",
        [True, False, "true", "FALSE", "1", "0", 1, 0, None, MISSING, "", "maybe", 2, {"a": 1}],
        [True, False, True, False, True, False, True, False, None, None, None, None, None, None],
        [None] * 11 + ["maybe", "2", '{"a":1}'],
    ),
    (
        "date",
        [
            "2024-01-15",
            "2024-02-29",
            None,
            MISSING,
            "",
            "2024-13-45",
            "15.01.2024",
            20240115,
            {"a": 1},
        ],
        [dt.date(2024, 1, 15), dt.date(2024, 2, 29), None, None, None, None, None, None, None],
        [None] * 5 + ["2024-13-45", "15.01.2024", "20240115", '{"a":1}'],
    ),
    (
        "enum",
        [
            1,
            "2",
            99,
            "99",
            {"id": 1, "label": "Old"},
            {"id": 77, "label": "Gone"},
            3.0,
            None,
            MISSING,
        ],
        ["VIP", "Partner", "99", "99", "VIP", "Gone", "Lead", None, None],
        None,
    ),
    (
        "set",
        [
            [1, 2],
            "1,2",
            "1, 2",
            [1, 99],
            "2,99",
            [],
            "",
            None,
            MISSING,
            1,
            "3",
            [{"id": 2, "label": "P"}],
        ],
        [
            '["VIP","Partner"]',
            '["VIP","Partner"]',
            '["VIP","Partner"]',
            '["VIP","99"]',
            '["Partner","99"]',
            None,
            None,
            None,
            None,
            '["VIP"]',
            '["Lead"]',
            '["Partner"]',
        ],
        None,
    ),
    *[
        (
            t,
            [
                5,
                "6",
                {"value": 7, "name": "Ann"},
                {"id": 8},
                {"value": None},
                None,
                MISSING,
                "abc",
                1.5,
                True,
                {"name": "x"},
            ],
            [5, 6, 7, 8, None, None, None, None, None, None, None],
            [None] * 7 + ["abc", "1.5", "true", '{"name":"x"}'],
        )
        for t in ID_TYPES
    ],
    *[
        (
            t,
            [{"a": [1, 2]}, "x", 5, None, MISSING, [1, "ü"], False],
            ['{"a":[1,2]}', '"x"', "5", None, None, '[1,"ü"]', "false"],
            None,
        )
        for t in ("picture", "json", "visible_to", "some_future_type", "")
    ],
]


@SHAPES
@pytest.mark.parametrize(
    ("field_type", "values", "expected", "variants"),
    SIMPLE_CASES,
    ids=[f"{c[0] or 'untyped'}-{i}" for i, c in enumerate(SIMPLE_CASES)],
)
def test_simple_types(
    shape: Api,
    field_type: str,
    values: list[Any],
    expected: list[Any],
    variants: list[Any] | None,
) -> None:
    f = fdef(field_type, "Col", options=OPTIONS if field_type in ("enum", "set") else ())
    result = py(run(simple_rows(f, shape, values), shape, f))
    assert result["col"] == expected
    if variants is None:
        assert list(result) == ["col"]
    else:
        assert list(result) == ["col", "col__v_text"]
        assert result["col__v_text"] == variants


@SHAPES
@pytest.mark.parametrize("field_type", ["double", "int", "boolean", "date", "user", "set", "enum"])
def test_no_variant_column_when_page_is_clean(shape: Api, field_type: str) -> None:
    good = {"double": 1.5, "int": 3, "boolean": True, "date": "2024-01-01", "user": 1}
    f = fdef(field_type, "Col", options=OPTIONS)
    result = run(simple_rows(f, shape, [good.get(field_type, 1), None, MISSING]), shape, f)
    assert list(result) == ["col"]


def test_set_json_is_valid_json_with_unicode_labels() -> None:
    options = (FieldOption(1, 'Größe "XL"'), FieldOption(2, "价格, 高"))
    f = fdef("set", "Sizes", options=options)
    (value,) = py(run(v2_rows(f, [[1, 2, 3]]), V2, f))["sizes"]
    assert orjson.loads(value) == ['Größe "XL"', "价格, 高", "3"]


def test_enum_with_label_objects_v2_include_option_labels() -> None:
    f = fdef("enum", "Stage", options=OPTIONS)
    rows = v2_rows(f, [{"id": 2, "label": "Partner"}, {"id": 5, "label": None}, {"label": "X"}])
    assert py(run(rows, V2, f))["stage"] == ["Partner", "5", "X"]


# --------------------------------------------------------------------------- compound types


def test_monetary_v2() -> None:
    f = fdef("monetary", "Budget")
    rows = v2_rows(
        f,
        [
            {"value": 1.5, "currency": "EUR"},
            {"value": "2.5", "currency": "USD"},
            {"value": None, "currency": "EUR"},
            {"value": "abc", "currency": "CHF"},
            3,
            {},
            None,
            MISSING,
        ],
    )
    assert py(run(rows, V2, f)) == {
        "budget": [1.5, 2.5, None, None, 3.0, None, None, None],
        "budget__v_text": [None, None, None, "abc", None, None, None, None],
        "budget_currency": ["EUR", "USD", "EUR", "CHF", None, None, None, None],
    }


def test_monetary_v1() -> None:
    f = fdef("monetary", "Budget")
    rows = v1_rows(
        f,
        [
            {"": 1.5, "_currency": "EUR"},
            {"": "2.5", "_currency": "USD"},
            {"": None, "_currency": None},
            {"": "1.000,50", "_currency": "EUR"},
            {},
        ],
    )
    assert py(run(rows, V1, f)) == {
        "budget": [1.5, 2.5, None, None, None],
        "budget__v_text": [None, None, None, "1.000,50", None],
        "budget_currency": ["EUR", "USD", None, "EUR", None],
    }


def test_daterange_v2() -> None:
    f = fdef("daterange", "Contract")
    rows = v2_rows(
        f,
        [
            {"value": "2024-01-01", "until": "2024-12-31"},
            {"value": "2024-01-01", "until": None},
            {"value": "2024-01-01", "until": "2024-02-30"},
            "2024-05-05",
            None,
            MISSING,
        ],
    )
    d = dt.date
    assert py(run(rows, V2, f)) == {
        "contract": [d(2024, 1, 1), d(2024, 1, 1), d(2024, 1, 1), d(2024, 5, 5), None, None],
        "contract_until": [d(2024, 12, 31), None, None, None, None, None],
        "contract_until__v_text": [None, None, "2024-02-30", None, None, None],
    }


def test_daterange_v1() -> None:
    f = fdef("daterange", "Contract")
    rows = v1_rows(
        f,
        [{"": "2024-01-01", "_until": "2024-12-31"}, {"": {"x": 1}, "_until": None}, {}],
    )
    assert py(run(rows, V1, f)) == {
        "contract": [dt.date(2024, 1, 1), None, None],
        "contract__v_text": [None, '{"x":1}', None],
        "contract_until": [dt.date(2024, 12, 31), None, None],
    }


def test_time_v2_with_and_without_timezone() -> None:
    f = fdef("time", "Call at")
    rows = v2_rows(
        f,
        [
            {"value": "10:30:00", "timezone_id": 1, "timezone_name": "Europe/Berlin"},
            {"value": "23:59:59.5", "timezone_id": 2, "timezone_name": None},
            "08:15:00",
            "08:15",
            {"value": "25:00:00", "timezone_name": "UTC"},
            {"value": None, "timezone_name": "UTC"},
            None,
            MISSING,
        ],
    )
    t = dt.time
    assert py(run(rows, V2, f)) == {
        "call_at": [t(10, 30), t(23, 59, 59, 500_000), t(8, 15), t(8, 15), None, None, None, None],
        "call_at__v_text": [None, None, None, None, "25:00:00", None, None, None],
        "call_at_timezone": ["Europe/Berlin", None, None, None, "UTC", "UTC", None, None],
    }


def test_time_v1_with_and_without_timezone() -> None:
    f = fdef("time", "Call at")
    rows = v1_rows(
        f,
        [
            {"": "10:30:00", "_timezone_id": 1, "_timezone_name": "Europe/Berlin"},
            {"": "11:00:00", "_timezone_id": 3},
            {"": "noon"},
            {},
        ],
    )
    assert py(run(rows, V1, f)) == {
        "call_at": [dt.time(10, 30), dt.time(11), None, None],
        "call_at__v_text": [None, None, "noon", None],
        "call_at_timezone": ["Europe/Berlin", None, None, None],
    }


@SHAPES
def test_timerange(shape: Api) -> None:
    f = fdef("timerange", "Shift")
    parts = [
        ("09:00:00", "17:30:00"),
        ("09:00:00", None),
        (None, None),
        (900, "18:00:00"),
    ]
    if shape == V2:
        rows = v2_rows(f, [{"value": a, "until": b, "timezone_id": 1} for a, b in parts])
    else:
        rows = v1_rows(f, [{"": a, "_until": b, "_timezone_id": 1} for a, b in parts])
    t = dt.time
    assert py(run(rows, shape, f)) == {
        "shift": [t(9), t(9), None, None],
        "shift__v_text": [None, None, None, "900"],
        "shift_until": [t(17, 30), None, None, t(18)],
    }


FULL_ADDRESS = {
    "value": "Unter den Linden 1, 10117 Berlin",
    "street_number": "1",
    "route": "Unter den Linden",
    "sublocality": "Mitte",
    "locality": "Berlin",
    "admin_area_level_1": "Berlin",
    "admin_area_level_2": None,
    "country": "Germany",
    "postal_code": "10117",
    "subpremise": None,
    "formatted_address": "Unter den Linden 1, 10117 Berlin, Germany",
}


def _address_expectation(column: str, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {column: [r.get("") for r in rows]}
    for c in ADDRESS_COMPONENTS:
        out[f"{column}_{c}"] = [r.get(c) for r in rows]
    return out


def test_address_v2() -> None:
    f = fdef("address", "Office")
    only_formatted = {"formatted_address": "Somewhere 5", "locality": "Köln", "country": None}
    rows = v2_rows(f, [FULL_ADDRESS, only_formatted, "Plain string address", None, MISSING])
    result = py(run(rows, V2, f))
    expected = _address_expectation(
        "office",
        [
            {"": FULL_ADDRESS["value"], **{c: FULL_ADDRESS[c] for c in ADDRESS_COMPONENTS}},
            {"": "Somewhere 5", "formatted_address": "Somewhere 5", "locality": "Köln"},
            {"": "Plain string address"},
            {},
            {},
        ],
    )
    assert result == expected
    assert list(result) == list(expected)


def test_address_v1() -> None:
    f = fdef("address", "Office")
    flat = {"": FULL_ADDRESS["value"], **{"_" + c: FULL_ADDRESS[c] for c in ADDRESS_COMPONENTS}}
    rows = v1_rows(
        f,
        [flat, {"": None, "_formatted_address": "Fallback 1", "_route": "Fallback"}, {}],
    )
    result = py(run(rows, V1, f))
    assert result == _address_expectation(
        "office",
        [
            {"": FULL_ADDRESS["value"], **{c: FULL_ADDRESS[c] for c in ADDRESS_COMPONENTS}},
            {"": "Fallback 1", "formatted_address": "Fallback 1", "route": "Fallback"},
            {},
        ],
    )


@SHAPES
def test_address_extra_subfield_from_definition(shape: Api) -> None:
    f = fdef("address", "Office", subfields=("value", "locality", "plus_code"))
    if shape == V2:
        rows = v2_rows(f, [{"value": "X", "plus_code": "9F4MGC22+22", "locality": 12345}])
    else:
        rows = v1_rows(f, [{"": "X", "_plus_code": "9F4MGC22+22", "_locality": 12345}])
    result = py(run(rows, shape, f))
    assert list(result)[-1] == "office_plus_code"
    assert result["office_plus_code"] == ["9F4MGC22+22"]
    assert result["office_locality"] == ["12345"]  # text accepts anything
    assert result["office"] == ["X"]
    assert "office_value" not in result


# --------------------------------------------------------------------------- whole pages

FIELD_TYPES = [
    "varchar",
    "text",
    "phone",
    "double",
    "int",
    "boolean",
    "monetary",
    "date",
    "daterange",
    "time",
    "timerange",
    "enum",
    "set",
    *ID_TYPES,
    "lead",
    "address",
    "picture",  # a type this code does not know
    "",
]
ALL_TYPES_DEFS = [
    fdef(t, f"F {t or 'untyped'}", n=i, options=OPTIONS) for i, t in enumerate(FIELD_TYPES)
]


@pytest.mark.parametrize(
    "rows",
    [
        [{"id": 1, "custom_fields": None}, {"id": 2}, {"id": 3, "custom_fields": []}],
        [{"id": 1, "custom_fields": {}}, {"id": 2, "custom_fields": "garbage"}],
    ],
    ids=["null-missing-list", "empty-garbage"],
)
def test_v2_without_custom_fields_gives_all_nulls(rows: list[dict[str, Any]]) -> None:
    result = run(rows, V2, *ALL_TYPES_DEFS)
    assert not any(n.endswith("__v_text") for n in result)
    for name, arr in result.items():
        assert arr.null_count == len(rows), name


def test_v1_rows_without_custom_keys_give_all_nulls() -> None:
    result = run(
        [{"id": 1, "title": "x"}, {"id": 2, "custom_fields": {"ignored": 1}}], V1, *ALL_TYPES_DEFS
    )
    assert all(arr.null_count == 2 for arr in result.values())


@SHAPES
def test_empty_page(shape: Api) -> None:
    result = run([], shape, *ALL_TYPES_DEFS)
    assert result and all(len(a) == 0 for a in result.values())


def test_v1_and_v2_shapes_agree() -> None:
    opts = OPTIONS
    money = fdef("monetary", "Budget", n=1)
    kind = fdef("enum", "Kind", n=2, options=opts)
    tags = fdef("set", "Tags", n=3, options=opts)
    owner = fdef("user", "Owner", n=4)
    when = fdef("time", "When", n=5)
    v2 = [
        {
            "id": 1,
            "custom_fields": {
                money.key: {"value": 10, "currency": "EUR"},
                kind.key: 2,
                tags.key: [1, 3],
                owner.key: 7,
                when.key: {"value": "12:00:00", "timezone_id": 1, "timezone_name": "Europe/Oslo"},
            },
        }
    ]
    v1 = [
        {
            "id": 1,
            money.key: "10",
            money.key + "_currency": "EUR",
            kind.key: "2",
            tags.key: "1,3",
            owner.key: {"id": 7, "name": "Ann", "value": 7},
            when.key: "12:00:00",
            when.key + "_timezone_id": 1,
            when.key + "_timezone_name": "Europe/Oslo",
        }
    ]
    defs = (money, kind, tags, owner, when)
    assert (
        py(run(v1, V1, *defs))
        == py(run(v2, V2, *defs))
        == {
            "budget": [10.0],
            "budget_currency": ["EUR"],
            "kind": ["Partner"],
            "tags": ['["VIP","Lead"]'],
            "owner": [7],
            "when": [dt.time(12)],
            "when_timezone": ["Europe/Oslo"],
        }
    )


def test_normalize_page_big_page_and_mixed_bad_values() -> None:
    f_num = fdef("double", "Amount", n=1)
    f_date = fdef("date", "Due", n=2)
    rows = [
        {
            "id": i,
            f_num.key: (i if i % 97 else "n/a"),
            f_date.key: ("2024-03-01" if i % 50 else "soon"),
        }
        for i in range(500)
    ]
    result = py(run(rows, V1, f_num, f_date))
    assert list(result) == ["amount", "amount__v_text", "due", "due__v_text"]
    assert result["amount"][1] == 1.0 and result["amount"][97] is None
    assert result["amount__v_text"][97] == "n/a" and result["amount__v_text"][1] is None
    assert sum(v is not None for v in result["due__v_text"]) == 10
    assert result["due"][1] == dt.date(2024, 3, 1)


def test_rows_may_be_any_mapping() -> None:
    from types import MappingProxyType

    f = fdef("double", "Amount")
    rows = [MappingProxyType({"id": 1, f.key: 2.5})]
    assert py(normalize_page(rows, plan_of(f), V1)) == {"amount": [2.5]}


# --------------------------------------------------------------------------- label changes


def _enum_plan(labels: Mapping[int, str], field_type: str = "enum") -> ColumnPlan:
    options = tuple(FieldOption(i, label) for i, label in labels.items())
    return plan_of(fdef(field_type, "Customer Type", options=options))


def test_known_labels_only_for_enum_and_set() -> None:
    plan = plan_of(
        fdef("enum", "A", n=1, options=OPTIONS),
        fdef("set", "B", n=2, options=OPTIONS[:1]),
        fdef("varchar", "C", n=3),
    )
    assert known_labels(plan) == {
        key(1): {"1": "VIP", "2": "Partner", "3": "Lead"},
        key(2): {"1": "VIP"},
    }


@pytest.mark.parametrize("field_type", ["enum", "set"])
def test_label_rename_is_reported(field_type: str) -> None:
    previous = known_labels(_enum_plan({1: "VIP", 2: "Partner"}, field_type))
    plan = _enum_plan({1: "Very Important", 2: "Partner", 3: "New"}, field_type)
    assert option_label_changes(previous, plan) == [
        LabelChange("customer_type", field_type, "VIP", "Very Important")  # type: ignore[arg-type]
    ]


def test_no_changes() -> None:
    plan = _enum_plan({1: "VIP", 2: "Partner"})
    assert option_label_changes(known_labels(plan), plan) == []
    assert option_label_changes({}, plan) == []


def test_deleted_and_added_options_are_not_changes() -> None:
    previous = {key(1): {"1": "VIP", "2": "Partner"}}
    assert option_label_changes(previous, _enum_plan({1: "VIP", 3: "Other"})) == []


def test_ambiguous_changes_are_skipped() -> None:
    # old label shared by two options: rows holding "VIP" cannot be attributed
    shared = {key(1): {"1": "VIP", "2": "VIP", "3": "Lead"}}
    assert option_label_changes(shared, _enum_plan({1: "Gold", 2: "VIP", 3: "Prospect"})) == [
        LabelChange("customer_type", "enum", "Lead", "Prospect")
    ]
    # swap: applying either rename first would corrupt the other
    swap = {key(1): {"1": "A", "2": "B"}}
    assert option_label_changes(swap, _enum_plan({1: "B", 2: "A"})) == []
    # the old label is now carried by another option
    reuse = {key(1): {"1": "A", "2": "B"}}
    assert option_label_changes(reuse, _enum_plan({1: "C", 2: "A"})) == []


def test_label_changes_ignore_non_option_fields() -> None:
    plan = plan_of(fdef("varchar", "Customer Type"))
    assert option_label_changes({key(1): {"1": "x"}}, plan) == []
