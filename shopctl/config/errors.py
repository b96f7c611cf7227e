"""Turn pydantic's ValidationError into located ConfigProblems written for people."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from shopctl.config.problems import (
    ConfigProblem,
    FieldPath,
    Position,
    did_you_mean,
    problem_at,
    show,
)

_MISSING_HINTS = {
    "project": "a short lowercase name for the shop, e.g. project: myshop",
    "services": "add the services, e.g.  shipping: {kind: fastapi, port: 8001}",
    "kind": "one of flask, fastapi, nameko, grpc",
    "port": "the port the service listens on, e.g. port: 8001",
    "steps": "a list of steps, each with a name and a call: SERVICE.ACTION",
    "call": "SERVICE.ACTION, e.g. call: shipping.book_slot",
}


def validation_problems(
    error: ValidationError,
    file: str,
    positions: Mapping[FieldPath, Position],
    model: type[BaseModel],
) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        path = loc[:-1] if loc and loc[-1] == "[key]" else loc
        message, hint = _describe(item, loc, model)
        problems.append(problem_at(file, positions, path, message, hint))
    return problems


def _describe(item: dict[str, Any], loc: FieldPath, model: type[BaseModel]):
    kind = item["type"]
    found = item.get("input")
    context = item.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        cause = context.get("error")
        return str(cause), getattr(cause, "hint", None)
    if kind == "missing":
        return "required key is missing", _MISSING_HINTS.get(str(loc[-1]))
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1])
        hint = did_you_mean(key, allowed) if allowed else None
        if hint is None and allowed:
            hint = f"allowed keys here: {', '.join(allowed)}"
        return f"unknown key '{key}'", hint
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, found {show(found)}", None
    if kind == "list_type":
        return f"expected a list, found {show(found)}", None
    if kind == "string_type":
        hint = "put the value in quotes" if isinstance(found, int | float) else None
        return f"expected a string, found {show(found)}", hint
    if kind.startswith("bool_"):
        return f"expected true or false, found {show(found)}", None
    if kind.startswith("int_"):
        return f"expected an integer, found {show(found)}", None
    if kind.startswith("float_"):
        return f"expected a number, found {show(found)}", None
    message = re.sub(r"^(Input|Value) should be ", "expected ", item["msg"])
    return f"{message}, found {show(found)}", None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional: Annotated[int | None, ...] -> int."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: FieldPath) -> type[BaseModel] | None:
    """The model class that validates the mapping at loc, if there is one."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _allowed_keys(model: type[BaseModel], loc: FieldPath) -> list[str]:
    found = _model_at(model, loc)
    if found is None:
        return []
    implied = getattr(found, "implied_keys", frozenset())
    return [name for name in found.model_fields if name not in implied]
