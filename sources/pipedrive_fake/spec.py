"""The official Pipedrive OpenAPI specs as JSON Schema, for validating real responses.

`load_spec("v2")` parses `schemas/openapi/pipedrive-v2.yaml` once per process (about a second).
`validator_for("v2", "/deals")` gives a jsonschema validator for that endpoint's 200 response:

* `$ref`s are resolved and `allOf`s are merged into one object schema;
* every property may be null: the spec omits `nullable` on many properties that the real API
  returns as null (won_time, org_id, address parts...);
* `type`, `enum`, `format` (date, date-time as RFC 3339, uuid) are kept and checked;
* an object that declares `properties` without `additionalProperties` gets
  `additionalProperties: false`, so a response cannot carry a name the spec does not know
  (`custom_fields` declares `additionalProperties: true` and stays open).

A few places where the spec and the real API disagree are listed in `KNOWN_GAPS`; validators
apply them unless `gaps=False`. Usable outside the fake (any test that wants spec checks).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

SPEC_DIR = Path(__file__).resolve().parents[2] / "schemas" / "openapi"
SPEC_FILES = {"v1": "pipedrive-v1.yaml", "v2": "pipedrive-v2.yaml"}

# keys copied from an OpenAPI schema object into the JSON Schema; the rest is documentation
_KEEP = (
    "type",
    "enum",
    "format",
    "required",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "multipleOf",
    "uniqueItems",
)
_DOC_KEYS = frozenset(
    {"description", "example", "examples", "title", "readOnly", "writeOnly", "deprecated", "xml"}
)


@functools.cache
def load_spec(version: str) -> dict[str, Any]:
    """The parsed spec ("v1" or "v2"), cached for the whole process."""
    path = SPEC_DIR / SPEC_FILES[version]
    with path.open("rb") as f:
        return yaml.load(f, Loader=yaml.CSafeLoader)


def operation(version: str, path: str, method: str = "get") -> dict[str, Any]:
    return load_spec(version)["paths"][path][method]


def token_cost(version: str, path: str, method: str = "get") -> int:
    """The spec's `x-token-cost` of an operation."""
    return int(operation(version, path, method)["x-token-cost"])


def _deref(
    spec: Mapping[str, Any], node: Any, seen: tuple[str, ...] = ()
) -> tuple[Any, tuple[str, ...]]:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen:  # a recursive schema: stop here, accept anything
            return {}, seen
        seen = (*seen, ref)
        target: Any = spec
        for part in ref.lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node, seen


def response_schema(
    version: str, path: str, status: str = "200", method: str = "get"
) -> dict[str, Any]:
    """The raw OpenAPI schema of one response (top-level `$ref` resolved)."""
    spec = load_spec(version)
    response, _ = _deref(spec, operation(version, path, method)["responses"][status])
    schema = response["content"]["application/json"]["schema"]
    return _deref(spec, schema)[0]


def unauthorized_schema_raw(version: str = "v1") -> dict[str, Any]:
    """The spec's 401 body schema (`unathorizedResponse`; only the v1 spec has one)."""
    spec = load_spec(version)
    for item in spec["paths"].values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            resp = op.get("responses", {}).get("401")
            if not resp:
                continue
            resp, _ = _deref(spec, resp)
            schema = resp.get("content", {}).get("application/json", {}).get("schema")
            if schema and "errorCode" in _deref(spec, schema)[0].get("properties", {}):
                return _deref(spec, schema)[0]
    raise LookupError(f"no 401 schema with errorCode in the {version} spec")


def _merge_all_of(
    spec: Mapping[str, Any], node: dict[str, Any], seen: tuple[str, ...]
) -> dict[str, Any]:
    """Merge `allOf` members (and the node's own keys) into one raw schema.

    Properties are united (a property declared twice must satisfy both declarations); any other
    keyword declared differently by two members is kept as an extra constraint (`x-also`).
    """
    members: list[dict[str, Any]] = []
    for member in node["allOf"]:
        m, member_seen = _deref(spec, member, seen)
        if isinstance(m, dict) and "allOf" in m:
            m = _merge_all_of(spec, m, member_seen)
        members.append(m if isinstance(m, dict) else {})
    members.append({k: v for k, v in node.items() if k != "allOf"})
    merged: dict[str, Any] = {}
    props: dict[str, Any] = {}
    also: list[dict[str, Any]] = []
    for m in members:
        for key, value in m.items():
            if key in _DOC_KEYS:
                continue
            if key == "properties":
                for name, sub in value.items():
                    props[name] = {"allOf": [props[name], sub]} if name in props else sub
            elif key == "required":
                merged["required"] = sorted({*merged.get("required", []), *value})
            elif key == "nullable":
                merged["nullable"] = bool(merged.get("nullable")) or bool(value)
            elif key == "x-also":
                also.extend(value)
            elif key in merged and merged[key] != value:
                also.append({key: value})
            else:
                merged[key] = value
    if props:
        merged["properties"] = props
    if also:
        merged["x-also"] = also
    return merged


