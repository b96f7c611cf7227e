"""Durations written as 250ms, 5s, 2m, 1h, 1m30s, or a plain number of seconds."""

from __future__ import annotations

import math
import re
from typing import Any

from shopctl.config.problems import Invalid, show

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_WHOLE = re.compile(rf"(?:{_PART.pattern})+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: Any) -> float:
    """Seconds as a float; raises Invalid (a ValueError) with a message for people."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        if _WHOLE.fullmatch(text):
            return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    raise Invalid(f"expected a duration like 5s or 250ms, found {show(value)}")


def format_duration(seconds: float) -> str:
    """The shortest of our own spellings for a number of seconds: 0.25 -> '250ms'."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
