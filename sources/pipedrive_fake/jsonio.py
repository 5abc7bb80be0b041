"""JSON in and out of the fake the way Pipedrive's servers write it, strings of any kind included.

orjson refuses strings holding lone surrogates (half of a UTF-16 pair, which Pipedrive's
JavaScript keeps in a text); JavaScript's `JSON.stringify` writes them as `\\udXXX` escapes and
everything else as UTF-8. `dumps` does the same, so a test can store any Python string in a
record and the fake serves what Pipedrive would.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; lone surrogates as `\\udXXX` escapes (JavaScript's way)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # two halves written next to each other in one string form a character in JavaScript
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def loads(content: bytes) -> Any:
    """The inverse of `dumps` (lone surrogates come back as they were stored)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)
