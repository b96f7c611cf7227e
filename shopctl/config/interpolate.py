"""Compose-style variable interpolation in string values.

    $$            a literal $
    $VAR ${VAR}   the variable's value; unset is a problem (empty is fine)
    ${VAR:-word}  word when VAR is unset or empty      ${VAR-word}  word when unset
    ${VAR:?msg}   a problem when VAR is unset or empty  ${VAR?msg}   a problem when unset
    ${VAR:+word}  word when VAR is set and not empty   ${VAR+word}  word when set

`word` may itself contain interpolations. Only string values are interpolated, never keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shopctl.config.problems import FieldPath

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # two-character ones first


@dataclass(frozen=True)
class Issue:
    message: str
    hint: str | None = None
    syntax: bool = False  # syntax issues are reported even inside an unused default


class InterpolationError(ValueError):
    def __init__(self, issue: Issue):
        super().__init__(issue.message)
        self.issue = issue


class _Unclosed(Exception):
    pass


def _unset(name: str) -> Issue:
    return Issue(f"variable {name} is not set (use ${{{name}:-default}} for a default)")


class _Expander:
    def __init__(self, text: str, env: Mapping[str, str]):
        self.text = text
        self.env = env
        self.issues: list[Issue] = []

    def run(self) -> str:
        try:
            value, _ = self.word(0, inside=False)
        except _Unclosed:
            self.issues.append(
                Issue("unclosed '${' in " + repr(self.text), "close it with '}'", syntax=True)
            )
            return self.text
        return value

    def word(self, i: int, inside: bool) -> tuple[str, int]:
        """Expand from i; inside braces, stop at the '}' that closes them."""
        text, out = self.text, []
        while i < len(text):
            char = text[i]
            if char == "}" and inside:
                return "".join(out), i
            if char != "$":
                out.append(char)
                i += 1
                continue
            following = text[i + 1 : i + 2]
            if following == "$":
                out.append("$")
                i += 2
            elif following == "{":
                value, i = self.braced(i)
                out.append(value)
            elif match := _NAME.match(text, i + 1):
                name = match.group()
                if name not in self.env:
                    self.issues.append(_unset(name))
                out.append(self.env.get(name, ""))
                i = match.end()
            else:
                self.issues.append(
                    Issue(
                        f"'$' at character {i + 1} of {text!r} starts no variable",
                        "write $$ for a literal $",
                        syntax=True,
                    )
                )
                out.append("$")
                i += 1
        if inside:
            raise _Unclosed
        return "".join(out), i

    def braced(self, start: int) -> tuple[str, int]:
        """Expand `${...}` starting at the '$'; return its value and the index after '}'."""
        text = self.text
        match = _NAME.match(text, start + 2)
        end = match.end() if match else start + 2
        operator = next((op for op in _OPERATORS if text.startswith(op, end)), None)
        if not match or (operator is None and text[end : end + 1] != "}"):
            close = text.find("}", start)
            if close < 0:
                raise _Unclosed
            self.issues.append(
                Issue(
                    f"invalid variable reference {text[start : close + 1]!r}",
                    "use ${NAME}, ${NAME:-default} or ${NAME:?message}; "
                    "a name has letters, digits and _",
                    syntax=True,
                )
            )
            return "", close + 1
        name = match.group()
        if operator is None:
            if name not in self.env:
                self.issues.append(_unset(name))
            return self.env.get(name, ""), end + 1
        issues_before = len(self.issues)
        word, close = self.word(end + len(operator), inside=True)
        current = self.env.get(name)
        is_set = current is not None
        has_value = bool(current)
        use_word = {
            ":-": not has_value,
            "-": not is_set,
            ":+": has_value,
            "+": is_set,
        }.get(operator, False)
        if not use_word:  # the word was not needed: forget what expanding it complained about
            self.issues[issues_before:] = [i for i in self.issues[issues_before:] if i.syntax]
        if operator in (":?", "?") and not (has_value if operator == ":?" else is_set):
            state = "is not set" if not is_set else "is empty"
            self.issues.append(Issue(f"variable {name} {state}: {word or 'a value is required'}"))
            return "", close + 1
        if operator in (":+", "+"):
            return (word if use_word else ""), close + 1
        if operator in (":?", "?"):
            return current or "", close + 1
        return (word if use_word else current or ""), close + 1


def expand(text: str, env: Mapping[str, str]) -> tuple[str, list[Issue]]:
    """Interpolate one string; return its value and every issue found."""
    if "$" not in text:
        return text, []
    expander = _Expander(text, env)
    value = expander.run()
    return value, expander.issues


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Interpolate one string, raising InterpolationError for its first issue."""
    value, issues = expand(text, env)
    if issues:
        raise InterpolationError(issues[0])
    return value


def interpolate_tree(
    data: Any, env: Mapping[str, str], path: FieldPath = ()
) -> tuple[Any, list[tuple[FieldPath, Issue]]]:
    """Interpolate every string value in nested dicts and lists (keys are left alone)."""
    found: list[tuple[FieldPath, Issue]] = []

    def walk(value: Any, where: FieldPath) -> Any:
        if isinstance(value, str):
            result, issues = expand(value, env)
            found.extend((where, issue) for issue in issues)
            return result
        if isinstance(value, dict):
            return {key: walk(item, (*where, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*where, index)) for index, item in enumerate(value)]
        return value

    return walk(data, path), found
