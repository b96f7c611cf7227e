"""Strict JSON for request bodies: what RFC 8259 allows, and nothing that can make a
service fail later on.

Python's json module also takes NaN and Infinity (not JSON; a response echoing them
cannot be serialised), lone UTF-16 surrogates such as "\\ud800" (str values that can
never be encoded as UTF-8, so SQLite, scrypt or the response fail on them), any depth
of nesting (1,000 levels raise RecursionError, in the parser or in whatever walks the
value next) and UTF-16 or UTF-32 bodies. `loads` refuses all of those with
InvalidJson, a json.JSONDecodeError, so code that already answers malformed JSON with
a 4xx (FastAPI: 422 json_invalid; Flask's get_json: 400) does so for these as well.
"""

from __future__ import annotations

import json
from typing import Any

# Far more than any request body of the shop nests; keeps every later walk of the
# value (validation, encoding) far from Python's recursion limit.
MAX_DEPTH = 64


class InvalidJson(json.JSONDecodeError):
    """A request body that is not strict JSON; `msg` says why, `pos` where."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | bytearray | str, max_depth: int = MAX_DEPTH) -> Any:
    """The value of a strict JSON document (UTF-8 when given bytes); InvalidJson else."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJson("body is not UTF-8", "", exc.start) from None
    else:
        text = data
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidJson(exc.msg, exc.doc, exc.pos) from None
    except RecursionError:
        raise InvalidJson(f"nested deeper than {max_depth} levels", text, 0) from None
    except ValueError as exc:  # NaN/Infinity, or an integer of more than 4,300 digits
        raise InvalidJson(str(exc), text, 0) from None
    _check(value, text, max_depth)
    return value


def _check(value: Any, text: str, max_depth: int) -> None:
    """Depth and strings of a parsed value, without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item, text)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidJson(f"nested deeper than {max_depth} levels", text, 0)
            if isinstance(item, dict):
                for key, member in item.items():
                    _check_string(key, text)
                    stack.append((member, depth + 1))
            else:
                stack.extend((member, depth + 1) for member in item)


def _check_string(value: str, text: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJson("a string holds a lone UTF-16 surrogate", text, 0) from None
