"""Checks that need the whole file: names that refer to services, cycles, ports, sagas.

They run on the plain (interpolated) data rather than on the model, so they report even
when the schema has problems elsewhere. Values the schema will reject are skipped here,
so a mistake is reported once.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shopctl.config.model import (
    CALL,
    SERVICE_NAME,
    ConsulConfig,
    PrometheusConfig,
    RabbitMQConfig,
    as_port,
    split_call,
)
from shopctl.config.problems import (
    ConfigProblem,
    FieldPath,
    Position,
    did_you_mean,
    format_path,
    problem_at,
)
from shopctl.infra_names import RESERVED_SERVICE_NAMES

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _flag(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return default


class _Checker:
    def __init__(self, data: dict[str, Any], file: str, positions: Mapping[FieldPath, Position]):
        self.data = data
        self.file = file
        self.positions = positions
        self.problems: list[ConfigProblem] = []
        self.services = _mapping(data.get("services"))

    def report(self, path: FieldPath, message: str, hint: str | None = None) -> None:
        self.problems.append(problem_at(self.file, self.positions, path, message, hint))

    def unknown_service_hint(self, name: str) -> str:
        return did_you_mean(name, self.services) or f"services defined: {', '.join(self.services)}"

    def names(self, section: str) -> None:
        for key, entry in _mapping(self.data.get(section)).items():
            written = _mapping(entry).get("name", key)
            if written != key:
                self.report(
                    (section, key, "name"),
                    f"expected the name to match its key '{key}', found {written!r}",
                    "leave 'name' out; the key is the name",
                )

    def paths(self, root: Path) -> None:
        for name, entry in self.services.items():
            if not isinstance(entry, dict):
                continue
            if "path" in entry:
                path, where = entry["path"], ("services", name, "path")
            elif SERVICE_NAME.fullmatch(name) and name not in RESERVED_SERVICE_NAMES:
                # (a reserved name is refused by the schema; its folder is moot)
                path, where = f"services/{name}", ("services", name)
            else:
                continue
            if not isinstance(path, str) or not path:
                continue
            folder = root / path
            if not folder.exists():
                self.report(
                    where,
                    f"service path {path} does not exist",
                    "paths are relative to the folder holding shop.yaml",
                )
            elif not folder.is_dir():
                self.report(where, f"service path {path} is not a directory")

    def dependencies(self) -> None:
        graph: dict[str, list[str]] = {}
        for name, entry in self.services.items():
            deps = _mapping(entry).get("depends_on")
            graph[name] = []
            if not isinstance(deps, list):
                continue
            for index, dep in enumerate(deps):
                if not isinstance(dep, str):
                    continue
                where = ("services", name, "depends_on", index)
                if dep == name:
                    self.report(where, f"a service cannot depend on itself, found {dep!r}")
                elif dep not in self.services:
                    self.report(
                        where,
                        f"expected a service defined under services, found {dep!r}",
                        self.unknown_service_hint(dep),
                    )
                elif dep not in graph[name]:
                    graph[name].append(dep)
        for cycle in _cycles(graph):
            self.report(
                ("services", cycle[0], "depends_on"),
                f"dependency cycle {' -> '.join(cycle)}",
                "services in a cycle can never start; remove one of these dependencies",
            )

    def ports(self) -> None:
        claims: list[tuple[int, FieldPath]] = []
        infra = _mapping(self.data.get("infra"))
        sections = (("consul", ConsulConfig), ("rabbitmq", RabbitMQConfig))
        sections += (("prometheus", PrometheusConfig),)
        for section, model in sections:
            entry = _mapping(infra.get(section))
            if not _flag(entry.get("enabled"), model.model_fields["enabled"].default):
                continue
            for key in ("port", "management_port"):
                if key in model.model_fields:
                    value = entry.get(key, model.model_fields[key].default)
                    claims.append((value, ("infra", section, key)))
        for name, entry in self.services.items():
            for key in ("port", "metrics_port"):
                if isinstance(entry, dict) and key in entry:
                    claims.append((entry[key], ("services", name, key)))
        owners: dict[int, FieldPath] = {}
        for value, path in claims:
            port = as_port(value)
            if port is None:
                continue
            if port in owners:
                first, second = format_path(owners[port]), format_path(path)
                self.report(path, f"port {port} is used by both {first} and {second}")
            else:
                owners[port] = path

    def actions(self) -> None:
        """Each declared saga action against its service's kind (shopctl.saga.contract)."""
        from shopctl.config.model import KINDS
        from shopctl.saga import contract

        for name, entry in self.services.items():
            entry = _mapping(entry)
            kind, actions = entry.get("kind"), entry.get("actions")
            if kind not in KINDS or not isinstance(actions, dict):
                continue
            for action, declared in actions.items():
                if not isinstance(declared, dict):
                    continue
                for where, message, hint in contract.problems(kind, action, declared):
                    self.report(("services", name, "actions", action, *where), message, hint)

    def undeclared_action(self, where: FieldPath, service: str, action: str) -> None:
        """An action the service does not declare but nearly does is a typo: without a
        declaration the call would silently take the kind's convention."""
        declared = _mapping(_mapping(self.services.get(service)).get("actions"))
        if action in declared:
            return
        close = difflib.get_close_matches(action, list(declared), n=1, cutoff=0.75)
        if close:
            self.report(where, f"{service} declares no action {action!r} (its convention "
                               f"would be used), but declares {close[0]!r}",
                        f"did you mean '{service}.{close[0]}'?")

    def sagas(self) -> None:
        for saga, entry in _mapping(self.data.get("sagas")).items():
            steps = _mapping(entry).get("steps")
            if not isinstance(steps, list):
                continue
            seen: dict[str, int] = {}
            pivot: int | None = None
            for index, step in enumerate(steps):
                if not isinstance(step, dict):
                    continue
                at = ("sagas", saga, "steps", index)
                name = step.get("name")
                if isinstance(name, str):
                    if name in seen:
                        self.report(
                            (*at, "name"),
                            f"step name '{name}' is already used by steps[{seen[name]}]",
                        )
                    else:
                        seen[name] = index
                for key in ("call", "compensate"):
                    call = step.get(key)
                    if isinstance(call, str) and CALL.fullmatch(call):
                        service = split_call(call)[0]
                        if service not in self.services:
                            self.report(
                                (*at, key),
                                f"expected a service defined under services, found {service!r}"
                                f" in {call!r}",
                                self.unknown_service_hint(service),
                            )
                        else:
                            self.undeclared_action((*at, key), service, split_call(call)[1])
                if _flag(step.get("pivot"), False):
                    if pivot is None:
                        pivot = index
                    else:
                        self.report(
                            (*at, "pivot"),
                            f"saga '{saga}' already has a pivot step (steps[{pivot}]); "
                            "at most one step can be the pivot",
                        )


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected component, starting at its first service."""
    order = {name: i for i, name in enumerate(graph)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for name in graph:
        if name not in index:
            visit(name)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component, key=order.__getitem__)
        # Shortest way from start back to itself inside the component (breadth first).
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following = []
            for node in frontier:
                for dep in graph[node]:
                    if dep in members and dep not in previous:
                        previous[dep] = node
                        following.append(dep)
            frontier = following
        back = []  # the cycle walked backwards from start
        node = previous[start]
        while node != start:
            back.append(node)
            node = previous[node]
        cycles.append([start, *reversed(back), start])
    return sorted(cycles, key=lambda c: order[c[0]])


def check_references(
    data: dict[str, Any], file: str, positions: Mapping[FieldPath, Position], root: Path
) -> list[ConfigProblem]:
    checker = _Checker(data, file, positions)
    checker.names("services")
    checker.names("sagas")
    checker.paths(root)
    checker.dependencies()
    checker.ports()
    checker.actions()
    checker.sagas()
    return checker.problems
