"""`http.jsonbody.clean`: what it repairs in a response body, and what it leaves byte for byte."""

from __future__ import annotations

import orjson
import pytest

from sources.pipedrive.http.jsonbody import clean

# (body as sent, body after clean)
REPAIRED = [
    (rb'"\ud800"', rb'"\ufffd"'),
    (rb'"\uDBFF x"', rb'"\ufffd x"'),
    (rb'"\udc00"', rb'"\ufffd"'),
    (rb'"a\uDFFFb"', rb'"a\ufffdb"'),
    (rb'"\ude00\ud83d"', rb'"\ufffd\ufffd"'),  # halves in the wrong order
    (rb'"\ud83d\ud83d\ude00"', rb'"\ufffd\ud83d\ude00"'),  # a high half before a pair
    (rb'"\ud83d\ude00\ude00"', rb'"\ud83d\ude00\ufffd"'),  # a low half after a pair
    (rb'"\ud83d"', rb'"\ufffd"'),  # a pair cut at the end of the string
    (rb'"\ud83d\u0041"', rb'"\ufffd\u0041"'),
    (rb'"\u0000"', rb'"\ufffd"'),
    (rb'"\u00000"', rb'"\ufffd0"'),
    (rb'{"k\u0000": "\u0000\u0000"}', rb'{"k\ufffd": "\ufffd\ufffd"}'),  # in keys too
    (rb'{"\ud800": 1}', rb'{"\ufffd": 1}'),
    (b'\xef\xbb\xbf{"a": 1}', b'{"a": 1}'),  # a byte order mark before the JSON
    (b'"a\xffb"', b'"a\xef\xbf\xbdb"'),  # not UTF-8
    (b'"\xed\xa0\x80"', b'"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"'),  # a surrogate as UTF-8 bytes
    (b'"cut \xe2\x82"', b'"cut \xef\xbf\xbd"'),
]
UNCHANGED = [
    rb'"\ud83d\ude00"',  # a pair is one character
    rb'"\uD83D\uDE00"',
    rb'"\\ud800"',  # an escaped backslash, then text
    rb'"\\\\ud800 \\\ud83d\ude00"',
    rb'"\u00e9\n\t\"\/\u2028"',
    rb'"\u0001 \u001f \u0010"',  # other control characters are text; only NUL is not
    '"\u2028\u2029 \ufeff inside \u202e rtl עברית 👨‍👩‍👧"'.encode(),
    b'{"a": [1, 2.5, true, null], "b": {"c": "d"}}',
    b"",
    b"<html>not json</html>",
]


@pytest.mark.parametrize(("sent", "cleaned"), REPAIRED)
def test_what_no_warehouse_holds_becomes_the_replacement_character(
    sent: bytes, cleaned: bytes
) -> None:
    assert clean(sent) == cleaned
    orjson.loads(cleaned)  # parses, and parses to valid Unicode


@pytest.mark.parametrize("sent", UNCHANGED)
def test_everything_else_stays_byte_for_byte(sent: bytes) -> None:
    assert clean(sent) == sent


def test_a_clean_body_is_not_copied() -> None:
    body = b'{"data": [' + b'{"title": "x"},' * 10_000 + b'{"title": "\xc3\xbc"}]}'
    assert clean(body) is body


def test_a_long_body_with_many_escapes_is_repaired_everywhere() -> None:
    record = rb'{"t": "\ud800 \\ud800 \ud83d\ude00 \u0000 \n"}'
    body = b"[" + b",".join([record] * 5_000) + b"]"
    rows = orjson.loads(clean(body))
    assert len(rows) == 5_000
    assert {row["t"] for row in rows} == {"\ufffd \\ud800 😀 \ufffd \n"}
