"""`shopctl scale SERVICE=N`: the new replicas go into shop.yaml, then `up` converges.

shop.yaml stays the one statement of what should run: a scale that lived only in the
runtime would be undone by the next `up`. The edit touches the one value (or adds one
`replicas:` line to the service's block); every other byte of the file, comments
included, stays as the user wrote it. The new text is parsed and validated before it
replaces the file atomically, and must differ from the old in that setting only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from shopctl.config import ShopConfig
from shopctl.errors import UsageError

_ASSIGNMENT = re.compile(r"(?P<service>[^=\s]+)=(?P<replicas>[^=\s]*)")
_PLAIN_INT = re.compile(r"\d+")


@dataclass(frozen=True)
class ScaleChange:
    service: str
    before: int
    after: int

    def to_dict(self) -> dict:
        return {"service": self.service, "replicas_before": self.before,
                "replicas": self.after}


def parse_assignments(config: ShopConfig, pairs: list[str]) -> dict[str, int]:
    """["shipping=3", ...] -> {"shipping": 3}; unknown services and bad counts are
    usage errors naming the pair."""
    if not pairs:
        raise UsageError("name at least one SERVICE=N", hint="e.g. `shopctl scale web=3`")
    wanted: dict[str, int] = {}
    for pair in pairs:
        match = _ASSIGNMENT.fullmatch(pair.strip())
        if match is None:
            raise UsageError(f"{pair!r} is not SERVICE=N", hint="e.g. `shopctl scale web=3`")
        service, count = match["service"], match["replicas"]
        config.service(service)  # unknown: UsageError with a did-you-mean hint
        if not _PLAIN_INT.fullmatch(count) or int(count) < 1:
            raise UsageError(
                f"{pair}: replicas must be a whole number of at least 1, not {count!r}",
                hint="`shopctl down` stops everything; a service always runs at least once",
            )
        if service in wanted and wanted[service] != int(count):
            raise UsageError(f"{service} is given two counts ({wanted[service]} and {count})")
        wanted[service] = int(count)
    return wanted


def changes(config: ShopConfig, wanted: dict[str, int]) -> list[ScaleChange]:
    return [ScaleChange(name, config.services[name].replicas, count)
            for name, count in wanted.items()]


def write_replicas(config: ShopConfig, wanted: dict[str, int]) -> ShopConfig:
    """shop.yaml with each service's replicas set, validated and written atomically;
    returns the config loaded from the new file. Nothing is written when nothing
    changes."""
    from shopctl.config import load_config
    from shopctl.state import write_atomic

    path = Path(config.source)
    before = path.read_text(encoding="utf-8")
    after = before
    for service, count in wanted.items():
        if config.services[service].replicas != count:
            after = set_replicas(after, service, count, path.name)
    if after == before:
        return config
    _check(before, after, wanted, path.name)
    probe = path.with_name(f".{path.name}.scale-check")
    try:  # validated as the file it will be (relative paths, interpolation)
        probe.write_text(after, encoding="utf-8")
        load_config(probe)
    finally:
        probe.unlink(missing_ok=True)
    write_atomic(path, after, mode=os.stat(path).st_mode & 0o777)
    return load_config(path)


def set_replicas(text: str, service: str, count: int, filename: str = "shop.yaml") -> str:
    """`text` with services.SERVICE.replicas set to `count`: the value replaced where it
    is written, else a `replicas:` line added at the end of the service's block."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    doc = YAML(typ="rt").load(text)
    services = doc.get("services") if isinstance(doc, CommentedMap) else None
    block = services.get(service) if isinstance(services, CommentedMap) else None
    if not isinstance(block, CommentedMap):
        raise UsageError(f"{filename}: services.{service} is not a block to set replicas in")
    if block.fa.flow_style():
        raise UsageError(f"{filename}: services.{service} is written in flow style ({{...}})",
                         hint=f"set `replicas: {count}` there by hand")
    lines = text.splitlines(keepends=True)
    if "replicas" in block:
        row, col = block.lc.value("replicas")
        line = lines[row]
        token = re.match(r"[^\s#]+", line[col:])
        if token is None or not _PLAIN_INT.fullmatch(token.group()):
            raise UsageError(
                f"{filename}:{row + 1}: services.{service}.replicas is written as "
                f"{(token.group() if token else '')!r}, not a number to change",
                hint=f"edit that line by hand (replicas: {count}), then `shopctl up {service}`",
            )
        lines[row] = line[:col] + str(count) + line[col + token.end():]
        return "".join(lines)
    keys = list(block)
    key_row, key_col = block.lc.key(keys[0])
    # The block ends before the next key at or left of its keys' column.
    end = key_row + 1
    last = key_row
    while end < len(lines):
        stripped = lines[end].strip()
        indent = len(lines[end]) - len(lines[end].lstrip())
        if stripped and not stripped.startswith("#") and indent < key_col:
            break
        if stripped and not stripped.startswith("#"):
            last = end
        end += 1
    head = lines[: last + 1]
    if head and not head[-1].endswith("\n"):
        head[-1] += "\n"
    return "".join(head + [" " * key_col + f"replicas: {count}\n"] + lines[last + 1:])


def _check(before: str, after: str, wanted: dict[str, int], filename: str) -> None:
    """The data must differ by the replicas set, and only by them."""
    from ruamel.yaml import YAML

    old, new = YAML(typ="safe").load(before), YAML(typ="safe").load(after)
    for service, count in wanted.items():
        old["services"][service]["replicas"] = count
    if old != new:  # a bug of the splice, never the user's: refuse rather than write it
        raise UsageError(f"could not set replicas in {filename} without changing more",
                         hint="set `replicas:` by hand")
