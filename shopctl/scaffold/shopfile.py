"""Add (or, with --force, replace) one service's block in shop.yaml.

Byte-for-byte preservation: a full ruamel.yaml round-trip dump keeps comments and key
order but may still re-indent or re-wrap other parts of a hand-written file. So ruamel
is used to *read* the document (where each service starts, how it is indented) and to
*write* the new block, and the block is spliced into the original text; every line
outside the block is the user's own. The result is then re-parsed to prove it holds
exactly the old data plus the new entry, and validated with load_config before the
file is atomically replaced.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from shopctl.config import ConfigInvalid, ConfigProblem, ShopConfig, load_config
from shopctl.errors import UsageError
from shopctl.ports import is_port_free
from shopctl.scaffold import writer


@dataclass(frozen=True)
class ServiceEntry:
    """The new block: `name: {kind, path, port, metrics_port?, depends_on?, tags?}`."""

    name: str
    kind: str
    path: str
    port: int
    metrics_port: int | None = None
    depends_on: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "path": self.path, "port": self.port}
        if self.metrics_port is not None:
            data["metrics_port"] = self.metrics_port
        if self.depends_on:
            data["depends_on"] = list(self.depends_on)
        if self.tags:
            data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class ShopfileEdit:
    path: Path
    before: str
    after: str

    def diff(self) -> str:
        name = self.path.name
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                f"a/{name}",
                f"b/{name}",
            )
        )


# -- ports -----------------------------------------------------------------------------


def port_owners(config: ShopConfig, *, ignore_service: str | None = None) -> dict[int, str]:
    """Every port shop.yaml gives to a service or to enabled infrastructure, with the
    key that claims it (services.shipping.port), for messages about clashes."""
    owners: dict[int, str] = {}
    infra = config.infra
    for section, settings in (
        ("consul", infra.consul), ("rabbitmq", infra.rabbitmq), ("prometheus", infra.prometheus)
    ):
        if settings.enabled:
            for key in ("port", "management_port"):
                if port := getattr(settings, key, None):
                    owners.setdefault(port, f"infra.{section}.{key}")
    for name, svc in config.services.items():
        if name != ignore_service:
            for key in ("port", "metrics_port"):
                if port := getattr(svc, key):
                    owners.setdefault(port, f"services.{name}.{key}")
    return owners


def host_port_free(port: int) -> bool:
    # 0.0.0.0 is the strictest test: it fails for a listener on any local address, and
    # the docker runtime publishes on all addresses.
    return is_port_free("0.0.0.0", port)


def choose_port(
    first: int,
    last: int,
    taken: set[int],
    is_free: Callable[[int], bool] = host_port_free,
) -> int:
    """The lowest port in [first, last] not in `taken` and free on this host."""
    for port in range(first, last + 1):
        if port not in taken and is_free(port):
            return port
    raise UsageError(
        f"no free port in {first}-{last}", hint="give one with --port"
    )


# -- the text edit ---------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096  # never wrap a long value onto two lines
    return yaml


def plan_edit(shop_yaml: Path, entry: ServiceEntry) -> ShopfileEdit:
    """The new text of shop.yaml with `entry`'s block added at the end of `services`,
    or put where the existing block of that name was. Pure: reads, never writes."""
    before = shop_yaml.read_text(encoding="utf-8")
    doc = _yaml().load(before)
    if not isinstance(doc, CommentedMap):
        raise UsageError(f"{shop_yaml.name} is not a mapping of settings")
    services = doc.get("services")
    if not services:  # a new project: no services yet (absent, `services:` or `{}`)
        after = _first_service(doc, before, entry)
        _check_only_entry_changed(before, after, entry)
        return ShopfileEdit(shop_yaml, before, after)
    if not isinstance(services, CommentedMap):
        raise UsageError(f"{shop_yaml.name}: services is not a mapping to add to")
    if services.fa.flow_style():
        raise UsageError(
            f"{shop_yaml.name} writes services in flow style ({{...}}); "
            "add the service by hand or use block style"
        )
    lines = before.splitlines(keepends=True)
    names = list(services)
    col = services.lc.key(names[0])[1]
    block = _block_lines(entry, col, _child_indent(services, names[0], col))

    if entry.name in services:  # --force over an existing entry: replace its lines
        start, end = _span(doc, services, lines, names.index(entry.name), col)
        new_lines = lines[:start] + block + lines[end:]
    else:
        _, end = _span(doc, services, lines, len(names) - 1, col)
        head = lines[:end]
        if head and not head[-1].endswith("\n"):
            head[-1] += "\n"
        gap = ["\n"] if _blank_between_services(services, lines, names) else []
        new_lines = head + gap + block + lines[end:]
    after = "".join(new_lines)
    _check_only_entry_changed(before, after, entry)
    return ShopfileEdit(shop_yaml, before, after)


def _first_service(doc: CommentedMap, text: str, entry: ServiceEntry) -> str:
    """`text` with the first service under `services:`, after the comments that sit
    indented under that key (they describe what goes there), or with a new `services:`
    section at the end when there is none. Any `{}` on the key's line goes."""
    lines = text.splitlines(keepends=True)
    block = _block_lines(entry, 2, 2)
    if "services" not in doc:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines) + "\nservices:\n" + "".join(block)
    at = doc.lc.key("services")[0]
    key_line = lines[at]
    value, sep, comment = key_line.partition("#")
    head = value.split(":", 1)[0] + ":"
    lines[at] = head + (" " + sep + comment if sep else "\n")
    end = at + 1
    while end < len(lines) and lines[end].strip().startswith("#") and lines[end][:1] == " ":
        end += 1
    return "".join(lines[:end] + block + lines[end:])


