"""shopkit.jsonbody: strict JSON for request bodies."""

from __future__ import annotations

import json

import pytest
from shopkit.jsonbody import MAX_DEPTH, InvalidJson, loads


@pytest.mark.parametrize("raw", [
    b'{"a": NaN}', b"[Infinity]", b"-Infinity",
    b'{"a": "\\ud800"}', b'{"\\udc00": 1}', b'["x\\udbff"]',
    b"[" * 1000 + b"]" * 1000,
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b'{"a": "\xff"}', '{"a": 1}'.encode("utf-16"), b"\xef\xbb\xbf{}",
    b"1" * 5000,
    b'{"a"', b"",
], ids=["nan", "infinity", "minus-infinity", "surrogate-value", "surrogate-key",
        "surrogate-in-list", "1000-deep", "one-too-deep", "not-utf8", "utf16", "bom",
        "5000-digit-int", "truncated", "empty"])
def test_what_is_not_strict_json_is_invalid_json(raw):
    with pytest.raises(InvalidJson) as caught:
        loads(raw)

    assert isinstance(caught.value, json.JSONDecodeError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("raw", [
    b'{"a": 1.5, "b": [true, null, "x"]}', b'"\\ud83d\\ude00"', "\u00e9\u4e2d".join('""').encode(),
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, b"1e308", b"-0",
])
def test_strict_json_parses_as_json_does(raw):
    assert loads(raw) == json.loads(raw)
