"""YAML with positions: the data, where each key was written, and what is refused."""

from __future__ import annotations

import textwrap

import pytest

from shopctl.config import ConfigInvalid
from shopctl.config.problems import format_path, locate
from shopctl.config.yamlpos import MAX_NODES, load_yaml


def load(text: str):
    return load_yaml(textwrap.dedent(text), "f.yaml")


def test_data_and_positions() -> None:
    doc = load(
        """\
        project: shop   # a comment
        services:
          users:
            port: 8001
            tags: [a, b]
            on: yes
            when: 2024-01-01
            empty:
        """
    )
    assert doc.data == {
        "project": "shop",
        "services": {
            "users": {
                "port": 8001,
                "tags": ["a", "b"],
                "on": True,
                "when": "2024-01-01",
                "empty": None,
            }
        },
    }
    assert doc.positions[("project",)] == (1, 1)
    assert doc.positions[("services", "users")] == (3, 3)
    assert doc.positions[("services", "users", "port")] == (4, 5)
    assert doc.positions[("services", "users", "tags", 1)] == (5, 15)
    assert doc.problems == []


def test_locate_falls_back_to_the_nearest_written_ancestor() -> None:
    doc = load("a:\n  b: 1\n")
    assert locate(doc.positions, ("a", "b", "c", 0)) == (2, 3)
    assert locate(doc.positions, ("zzz",)) == (1, 1)


def test_format_path() -> None:
    assert format_path(("services", "users", "port")) == "services.users.port"
    assert format_path(("sagas", "s", "steps", 2, "call")) == "sagas.s.steps[2].call"
    assert format_path(("env", "a.b c")) == 'env["a.b c"]'
    assert format_path(()) == ""


def test_keys_are_the_text_written() -> None:
    assert load("1: a\ntrue: b\nnull: c\n").data == {"1": "a", "true": "b", "null": "c"}


def test_anchors_aliases_and_merge_keys() -> None:
    doc = load(
        """\
        base: &base
          kind: flask
          port: 1
        other: &other
          port: 2
          tags: [x]
        users:
          <<: [*base, *other]
          port: 3
        copy: *base
        """
    )
    assert doc.data["users"] == {"kind": "flask", "port": 3, "tags": ["x"]}
    assert doc.data["copy"] == {"kind": "flask", "port": 1}
    assert doc.positions[("users", "port")] == (9, 3)  # the explicit key wins
    assert doc.positions[("users", "kind")] == (2, 3)  # merged: where it was written
    assert doc.positions[("users", "tags")] == (6, 3)


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    doc = load("a: 1\nb: 2\na: 3\n")
    assert doc.data == {"a": 1, "b": 2}
    assert [p.format() for p in doc.problems] == [
        "f.yaml:3:1: a: key 'a' is defined twice, at lines 1 and 3\n"
        "  hint: remove one of them; YAML would silently keep only one"
    ]


def test_a_key_that_is_a_list_is_reported() -> None:
    doc = load("? [a, b]\n: 1\nc: 2\n")
    assert doc.data == {"c": 2}
    assert [p.format() for p in doc.problems] == [
        "f.yaml:1:3: a key must be a plain string, not a list or mapping"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: [1\n",
            "f.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at line 1, column 4)",
        ),
        ("a: b: c\n", "f.yaml:1:5: invalid YAML: mapping values are not allowed here"),
        (
            "a: 1\n---\nb: 2\n",
            "f.yaml:2:1: invalid YAML: expected a single document,"
            " found a second one\n  hint: shop.yaml holds one document; remove the '---' separator",
        ),
        ("a: *nowhere\n", "f.yaml:1:4: invalid YAML: found undefined alias 'nowhere'"),
        (
            "just text\n",
            "f.yaml:1:1: expected a mapping of keys like 'project:' and 'services:',"
            " found a single value",
        ),
        ("a: " + "[" * 2000 + "]" * 2000 + "\n", "f.yaml: YAML is nested too deeply"),
        (
            "a: " + "[" * 150 + "]" * 150 + "\n",
            "f.yaml:1:103: YAML is nested more than 100 levels deep",
        ),
    ],
)
def test_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_yaml(text, "f.yaml")
    assert [p.format() for p in info.value.problems] == [expected]


def test_alias_bomb_stops_at_the_node_limit() -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level, previous in zip("bcdefghij", "abcdefghi", strict=True):
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
    with pytest.raises(ConfigInvalid) as info:
        load_yaml("\n".join(lines), "f.yaml")  # 10**10 nodes if expanded
    (problem,) = info.value.problems
    assert problem.message == f"YAML aliases expand to more than {MAX_NODES} nodes (an alias bomb?)"
    assert problem.line is not None


def test_many_aliases_below_the_limit_are_fine() -> None:
    text = "a: &a [1, 2, 3]\nb: [" + ", ".join(["*a"] * 1000) + "]\n"
    assert len(load_yaml(text, "f.yaml").data["b"]) == 1000