def _child_indent(services: CommentedMap, first: str, col: int) -> int:
    value = services[first]
    if isinstance(value, CommentedMap) and value:
        return max(value.lc.key(next(iter(value)))[1] - col, 1)
    return 2


def _block_lines(entry: ServiceEntry, col: int, indent: int) -> list[str]:
    body = CommentedMap(entry.as_data())
    for key in ("depends_on", "tags"):
        if key in body:
            seq = CommentedSeq(body[key])
            seq.fa.set_flow_style()  # [a, b], as the demo shop.yaml writes lists
            body[key] = seq
    yaml = _yaml()
    yaml.indent(mapping=indent, sequence=indent, offset=0)
    out = io.StringIO()
    yaml.dump(CommentedMap({entry.name: body}), out)
    return [" " * col + line + "\n" for line in out.getvalue().splitlines()]


def _is_loose(line: str, col: int) -> bool:
    """Blank, or a comment at or left of the service keys: it belongs to what follows."""
    stripped = line.strip()
    if not stripped:
        return True
    return stripped.startswith("#") and len(line) - len(line.lstrip()) <= col


def _span(
    doc: CommentedMap, services: CommentedMap, lines: list[str], index: int, col: int
) -> tuple[int, int]:
    """[start, end) lines of the index-th service: from its key to its last own line."""
    names = list(services)
    start = services.lc.key(names[index])[0]
    if index + 1 < len(names):
        end = services.lc.key(names[index + 1])[0]
    else:
        top = list(doc)
        following = top[top.index("services") + 1 :]
        end = doc.lc.key(following[0])[0] if following else len(lines)
    while end - 1 > start and _is_loose(lines[end - 1], col):
        end -= 1
    return start, end


def _blank_between_services(services: CommentedMap, lines: list[str], names: list[str]) -> bool:
    """Whether the user separates services with blank lines (then so do we)."""
    if len(names) < 2:
        return False
    second = services.lc.key(names[1])[0]
    return not lines[second - 1].strip()


def _check_only_entry_changed(before: str, after: str, entry: ServiceEntry) -> None:
    """Guard against a splice in the wrong place: the data must differ by the entry only."""
    old, new = _yaml().load(before), _yaml().load(after)
    expected = _plain(old)
    expected["services"] = expected.get("services") or {}
    expected["services"][entry.name] = entry.as_data()
    if _plain(new) != expected:
        raise UsageError(
            "could not add the service to shop.yaml without changing other entries",
            hint="add the block shown by --dry-run by hand",
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# -- validate, then write ----------------------------------------------------------------


@contextmanager
def validated(edit: ShopfileEdit, new_service: str) -> Iterator[writer.Staged]:
    """Stage the edited text next to shop.yaml and check it with load_config; yields the
    staged file, which the caller commit()s (an atomic replace) once the service's own
    files are written. Without a commit shop.yaml is left untouched.

    The new service's folder may not exist yet (its files are written only once this
    check has passed, so that a bad shop.yaml writes nothing), so only the "path does not
    exist" problem of that one service is tolerated. Other problems raise ConfigInvalid,
    reported against shop.yaml rather than the temporary file.
    """
    with writer.staged(edit.path, edit.after) as stage:
        try:
            load_config(stage.temp)
        except ConfigInvalid as exc:
            problems = [
                replace(p, file=edit.path.name)
                for p in exc.problems
                if not _missing_own_folder(p, new_service)
            ]
            if problems:
                raise ConfigInvalid(edit.path.name, problems) from None
        yield stage


def _missing_own_folder(problem: ConfigProblem, service: str) -> bool:
    return problem.path in (f"services.{service}", f"services.{service}.path") and (
        "does not exist" in problem.message
    )
