"""Duration parsing and formatting."""

from __future__ import annotations

import pytest

from shopctl.config import format_duration, parse_duration
from shopctl.config.problems import Invalid


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h2m3s4ms", 3723.004),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("0s", 0.0),
        (" 10s ", 10.0),
        ("3", 3.0),
        ("2.5", 2.5),
        (7, 7.0),
        (0.1, 0.1),
        (0, 0.0),
    ],
)
def test_valid(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("5 parsecs", "'5 parsecs'"),
        ("5 s", "'5 s'"),
        ("s", "'s'"),
        ("", "''"),
        ("-5s", "'-5s'"),
        ("5sec", "'5sec'"),
        ("1d", "'1d'"),
        (-1, "-1"),
        (float("inf"), "inf"),
        (True, "true"),
        (None, "nothing"),
        ([5], "a list"),
    ],
)
def test_invalid(value: object, found: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_duration(value)
    assert str(info.value) == f"expected a duration like 5s or 250ms, found {found}"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (5, "5s"), (1.5, "1.5s"), (120, "2m"), (90, "90s"), (3600, "1h"), (0, "0s")],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
