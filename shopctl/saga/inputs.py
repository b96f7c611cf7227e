"""A saga's input: parsed from the command line and checked against its declaration.

`--input key=value` (a value that parses as JSON is JSON: `qty=2` is a number,
`items=[...]` a list, `name=bob` a string), `--input-file FILE` (a JSON or YAML mapping;
`-` reads stdin). Later sources win: the file first, then each --input in order.

A saga may declare its input in shop.yaml:

    sagas:
      delivery:
        input:
          parcel_id: string                       # short for {type: string}
          weight_kg: {type: number, required: false, default: 1}
Declared keys are checked for presence and type before anything runs; undeclared keys are
refused (a typo would otherwise pass silently). A saga that declares nothing takes any
mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from shopctl.config.problems import did_you_mean
from shopctl.errors import UsageError

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,),
}


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'}; UsageError for a pair without '='."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--input {pair!r}: expected KEY=VALUE",
                             hint="e.g. --input user_id=u-1 --input 'items=[1, 2]'")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def parse_document(text: str, where: str) -> dict[str, Any]:
    """A JSON or YAML mapping (JSON is YAML); UsageError naming `where` otherwise."""
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: not JSON or YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping of input keys, found "
                         f"{type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    for name, types in _TYPES.items():
        if isinstance(value, types) and not (name in ("integer", "number")
                                             and isinstance(value, bool)):
            return name
    return "null" if value is None else type(value).__name__


def _fits(value: Any, wanted: str) -> bool:
    if wanted == "any":
        return True
    if isinstance(value, bool) and wanted != "boolean":
        return False
    return isinstance(value, _TYPES[wanted])


def check(saga: str, declared: Mapping[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` with defaults filled in; UsageError listing every missing, unknown or
    ill-typed key. `declared`: {key: {type, required, default}} (a SagaInputField dump)."""
    if not declared:
        return dict(given)
    problems = []
    result = dict(given)
    for key, field in declared.items():
        if key not in given:
            if field.get("default") is not None:
                result[key] = field["default"]
            elif field.get("required", True):
                problems.append(f"missing {key} ({field.get('type', 'any')})")
            continue
        wanted = field.get("type", "any")
        if not _fits(given[key], wanted):
            problems.append(f"{key}: expected {'an' if wanted[0] in 'aeiou' else 'a'} "
                            f"{wanted}, found {_type_name(given[key])} {given[key]!r}"[:200])
    for key in given:
        if key not in declared:
            hint = did_you_mean(key, declared)
            problems.append(f"unknown input {key!r}" + (f" ({hint})" if hint else ""))
    if problems:
        usage = " ".join(f"--input {k}=..." for k, f in declared.items()
                         if f.get("required", True) and f.get("default") is None)
        raise UsageError(f"saga {saga!r} input: " + "; ".join(problems),
                         hint=f"declared in shop.yaml under sagas.{saga}.input; e.g. {usage}")
    return result