def nullable(schema: Any) -> Any:
    """The same JSON Schema, also accepting null."""
    if schema is True or schema == {}:
        return schema
    if schema is False:
        return {"type": "null"}
    t = schema.get("type")
    if t is not None and not any(k in schema for k in ("allOf", "anyOf", "oneOf", "not")):
        out = dict(schema)
        types = list(t) if isinstance(t, list) else [t]
        if "null" not in types:
            types.append("null")
        out["type"] = types
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [{"type": "null"}, schema]}


def to_json_schema(
    node: Any,
    spec: Mapping[str, Any] | None = None,
    *,
    all_nullable: bool = True,
    strict: bool = True,
    _seen: tuple[str, ...] = (),
) -> Any:
    """Convert an OpenAPI 3.0 schema object to JSON Schema (see the module docstring).

    `all_nullable`: every object property also accepts null. `strict`: objects with
    `properties` and no `additionalProperties` reject unknown names.
    """
    spec = spec or {}
    node, seen = _deref(spec, node, _seen)
    if not isinstance(node, dict):
        return {}
    if "allOf" in node:
        node = _merge_all_of(spec, node, seen)

    def conv(sub: Any) -> Any:
        return to_json_schema(sub, spec, all_nullable=all_nullable, strict=strict, _seen=seen)

    out: dict[str, Any] = {k: copy.deepcopy(node[k]) for k in _KEEP if k in node}
    if "items" in node:
        out["items"] = conv(node["items"])
    if "properties" in node:
        props = {}
        for name, sub in node["properties"].items():
            converted = conv(sub)
            props[name] = nullable(converted) if all_nullable else converted
        out["properties"] = props
    if "additionalProperties" in node:
        ap = node["additionalProperties"]
        out["additionalProperties"] = ap if isinstance(ap, bool) else (conv(ap) if ap else True)
    elif "properties" in node and strict:
        out["additionalProperties"] = False
    for key in ("oneOf", "anyOf"):
        if key in node:
            out[key] = [conv(x) for x in node[key]]
    if "not" in node:
        out["not"] = conv(node["not"])
    if node.get("x-also"):
        out["allOf"] = [conv(x) for x in node["x-also"]]
    if node.get("nullable"):
        return nullable(out)
    return out


# --- places where the official spec and the real API disagree -----------------------------------

