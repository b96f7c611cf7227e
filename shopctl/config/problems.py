"""What one problem in shop.yaml looks like, and the exception that carries all of them.

Every stage of the pipeline (reading, YAML, interpolation, schema, cross-checks) reports
ConfigProblems instead of raising on the first one, so the user sees everything at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from shopctl.errors import ConfigError

FieldPath = tuple[str | int, ...]
Position = tuple[int, int]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file. line and col are 1-based, None when unknown."""

    file: str
    line: int | None
    col: int | None
    path: str
    message: str
    hint: str | None = None

    def location(self) -> str:
        if self.line is None:
            return self.file
        if self.col is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"

    def format(self) -> str:
        text = f"{self.location()}: {self.path + ': ' if self.path else ''}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConfigInvalid(ConfigError):
    """A ConfigError listing every problem found, sorted by position."""

    def __init__(self, file: str, problems: Iterable[ConfigProblem], header: str | None = None):
        ordered = sorted(problems, key=lambda p: (p.line or 0, p.col or 0))
        count = len(ordered)
        if header is None:
            header = f"{file} is invalid ({count} problem{'' if count == 1 else 's'}):"
        super().__init__("\n".join([header, *(p.format() for p in ordered)]))
        self.file = file
        self.problems: list[ConfigProblem] = ordered

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "problems": [p.to_dict() for p in self.problems]}


class Invalid(ValueError):
    """Raised by our validators: a message written for people, plus an optional hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def format_path(path: FieldPath) -> str:
    """('services', 'shipping', 'port') -> 'services.shipping.port'; list items as steps[2]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


def locate(positions: Mapping[FieldPath, Position], path: FieldPath) -> Position:
    """Position of path, or of its nearest ancestor that is written in the file."""
    for end in range(len(path), 0, -1):
        found = positions.get(path[:end])
        if found is not None:
            return found
    return positions.get((), (1, 1))


def problem_at(
    file: str,
    positions: Mapping[FieldPath, Position],
    path: FieldPath,
    message: str,
    hint: str | None = None,
) -> ConfigProblem:
    line, col = locate(positions, path)
    return ConfigProblem(file, line, col, format_path(path), message, hint)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def show(value: Any) -> str:
    """How a found value is quoted in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"
