"""The one conversion layer: values parsed from Pipedrive's JSON → typed arrow columns.

Every path that builds a table calls it: the row path for standard columns (`pages`) and for
custom fields (`custom_fields`), and the columnar path (`columnar`), whose vectorized casts
(`cast_strings`) take only values these parsers read the same way, and which runs the
parsers once per distinct string of a column they decline (`per_distinct`). Pure: no I/O.

Types are dlt data types; `ARROW_TYPES` gives their arrow types (json columns hold JSON text).
One rule for every column:

* null stays null; in a column that is not text, so does a blank string (``""``, spaces);
* a value that fits the column's type becomes its typed value (`PARSERS`);
* a value that does not fit becomes null, and its text - strings as they are, anything else
  as JSON - goes to the variant column ``<column>__v_text`` (`VARIANT_SUFFIX`), which exists
  for a page only when some value needed it, the way dlt itself handles type conflicts.

What fits (surrounding whitespace of strings is ignored):

=========  ==============================================================================
text       anything: strings as they are, other values as their JSON text
json       anything, as its JSON text
bigint     an integer within int64; a float or a numeric string with an integral value
           (``7.0``, ``"7"``, ``" -3 "``, ``"8.0"``, ``"1e3"``)
double     a number within the double range; a decimal string (``"3.25"``, ``"-4e2"``)
bool       true/false; the numbers 0 and 1; the strings true/false, 1/0, yes/no (any case)
timestamp  ISO 8601: ``YYYY-MM-DD``, then optionally ``T`` or a space, ``HH[:MM[:SS[.f]]]``
           and ``Z`` or an offset; without an offset (v1's ``"2024-06-01 12:00:00"``) UTC
date       ``YYYY-MM-DD``
time       ``H:MM``, ``HH:MM``, ``HH:MM:SS``, ``HH:MM:SS.ffffff``
=========  ==============================================================================

Where the row paths for standard columns and for custom fields used to differ, the custom
fields' rule won (it is the stricter one, or the one that keeps more): a blank string is null
(standard columns used to put ``""`` in the variant column), yes/no are booleans, numeric
strings must be plain decimals (no ``"nan"``, ``"inf"``, ``"1_000"``), dates are exactly
``YYYY-MM-DD`` and times ``HH:MM[:SS[.f]]`` (standard columns also took the date out of a
timestamp and any ISO time); and a float with a fraction in an integer column is a variant
(standard columns truncated it). Strings reach this layer repaired (`http.jsonbody`); a lone
surrogate that still comes in (a caller of its own) becomes U+FFFD instead of failing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "ARROW_TYPES",
    "BAD",
    "PARSERS",
    "TIMESTAMP",
    "VARIANT_SUFFIX",
    "Variants",
    "as_text",
    "cast_strings",
    "convert",
    "iso_datetime",
    "json_text",
    "per_distinct",
    "string_array",
    "typed_column",
]

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
ARROW_TYPES: Final[Mapping[str, pa.DataType]] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TIMESTAMP,
    "date": pa.date32(),
    "time": pa.time64("us"),
    "json": pa.string(),
}
VARIANT_SUFFIX: Final = "__v_text"
"""Appended to a column's name for the text of values that did not fit its type."""

BAD: Final[Any] = object()
"""What a parser returns for a value that does not fit its type."""

Variants = list[str | None] | None
Parser = Callable[[Any], Any]

_STRING = pa.string()
_NONE = type(None)
_MISS: Any = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# ASCII digits only: Python's \d and int() also take other scripts' digits
_DECIMAL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIMESTAMP_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?", re.ASCII)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


# --------------------------------------------------------------------------- text