CUSTOM_FIELD_KEY_PATTERN = r"^[0-9a-f]{40}(_[a-z0-9_]+)?$"
V1_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
V1_PAGINATION = {
    "type": ["object", "null"],
    "properties": {
        "start": {"type": ["integer", "null"]},
        "limit": {"type": ["integer", "null"]},
        "more_items_in_collection": {"type": ["boolean", "null"]},
        "next_start": {"type": ["integer", "null"]},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Gap:
    """A documented difference between the spec and the real API, applied to a converted schema.

    `where` is a dotted path through `properties`/`items` ("data.items", "additional_data", "").
    """

    version: str
    path: str  # "*" matches every path
    status: str
    where: str
    reason: str
    add_properties: Mapping[str, Any] = field(default_factory=dict)
    pattern_properties: Mapping[str, Any] = field(default_factory=dict)


KNOWN_GAPS: tuple[Gap, ...] = (
    Gap(
        "v2",
        "/activities",
        "200",
        "data.items",
        "activities carry custom fields (activityFields lists them) but the spec's list item "
        "has no custom_fields",
        add_properties={
            "custom_fields": {"type": ["object", "null"], "additionalProperties": True}
        },
    ),
    *(
        Gap(
            "v1",
            p,
            "200",
            "data.items",
            "v1 leads carry the deal custom fields as flat `<hash>` / `<hash>_<part>` keys, "
            "which the spec's Lead schema does not list",
            pattern_properties={CUSTOM_FIELD_KEY_PATTERN: {}},
        )
        for p in ("/leads", "/leads/archived")
    ),
    *(
        Gap(
            "v1",
            p,
            "200",
            "additional_data",
            "the v1 list envelope nests paging in additional_data.pagination (as the spec's "
            "own examples show); the schema lists start/limit flat",
            add_properties={"pagination": V1_PAGINATION},
        )
        for p in ("/leads", "/leads/archived", "/leadFields", "/noteFields")
    ),
    *(
        Gap(
            "v1",
            p,
            "200",
            "additional_data",
            "the real v1 pagination carries next_start (the spec's own callLogs example shows "
            "it); the schema leaves it out",
            add_properties={"pagination": V1_PAGINATION},
        )
        for p in ("/callLogs", "/roles")
    ),
    Gap(
        "v1",
        "/activityTypes",
        "200",
        "data.items",
        "activity types' add_time/update_time are 'YYYY-MM-DD HH:MM:SS' (the spec's own example) "
        "although the schema says date-time",
        add_properties={
            k: {"type": ["string", "null"], "pattern": V1_TIME_PATTERN}
            for k in ("add_time", "update_time")
        },
    ),
    Gap(
        "v1",
        "/files",
        "200",
        "data.items",
        "files also carry log_id and file_type (the spec's own example)",
        add_properties={
            "log_id": {"type": ["integer", "null"]},
            "file_type": {"type": ["string", "null"]},
        },
    ),
    Gap(
        "v1",
        "/goals/find",
        "200",
        "",
        "the goals envelope also carries statusCode, statusText and service (the spec's own "
        "example)",
        add_properties={
            "statusCode": {"type": ["integer", "null"]},
            "statusText": {"type": ["string", "null"]},
            "service": {"type": ["string", "null"]},
        },
    ),
    Gap(
        "v1",
        "*",
        "401",
        "",
        "the real 401 body also carries error_info",
        add_properties={"error_info": {"type": ["string", "null"]}},
    ),
)


def _object_at(schema: dict[str, Any], where: str) -> dict[str, Any]:
    node = schema
    for part in [p for p in where.split(".") if p]:
        if "anyOf" in node:
            node = next(s for s in node["anyOf"] if s.get("type") != "null")
        node = node["items"] if part == "items" else node["properties"][part]
    if "anyOf" in node:
        node = next(s for s in node["anyOf"] if s.get("type") != "null")
    return node


def apply_gaps(schema: dict[str, Any], version: str, path: str, status: str) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    for gap in KNOWN_GAPS:
        if gap.version != version or gap.status != status or gap.path not in ("*", path):
            continue
        target = _object_at(schema, gap.where)
        if gap.add_properties:
            target.setdefault("properties", {}).update(copy.deepcopy(dict(gap.add_properties)))
        if gap.pattern_properties:
            target.setdefault("patternProperties", {}).update(
                copy.deepcopy(dict(gap.pattern_properties))
            )
    return schema


@functools.cache
def _json_schema_cached(version: str, path: str, status: str, gaps: bool) -> dict[str, Any]:
    spec = load_spec(version)
    raw = unauthorized_schema_raw(version) if status == "401" else response_schema(version, path)
    converted = to_json_schema(raw, spec)
    return apply_gaps(converted, version, path, status) if gaps else converted


def json_schema_for(
    version: str, path: str, status: str = "200", *, gaps: bool = True
) -> dict[str, Any]:
    """The converted JSON Schema of a GET response (`status="401"`: the spec's 401 body)."""
    return copy.deepcopy(_json_schema_cached(version, path, status, gaps))


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_rfc3339(value: str) -> bool:
    return bool(_RFC3339.match(value))


def format_checker() -> Any:
    """jsonschema's checker plus strict `date-time` (RFC 3339) and `date` (YYYY-MM-DD)."""
    import jsonschema

    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.match(value):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time")
        return True

    @checker.checks("date", raises=ValueError)
    def _date(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _DATE.match(value):
            raise ValueError(f"{value!r} is not YYYY-MM-DD")
        date.fromisoformat(value)
        return True

    return checker


def validator_for(version: str, path: str, status: str = "200", *, gaps: bool = True) -> Any:
    """A jsonschema validator (Draft 2020-12, formats checked) for a GET response body."""
    import jsonschema

    return jsonschema.Draft202012Validator(
        json_schema_for(version, path, status, gaps=gaps), format_checker=format_checker()
    )


def item_properties(version: str, path: str, data_key: str | None = None) -> list[str]:
    """Property names of one list item (`data.items`, or `data.<data_key>.items`) of a GET
    endpoint, in spec order."""
    schema = json_schema_for(version, path, gaps=False)
    where = f"data.{data_key}.items" if data_key else "data.items"
    return list(_object_at(schema, where).get("properties", {}))


def errors(validator: Any, body: Any, limit: int = 10) -> list[str]:
    """Readable validation errors, at most `limit`."""
    out: list[str] = []
    for err in validator.iter_errors(body):
        where = "/".join(str(p) for p in err.absolute_path)
        out.append(f"{where}: {err.message[:300]}")
        if len(out) >= limit:
            break
    return out


__all__ = [
    "KNOWN_GAPS",
    "Gap",
    "apply_gaps",
    "errors",
    "format_checker",
    "is_rfc3339",
    "item_properties",
    "json_schema_for",
    "load_spec",
    "nullable",
    "operation",
    "response_schema",
    "to_json_schema",
    "token_cost",
    "unauthorized_schema_raw",
    "validator_for",
]
