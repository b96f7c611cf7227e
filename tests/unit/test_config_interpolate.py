"""Compose-style interpolation of single strings and of whole data trees."""

from __future__ import annotations

import pytest

from shopctl.config.interpolate import InterpolationError, expand, interpolate, interpolate_tree

ENV = {"HOST": "db", "EMPTY": "", "PORT": "5432", "USER_1": "ann"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("${HOST}", "db"),
        ("$HOST", "db"),
        ("$HOST:$PORT", "db:5432"),
        ("${HOST}name", "dbname"),
        ("$USER_1-x", "ann-x"),  # a bare name ends at the first character not in [A-Za-z0-9_]
        ("${EMPTY}", ""),
        ("$$", "$"),
        ("$$HOST", "$HOST"),
        ("$${HOST}", "${HOST}"),
        ("cost: 5$$", "cost: 5$"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${HOST:-fallback}", "db"),
        ("${MISSING-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${MISSING:-}", ""),
        ("${MISSING:-a b:c}", "a b:c"),
        ("${MISSING:-${HOST}}", "db"),
        ("${MISSING:-${ALSO_MISSING:-deep}}", "deep"),
        ("${MISSING:-$$}", "$"),
        ("${HOST:+set}", "set"),
        ("${EMPTY:+set}", ""),
        ("${EMPTY+set}", "set"),
        ("${MISSING+set}", ""),
        ("${HOST:?needed}", "db"),
        ("${EMPTY?needed}", ""),
        ("a}b", "a}b"),
        ("{literal}", "{literal}"),
    ],
)
def test_expansion(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("${MISSING}", "variable MISSING is not set (use ${MISSING:-default} for a default)", None),
        ("$MISSING", "variable MISSING is not set (use ${MISSING:-default} for a default)", None),
        ("${MISSING:?tell me}", "variable MISSING is not set: tell me", None),
        ("${EMPTY:?tell me}", "variable EMPTY is empty: tell me", None),
        ("${MISSING?}", "variable MISSING is not set: a value is required", None),
        ("x${HOST", "unclosed '${' in 'x${HOST'", "close it with '}'"),
        ("${HOST:-${PORT}", "unclosed '${' in '${HOST:-${PORT}'", "close it with '}'"),
        ("${", "unclosed '${' in '${'", "close it with '}'"),
        (
            "${}",
            "invalid variable reference '${}'",
            "use ${NAME}, ${NAME:-default} or ${NAME:?message}; a name has letters, digits and _",
        ),
        (
            "${1ABC}",
            "invalid variable reference '${1ABC}'",
            "use ${NAME}, ${NAME:-default} or ${NAME:?message}; a name has letters, digits and _",
        ),
        (
            "${HOST NAME}",
            "invalid variable reference '${HOST NAME}'",
            "use ${NAME}, ${NAME:-default} or ${NAME:?message}; a name has letters, digits and _",
        ),
        (
            "price 5$",
            "'$' at character 8 of 'price 5$' starts no variable",
            "write $$ for a literal $",
        ),
        ("$ 5", "'$' at character 1 of '$ 5' starts no variable", "write $$ for a literal $"),
    ],
)
def test_errors(text: str, message: str, hint: str | None) -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate(text, ENV)
    assert str(info.value) == message
    assert info.value.issue.hint == hint


def test_every_unset_variable_in_a_string_is_reported() -> None:
    value, issues = expand("${A}-${B}-$HOST", ENV)
    assert value == "--db"
    assert [issue.message for issue in issues] == [
        "variable A is not set (use ${A:-default} for a default)",
        "variable B is not set (use ${B:-default} for a default)",
    ]


def test_an_unused_default_is_not_checked_for_unset_variables() -> None:
    assert expand("${HOST:-${MISSING}}", ENV) == ("db", [])


def test_an_unused_default_is_still_checked_for_syntax() -> None:
    value, issues = expand("${HOST:-$}", ENV)
    assert value == "db"
    assert [issue.message for issue in issues] == [
        "'$' at character 9 of '${HOST:-$}' starts no variable"
    ]


def test_tree_interpolates_values_not_keys_and_leaves_other_types() -> None:
    data = {
        "${HOST}": "${HOST}",
        "list": ["$PORT", 3, None, {"deep": "${MISSING:-x}"}],
        "flag": True,
        "number": 1.5,
    }
    result, issues = interpolate_tree(data, ENV)
    assert result == {
        "${HOST}": "db",
        "list": ["5432", 3, None, {"deep": "x"}],
        "flag": True,
        "number": 1.5,
    }
    assert issues == []
    assert data["list"][0] == "$PORT"  # the input is not modified


def test_tree_reports_issue_paths() -> None:
    _, issues = interpolate_tree({"services": {"users": {"env": ["ok", "${NOPE}"]}}}, ENV)
    assert [(path, issue.message) for path, issue in issues] == [
        (
            ("services", "users", "env", 1),
            "variable NOPE is not set (use ${NOPE:-default} for a default)",
        )
    ]