def json_text(value: Any) -> str:
    """A value's compact JSON text (integers beyond 64 bits included)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def from_json_text(value: Any) -> Any:
    """A JSON column's value as a warehouse returns it (text, bytes or already parsed) →
    Python (None for text that is not JSON)."""
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def as_text(value: Any) -> str | None:
    """A value for a text column: strings as they are, None as None, others as JSON text."""
    if value is None or type(value) is str:
        return value
    return json_text(value)


def _clean_str(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # pairs halves that belong together, one U+FFFD per lone one
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def string_array(values: list[Any]) -> pa.Array:
    """Strings (and None) → an arrow string array; lone surrogates become U+FFFD."""
    try:
        return pa.array(values, _STRING)
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([None if v is None else _clean_str(v) for v in values], _STRING)


# --------------------------------------------------------------------------- parsers


def iso_datetime(text: str) -> datetime:
    """An ISO 8601 date or time (see the module docstring) as an aware UTC datetime; no zone
    means UTC. Raises ValueError for anything else."""
    text = text.strip()
    if _TIMESTAMP_RE.fullmatch(text) is None:
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def aware_datetime(value: datetime | str | None) -> datetime | None:
    """A stored time — a datetime (naive means UTC) or ISO 8601 text — as an aware UTC
    datetime; nothing stored: None. Raises ValueError for text that is no time."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return iso_datetime(value)


def iso_datetime_or_none(value: Any) -> datetime | None:
    """`iso_datetime` for text that may be anything: None when it is no ISO 8601 time."""
    if not isinstance(value, str):
        return None
    try:
        return iso_datetime(value)
    except ValueError:
        return None


def _blank(value: str) -> bool:
    return not value or value.isspace()


