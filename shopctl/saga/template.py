"""Templates that build a participant's request (and a step's result) from saga data.

A template is any YAML value. Strings in it may hold `{{ EXPR }}`, where EXPR is a
JMESPath expression (https://jmespath.org) over the saga's data:

    saga      {id, name, step, phase, key, forward_key, reason}
    input     the saga's input, as given to `shopctl saga run`
    context   the input merged with the result of every step that succeeded so far
    steps     {STEP: result} of the steps that succeeded so far
    response  the participant's answer (only in `result:` templates)

A string that is exactly one `{{ EXPR }}` takes the expression's value with its type (a
number stays a number, a list a list); `{{ }}` inside a longer string is replaced by the
value's text (JSON for lists and objects). Mappings and lists are rendered item by item.
Anything else is a literal. Examples:

    user_id: "{{ input.user_id }}"
    parcels: "{{ context.parcels[*].{id: id, kg: weight} }}"
    path:    "/bookings/{{ context.booking_id }}/cancel"

Templates are compiled once (at config validation and when a saga starts); rendering is
pure. JMESPath gives projections, filters and functions without shopctl inventing a
language of its own.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

ROOTS = ("saga", "input", "context", "steps", "response")
_EXPR = re.compile(r"\{\{(.*?)\}\}", re.S)


class TemplateError(ValueError):
    """A template that cannot compile (syntax) or render (a type error in a function)."""


@functools.lru_cache(maxsize=1024)
def _compiled(expression: str):
    import jmespath
    from jmespath.exceptions import ParseError

    try:
        return jmespath.compile(expression)
    except ParseError as exc:
        raise TemplateError(f"bad expression {{{{ {expression} }}}}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def expressions(template: Any, where: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """(path inside the template, expression) for every `{{ }}` in it."""
    if isinstance(template, str):
        for match in _EXPR.finditer(template):
            yield where, match.group(1).strip()
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from expressions(value, (*where, key))
    elif isinstance(template, list):
        for index, value in enumerate(template):
            yield from expressions(value, (*where, index))


def problems(template: Any, roots: tuple[str, ...] = ROOTS) -> list[tuple[tuple, str]]:
    """What is wrong with a template, as (path inside it, message): expressions that do not
    compile, or that read none of `roots` (a typo such as `contxt.id` would always be null)."""
    found = []
    for where, expression in expressions(template):
        if not expression:
            found.append((where, "empty expression {{ }}"))
            continue
        try:
            parsed = _compiled(expression).parsed
        except TemplateError as exc:
            found.append((where, str(exc)))
            continue
        names = set(_root_names(parsed))
        unknown = sorted(names - set(roots))
        if unknown:
            found.append((where, f"{{{{ {expression} }}}} reads {', '.join(unknown)}, which is "
                                 f"not saga data; expected one of {', '.join(roots)}"))
    return found


def _root_names(node: dict) -> Iterator[str]:
    """The first field each path of a parsed JMESPath expression reads from the document."""
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "field":
        yield node["value"]
    elif kind in ("subexpression", "index_expression"):
        yield from _root_names(children[0])
    elif kind in ("projection", "value_projection", "flatten", "filter_projection"):
        yield from _root_names(children[0])
        # children[1] (and a filter's condition) read the projected items, not the root
    elif kind in ("current", "literal", "identity"):
        return
    elif kind == "function_expression":
        for child in children:
            yield from _root_names(child)
    elif kind in ("multi_select_list", "multi_select_dict", "or_expression", "and_expression",
                  "not_expression", "comparator", "pipe", "key_val_pair"):
        for child in children[:1] if kind == "pipe" else children:
            yield from _root_names(child)


def render(template: Any, data: dict[str, Any]) -> Any:
    """The template with every expression evaluated against `data` (see the module doc)."""
    if isinstance(template, str):
        whole = _EXPR.fullmatch(template.strip())
        if whole is not None and template.strip().count("{{") == 1:
            return _search(whole.group(1).strip(), data)
        if "{{" not in template:
            return template
        return _EXPR.sub(lambda m: _text(_search(m.group(1).strip(), data)), template)
    if isinstance(template, dict):
        return {key: render(value, data) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, data) for value in template]
    return template


def render_text(text: str, data: dict[str, Any], escape: Callable[[str], str] = str) -> str:
    """`text` with each `{{ }}` replaced by its value's text passed through `escape` (a
    URL path's segments are quoted this way)."""
    return _EXPR.sub(lambda m: escape(_text(_search(m.group(1).strip(), data))), text)


_local = threading.local()


def _interpreter():
    """One JMESPath interpreter per thread: ParsedResult.search builds a new one (and its
    function table) on every call, which showed in the saga benchmark's profile."""
    interpreter = getattr(_local, "interpreter", None)
    if interpreter is None:
        from jmespath.visitor import TreeInterpreter

        interpreter = _local.interpreter = TreeInterpreter()
    return interpreter


def _search(expression: str, data: dict[str, Any]) -> Any:
    from jmespath.exceptions import JMESPathError

    try:
        return _interpreter().visit(_compiled(expression).parsed, data)
    except JMESPathError as exc:
        raise TemplateError(f"{{{{ {expression} }}}}: {_first_line(exc)}") from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
