"""YAML to plain Python data, remembering where every key and list item was written.

PyYAML's compose() gives a node tree whose nodes carry start marks; we build the data
ourselves from it. That lets us record positions, refuse duplicate keys, and bound the
work: an alias points at an already-composed node, so an alias bomb only expands here,
where every visited node is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shopctl.config.problems import (
    ConfigInvalid,
    ConfigProblem,
    FieldPath,
    Position,
    format_path,
)

MAX_NODES = 100_000
MAX_DEPTH = 100

_TAG = "tag:yaml.org,2002:"
_CONSTRUCTED = {_TAG + name for name in ("null", "bool", "int", "float")}
_AS_TEXT = {_TAG + "str", _TAG + "timestamp"}  # dates stay the text the user wrote


@dataclass
class Document:
    data: dict[str, Any]
    positions: dict[FieldPath, Position]
    problems: list[ConfigProblem] = field(default_factory=list)


class _Stop(Exception):
    """A problem after which the rest of the tree cannot be trusted."""

    def __init__(self, node: Node, message: str, hint: str | None = None):
        self.node = node
        self.message = message
        self.hint = hint


def _pos(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_yaml(text: str, file: str) -> Document:
    """Parse one YAML document whose top level must be a mapping. Fatal problems raise."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise ConfigInvalid(file, [_reader_problem(file, text, exc)]) from None
    try:
        root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        raise ConfigInvalid(file, [_reader_problem(file, text, exc)]) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigInvalid(file, [_syntax_problem(file, exc)]) from None
    except RecursionError:
        raise ConfigInvalid(
            file, [ConfigProblem(file, None, None, "", "YAML is nested too deeply")]
        ) from None
    finally:
        loader.dispose()
    if root is None:
        raise ConfigInvalid(
            file,
            [ConfigProblem(file, None, None, "", "file is empty (only comments or blanks)")],
        )
    if not isinstance(root, MappingNode):
        line, col = _pos(root)
        found = "a list" if isinstance(root, SequenceNode) else "a single value"
        message = f"expected a mapping of keys like 'project:' and 'services:', found {found}"
        raise ConfigInvalid(file, [ConfigProblem(file, line, col, "", message)])
    builder = _Builder(file, loader)
    try:
        data = builder.convert(root, ())
    except _Stop as stop:
        line, col = _pos(stop.node)
        raise ConfigInvalid(
            file, [ConfigProblem(file, line, col, "", stop.message, stop.hint)]
        ) from None
    builder.positions.setdefault((), (1, 1))
    return Document(data, builder.positions, builder.problems)


def _reader_problem(file: str, text: str, exc: yaml.reader.ReaderError) -> ConfigProblem:
    """A character YAML does not allow (a control character such as NUL)."""
    line = text.count("\n", 0, exc.position) + 1
    col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    message = f"invalid YAML: the control character U+{code:04X} is not allowed"
    return ConfigProblem(file, line, col, "", message)


def _syntax_problem(file: str, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    message = f"invalid YAML: {exc.problem or exc.context}"
    hint = None
    if exc.problem == "but found another document":
        message = "invalid YAML: expected a single document, found a second one"
        hint = "shop.yaml holds one document; remove the '---' separator"
    elif exc.problem and exc.context:
        where = ""
        if exc.context_mark is not None and exc.context_mark is not mark:
            where = f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message += f" ({exc.context}{where})"
    if "'\\t'" in message:
        hint = "indent with spaces; YAML does not allow tabs for indentation"
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    return ConfigProblem(file, line, col, "", message, hint)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader):
        self.file = file
        self.loader = loader
        self.positions: dict[FieldPath, Position] = {}
        self.problems: list[ConfigProblem] = []
        self.visited = 0
        self.active: set[int] = set()  # ids of the nodes being converted (cycle guard)

    def problem(self, node: Node, path: FieldPath, message: str, hint: str | None = None):
        line, col = _pos(node)
        self.problems.append(ConfigProblem(self.file, line, col, format_path(path), message, hint))

    def convert(self, node: Node, path: FieldPath) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            message = f"YAML aliases expand to more than {MAX_NODES} nodes (an alias bomb?)"
            raise _Stop(node, message)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise _Stop(node, "a YAML alias refers to a node that contains it (a recursive alias)")
        if len(self.active) >= MAX_DEPTH:
            raise _Stop(node, f"YAML is nested more than {MAX_DEPTH} levels deep")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _TAG + "seq":
                    self.problem(node, path, f"unsupported YAML tag {node.tag}")
                items = []
                for index, child in enumerate(node.value):
                    self.positions[(*path, index)] = _pos(child)
                    items.append(self.convert(child, (*path, index)))
                return items
            if node.tag != _TAG + "map":
                self.problem(node, path, f"unsupported YAML tag {node.tag}")
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        if node.tag in _AS_TEXT:
            return node.value
        if node.tag in _CONSTRUCTED:
            try:
                return self.loader.construct_object(node)
            except Exception:  # e.g. `!!int abc`
                self.problem(node, path, f"cannot read {node.value!r} as {node.tag}")
                return node.value
        self.problem(node, path, f"unsupported YAML tag {node.tag}")
        return node.value

    def mapping(self, node: MappingNode, path: FieldPath) -> dict[str, Any]:
        merges = [value for key, value in node.value if key.tag == _TAG + "merge"]
        # Merged keys first, so explicit keys override both their values and positions.
        result: dict[str, Any] = self.merged(merges, path) if merges else {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            self.visited += 1
            if key_node.tag == _TAG + "merge":
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(key_node, path, "a key must be a plain string, not a list or mapping")
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(
                    key_node,
                    (*path, key),
                    f"key '{key}' is defined twice, at lines {first_line[key]} and {line}",
                    "remove one of them; YAML would silently keep only one",
                )
                continue
            first_line[key] = line
            self.positions[(*path, key)] = _pos(key_node)
            result[key] = self.convert(value_node, (*path, key))
        return result

    def merged(self, values: list[Node], path: FieldPath) -> dict[str, Any]:
        """`<<: *base` or `<<: [*a, *b]`: earlier sources win over later ones."""
        sources: list[Node] = []
        for value in values:
            sources.extend(value.value if isinstance(value, SequenceNode) else [value])
        combined: dict[str, Any] = {}
        for source in reversed(sources):  # later sources first, so earlier ones overwrite
            if not isinstance(source, MappingNode):
                self.problem(source, path, "'<<' can only merge mappings")
                continue
            combined.update(self.convert(source, path))
        return combined