def parse_bigint(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else BAD
    if kind is float:
        return parse_bigint(int(value)) if value.is_integer() else BAD
    if kind is not str:
        return BAD
    text = value.strip()
    if not text:
        return None
    if _INT_RE.fullmatch(text):
        return parse_bigint(int(text))
    if _DECIMAL_RE.fullmatch(text):
        return parse_bigint(float(text))
    return BAD


def parse_double(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return BAD
    if kind is not str:
        return BAD
    text = value.strip()
    if not text:
        return None
    if _DECIMAL_RE.fullmatch(text):
        number = float(text)
        return number if number - number == 0.0 else BAD  # huge exponents give inf
    return BAD


def parse_bool(value: Any) -> Any:
    kind = type(value)
    if kind is bool:
        return value
    if (kind is int or kind is float) and value in (0, 1):
        return bool(value)
    if kind is not str:
        return BAD
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return BAD


def parse_timestamp(value: Any) -> Any:
    if type(value) is not str:
        return BAD
    if _blank(value):
        return None
    try:
        return iso_datetime(value)
    except ValueError:
        return BAD


def parse_date(value: Any) -> Any:
    if type(value) is not str:
        return BAD
    text = value.strip()
    if not text:
        return None
    if _DATE_RE.fullmatch(text) is None:
        return BAD
    try:
        return date.fromisoformat(text)
    except ValueError:
        return BAD


def parse_time(value: Any) -> Any:
    """Microseconds since midnight (arrow's time64[us])."""
    if type(value) is not str:
        return BAD
    text = value.strip()
    if not text:
        return None
    match = _TIME_RE.fullmatch(text)
    if match is None:
        return BAD
    hours, minutes, seconds, fraction = match.groups()
    h, m, s = int(hours), int(minutes), int(seconds or 0)
    if h > 23 or m > 59 or s > 59:
        return BAD
    return ((h * 60 + m) * 60 + s) * 1_000_000 + int((fraction or "0").ljust(6, "0"))


PARSERS: Final[Mapping[str, Parser]] = {
    "bigint": parse_bigint,
    "double": parse_double,
    "bool": parse_bool,
    "timestamp": parse_timestamp,
    "date": parse_date,
    "time": parse_time,
}


# --------------------------------------------------------------------------- columns

# JSON types whose values arrow converts exactly as the parser would (None: never)
_ARROW_TAKES: Mapping[str, frozenset[type]] = {
    "bigint": frozenset({int, _NONE}),
    "double": frozenset({int, float, _NONE}),
    "bool": frozenset({bool, _NONE}),
}
_STRINGS_ONLY = frozenset({str, _NONE})


def convert(
    values: list[Any], data_type: str, parse: Parser | None = None
) -> tuple[pa.Array, Variants]:
    """One column's values → (typed array, variant texts or None when every value fit).

    `parse` replaces the type's parser (e.g. to unwrap objects first); it must return what
    `PARSERS[data_type]` returns for every value arrow takes as it is.
    """
    if data_type == "text":
        try:  # arrow takes nothing but str and None
            return pa.array(values, _STRING), None
        except (UnicodeEncodeError, pa.ArrowException):
            return string_array([as_text(v) for v in values]), None
    if data_type == "json":
        return string_array([None if v is None else json_text(v) for v in values]), None
    target = ARROW_TYPES[data_type]
    kinds = set(map(type, values))
    takes = _ARROW_TAKES.get(data_type)
    if takes is not None and kinds <= takes:
        try:
            return pa.array(values, target), None
        except (OverflowError, pa.ArrowException):  # beyond int64, or not exact as a double
            pass
    elif kinds <= _STRINGS_ONLY and data_type in _CASTS:
        cast = cast_strings(string_array(values), data_type)
        if cast is not None:
            return cast, None
    return _value_by_value(values, parse or PARSERS[data_type], target)


def _value_by_value(
    values: list[Any], parse: Parser, target: pa.DataType
) -> tuple[pa.Array, Variants]:
    typed: list[Any] = []
    variants: Variants = None
    memo: dict[str, Any] = {}  # pages repeat strings (times, dates): parse each once
    for i, value in enumerate(values):
        if value is None:
            typed.append(None)
            continue
        if type(value) is str:
            result = memo.get(value, _MISS)
            if result is _MISS:
                result = memo[value] = parse(value)
        else:
            result = parse(value)
        if result is BAD:
            result = None
            if variants is None:
                variants = [None] * len(values)
            variants[i] = _clean_str(value) if type(value) is str else json_text(value)
        typed.append(result)
    return pa.array(typed, target), variants


def typed_column(values: list[Any], data_type: str) -> tuple[pa.Array, pa.Array | None]:
    """`convert`, with the variant texts as an arrow array."""
    array, variants = convert(values, data_type)
    return array, None if variants is None else pa.array(variants, _STRING)


# --------------------------------------------------------------------------- vectorized casts

# the spellings arrow's casts read exactly as the parsers do; anything else is parsed
_DAY = r"[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_CLOCK = r"([01]\d|2[0-3]):[0-5]\d"
_CASTS: Mapping[str, str] = {
    "date": f"^{_DAY}$",
    "timestamp": rf"^{_DAY}[T ]{_CLOCK}(:[0-5]\d(\.\d{{1,6}})?)?(Z|[+-]{_CLOCK})$",
    "time": rf"^{_CLOCK}(:[0-5]\d)?$",
}


def cast_strings(strings: pa.Array, data_type: str) -> pa.Array | None:
    """A string array → `data_type` (date, timestamp, time) in arrow, when every value is
    spelled so that arrow's cast gives what the parser gives; None otherwise."""
    pattern = _CASTS.get(data_type)
    if pattern is None or not pa.types.is_string(strings.type):
        return None
    if strings.null_count == len(strings):
        return pa.nulls(len(strings), ARROW_TYPES[data_type])
    if pc.all(pc.match_substring_regex(strings, pattern)).as_py() is not True:
        return None
    try:
        if data_type == "time":  # arrow casts strings to timestamps, not to times
            day = pc.binary_join_element_wise("1970-01-01 ", strings, "")
            return day.cast(pa.timestamp("us")).cast(pa.time64("us"))
        return strings.cast(ARROW_TYPES[data_type])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. February 30th
        return None


def per_distinct(
    converter: Callable[[list[Any]], tuple[pa.Array, Variants]], strings: pa.Array
) -> tuple[pa.Array, pa.Array | None]:
    """`converter` (one of one value at a time: `convert`, a field's, a label column's)
    run on a string column's distinct values only, then spread back by position. Pages
    repeat their dates, times and id lists, so a column that no vectorized cast takes (an
    impossible date among thousands of good ones) costs a Python call per distinct value,
    not per row."""
    encoded = pc.dictionary_encode(strings)
    typed, variants = converter(encoded.dictionary.to_pylist())
    indices = encoded.indices
    if variants is None:
        return typed.take(indices), None
    return typed.take(indices), pa.array(variants, pa.string()).take(indices)
