"""The entity table is data, checked against the official specs; the pinned schema is current."""

from __future__ import annotations

import pytest

from schemas.generate import SCHEMA_FILE, comparable, load_spec, render
from sources.pipedrive.entities import (
    ENTITIES,
    ENTITY_BY_NAME,
    ME_PATH,
    ME_TOKEN_COST,
    WEBHOOKS_PATH,
    WEBHOOKS_TOKEN_COST,
    Strategy,
    select_entities,
)


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_token_costs_match_the_spec(entity) -> None:
    for stream in entity.streams:
        operation = load_spec(entity.api.value)["paths"]["/" + stream.path]["get"]
        assert stream.token_cost == operation["x-token-cost"], (entity.name, stream.path)


@pytest.mark.parametrize("entity", [e for e in ENTITIES if e.fields_path], ids=lambda e: e.name)
def test_custom_field_endpoints_exist_and_cost_what_the_spec_says(entity) -> None:
    api = entity.effective_fields_api.value
    operation = load_spec(api)["paths"]["/" + entity.fields_path]["get"]
    assert entity.effective_fields_token_cost == operation["x-token-cost"]


def test_the_company_check_costs_what_the_spec_says() -> None:
    operation = load_spec("v1")["paths"]["/" + ME_PATH]["get"]
    assert operation["x-token-cost"] == ME_TOKEN_COST


def test_registering_webhooks_costs_what_the_spec_says() -> None:
    paths = load_spec("v1")["paths"]
    for method, cost in WEBHOOKS_TOKEN_COST.items():
        path = "/" + WEBHOOKS_PATH + ("/{id}" if method == "delete" else "")
        assert paths[path][method]["x-token-cost"] == cost, method


def test_the_committed_schema_is_generated_from_the_specs_and_the_entity_table() -> None:
    assert comparable(SCHEMA_FILE.read_text()) == comparable(render()), "run `make schema-docs`"


def test_selecting_a_per_parent_entity_brings_its_parent() -> None:
    names = [e.name for e in select_entities(["deal_products"])]
    assert names == ["deals", "deal_products"]
    for entity in ENTITIES:
        if entity.strategy is Strategy.PER_PARENT:
            assert entity.parent in ENTITY_BY_NAME and entity.parent_key


def test_unknown_entities_are_named() -> None:
    with pytest.raises(ValueError, match="unicorns"):
        select_entities(["deals", "unicorns"])


def test_the_readme_entity_table_is_current() -> None:
    from schemas.generate import README, readme_with_entity_table

    readme = README.read_text()
    assert "<!-- entities:start -->" in readme
    assert readme == readme_with_entity_table(readme), "run `make schema-docs`"


def test_the_readme_scope_table_matches_the_entity_table() -> None:
    import re

    from schemas.generate import README

    text = README.read_text()
    section = text[text.index("## OAuth apps") : text.index("## Tables")]
    rows = re.findall(r"^\s*\| `([a-z:-]+)`[^|]*\| ([^|]+) \|$", section, flags=re.M)
    assert len(rows) >= 10
    covered = set()
    for scope, tables in rows:
        for table in re.findall(r"[a-z_]+", tables):
            if table in ENTITY_BY_NAME:
                assert scope in ENTITY_BY_NAME[table].scopes, (scope, table)
                covered.add(table)
    assert covered >= {e.name for e in ENTITIES if e.scopes}
