"""Readable column names for custom fields and their deterministic assignment."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from dlt.common.normalizers.naming.snake_case import NamingConvention

from sources.pipedrive.custom_fields import FieldDef
from sources.pipedrive.naming import MAX_NAME_LENGTH, assign_column_names, readable_name

SNAKE = NamingConvention()
SNAKE_63 = NamingConvention(max_length=63)  # Postgres
IDENT = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def fd(name: str, field_type: str = "varchar", key: str | None = None) -> FieldDef:
    key = key or hashlib.sha1(f"{name}/{field_type}".encode()).hexdigest()
    return FieldDef(key=key, name=name, field_type=field_type, options=(), is_custom=True)


def hkey(n: int) -> str:
    return f"{n:040x}"


# --------------------------------------------------------------------------- readable_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Título", "titulo"),
        ("Größe", "grosse"),
        ("价格", "jiage"),
        ("Customer Type", "customer_type"),
        ("Deal's value (€)", "deal_s_value_eur"),
        ("  Budget  ", "budget"),
        ("CamelCaseName", "camelcasename"),
        ("Ünïcödé Straße", "unicode_strasse"),
        ("Москва регион", "moskva_region"),
        ("東京", "dongjing"),
        ("İstanbul", "istanbul"),
        ("cafe\u0301", "cafe"),
        ("a\u200bb", "ab"),
        ("already_snake_case", "already_snake_case"),
        ("double__underscore__", "double_underscore"),
        ("__leading", "leading"),
        ("Win %", "win_pct"),
        ("R&D budget", "r_and_d_budget"),
        ("2024 Budget", "field_2024_budget"),
        ("1st contact", "field_1st_contact"),
        ("½ price", "field_1_2_price"),
        ("★ Rating", "rating"),
        ("Deal 🚀 score", "deal_score"),
        ("a-b+c*d@e|f", "a_b_c_d_e_f"),
    ],
)
def test_readable_name_examples(text: str, expected: str) -> None:
    assert readable_name(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "🎉", "🎉🚀👍🏽", "🇩🇪", "❤️", "!!!", "---", "()", "™©", "\u200b", "..."]
)
def test_readable_name_empty_when_nothing_readable(text: str) -> None:
    assert readable_name(text) == ""


def test_readable_name_truncates_without_trailing_underscore() -> None:
    long = "Very long custom field name that keeps going and going forever"
    name = readable_name(long)
    assert len(name) <= MAX_NAME_LENGTH
    assert name == "very_long_custom_field_name_that_keeps_g"
    cut_at_separator = readable_name("a" * 39 + " bcd")
    assert cut_at_separator == "a" * 39
    assert readable_name("x" * 500) == "x" * MAX_NAME_LENGTH


def _random_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " _-.,;:!?'\"()[]{}<>/\\|@#$%^&*+=~`",
        "äöüßÄÖÜéèêçñøåæœłśźżčřšžőűğışİ",
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВ",
        "αβγδεζηθικλμνξοπρστυφχψωΩΣ",
        "价格客户类型东京大阪日本語한국어",
        "אבגדהوابتثجح",
        "🎉🚀👍🏽❤️🇩🇪★©™€£¥½①Ⅻ",
        "\u200b\u200d\ufe0f\u0301\u00a0\t\n",
    ]
    texts = []
    for _ in range(n):
        length = rng.randint(0, 60)
        texts.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
    return texts


SAMPLES = [
    *_random_texts(3000),
    "Título",
    "价格",
    "Deal's value (€)",
    "2024",
    "_x_",
    "X" * 80,
    "a" * 39 + "_b",
    "Aa" * 30,
]


def test_readable_names_are_fixed_points_of_dlt_snake_case() -> None:
    produced = 0
    for text in SAMPLES:
        name = readable_name(text)
        if not name:
            continue
        produced += 1
        assert IDENT.fullmatch(name), (text, name)
        assert len(name) <= MAX_NAME_LENGTH
        assert SNAKE.normalize_identifier(name) == name, (text, name)
        assert SNAKE_63.normalize_identifier(name) == name, (text, name)
        assert readable_name(name) == name  # idempotent
    assert produced > 2000


def test_assigned_names_and_outputs_are_fixed_points() -> None:
    types = ["address", "daterange", "time", "monetary"]
    fields = [fd(text, types[i % 4], hkey(i)) for i, text in enumerate(SAMPLES[:800])]
    fields += [fd("Title", "monetary", hkey(10_000)), fd("title", "timerange", hkey(10_001))]
    names = assign_column_names(fields, {"id", "title", "value"}, {})
    assert len(set(names.values())) == len(fields)
    for f in fields:
        column = names[f.key]
        assert len(column) <= MAX_NAME_LENGTH
        for suffix in f.output_suffixes:
            out = column + suffix
            assert len(out) <= 63
            assert SNAKE.normalize_identifier(out) == out
            assert SNAKE_63.normalize_identifier(out) == out
        if f.field_type != "address":  # text outputs never get variants
            for suffix in f.output_suffixes:
                variant = column + suffix + "__v_text"
                # dlt builds variant names with its path separator: they survive normalize_path
                assert SNAKE_63.normalize_path(variant) == variant


# --------------------------------------------------------------------------- assign_column_names


def test_new_fields_get_readable_names() -> None:
    a, b = fd("Customer Type", key=hkey(1)), fd("Größe", key=hkey(2))
    assert assign_column_names([a, b], {"id"}, {}) == {a.key: "customer_type", b.key: "grosse"}


def test_collision_with_standard_column_gets_custom_suffix() -> None:
    title, value = fd("Title", key=hkey(1)), fd("Value", "monetary", key=hkey(2))
    names = assign_column_names([title, value], {"id", "title", "value", "currency"}, {})
    assert names == {title.key: "title_custom", value.key: "value_custom"}


def test_sub_output_collision_with_standard_column_gets_custom_suffix() -> None:
    # a monetary field "Deal" would write deal_currency, which is a standard column
    deal = fd("Deal", "monetary", key=hkey(1))
    assert assign_column_names([deal], {"id", "deal_currency"}, {}) == {deal.key: "deal_custom"}


def test_duplicates_get_numbered_in_definition_order() -> None:
    fields = [fd("Source", key=hkey(i)) for i in range(1, 4)] + [fd("source", key=hkey(9))]
    names = assign_column_names(fields, {"id"}, {})
    assert [names[f.key] for f in fields] == ["source", "source_2", "source_3", "source_4"]


def test_custom_suffix_then_numbering() -> None:
    fields = [fd("Title", key=hkey(1)), fd("TITLE", key=hkey(2)), fd("Title Custom", key=hkey(3))]
    names = assign_column_names(fields, {"title"}, {})
    assert [names[f.key] for f in fields] == ["title_custom", "title_custom_2", "title_custom_3"]


def test_numbered_names_stay_within_max_length() -> None:
    long = "Extremely long field name which exceeds the limit"
    fields = [fd(long, key=hkey(i)) for i in range(12)]
    names = [assign_column_names(fields, {"id"}, {})[f.key] for f in fields]
    assert len(set(names)) == 12
    assert all(len(n) <= MAX_NAME_LENGTH for n in names)
    assert names[1].endswith("_2") and names[11].endswith("_12")


def test_emoji_only_names_fall_back_to_key_prefix() -> None:
    party, rocket = fd("🎉", key="ab12cd34" + "0" * 32), fd("!!!", key="9f8e7d6c" + "1" * 32)
    names = assign_column_names([party, rocket], {"id"}, {})
    assert names == {party.key: "field_ab12cd34", rocket.key: "field_9f8e7d6c"}
    assert SNAKE.normalize_identifier("field_9f8e7d6c") == "field_9f8e7d6c"


def test_pinned_names_survive_renames() -> None:
    renamed = fd("Kundentyp", "enum", key=hkey(1))
    names = assign_column_names([renamed], {"id"}, {hkey(1): "customer_type"})
    assert names == {hkey(1): "customer_type"}


def test_pinned_name_kept_even_if_it_collides_with_reserved() -> None:
    # stability wins: users' queries rely on pinned names
    f = fd("Budget", "double", key=hkey(1))
    assert assign_column_names([f], {"budget"}, {hkey(1): "budget"}) == {hkey(1): "budget"}


def test_pins_of_fields_not_in_definitions_are_kept() -> None:
    names = assign_column_names([], {"id"}, {hkey(7): "old_field"})
    assert names == {hkey(7): "old_field"}


def test_new_field_never_takes_a_pinned_name() -> None:
    old, new = fd("Segment", key=hkey(1)), fd("Segment", key=hkey(2))
    # the pinned field was renamed to "Region" but keeps "segment"
    renamed = fd("Region", key=hkey(1))
    names = assign_column_names([new, renamed], {"id"}, {old.key: "segment"})
    assert names == {old.key: "segment", new.key: "segment_2"}


def test_new_field_never_takes_a_sub_output_of_a_pinned_field() -> None:
    budget = fd("Budget", "monetary", key=hkey(1))
    budget_currency = fd("Budget Currency", "varchar", key=hkey(2))
    names = assign_column_names([budget, budget_currency], {"id"}, {budget.key: "budget"})
    assert names[budget_currency.key] == "budget_currency_2"


def test_new_field_never_takes_a_sub_output_of_an_earlier_new_field() -> None:
    office = fd("Office", "address", key=hkey(1))
    locality = fd("Office Locality", key=hkey(2))
    names = assign_column_names([office, locality], {"id"}, {})
    assert names == {office.key: "office", locality.key: "office_locality_2"}


def test_new_field_whose_sub_output_is_taken_gets_numbered() -> None:
    # a pinned text field holds "budget_currency"; a new monetary "Budget" needs that name
    text = fd("Budget Currency", key=hkey(1))
    money = fd("Budget", "monetary", key=hkey(2))
    names = assign_column_names([text, money], {"id"}, {text.key: "budget_currency"})
    assert names[money.key] == "budget_2"


def test_assignment_is_deterministic() -> None:
    fields = [
        fd(t, ft, hkey(i))
        for i, (t, ft) in enumerate(
            [("Source", "varchar"), ("Budget", "monetary"), ("Source", "enum"), ("🎉", "set")]
        )
    ]
    first = assign_column_names(fields, {"id", "title"}, {hkey(99): "source"})
    for _ in range(3):
        assert assign_column_names(list(fields), {"title", "id"}, {hkey(99): "source"}) == first
    assert first[hkey(0)] == "source_2" and first[hkey(2)] == "source_3"


def test_duplicate_keys_first_definition_wins() -> None:
    a, b = fd("Alpha", key=hkey(1)), fd("Beta", key=hkey(1))
    assert assign_column_names([a, b], set(), {}) == {hkey(1): "alpha"}
