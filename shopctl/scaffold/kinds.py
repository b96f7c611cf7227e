"""Service kinds: each is a folder under templates/ holding a manifest.yaml.

A kind is data, not code: adding `templates/NAME/manifest.yaml` plus its `*.j2` files
adds the kind `NAME`; nothing in shopctl lists kinds by name. shopctl ships the
flask, fastapi, nameko and grpc kinds (shopctl.bundle); a project's own
`templates/KIND/` (next to shop.yaml) overrides a shipped kind of that name or adds
one. The manifest:

    description: one line shown by `shopctl scaffold kinds`
    runtime_kind: fastapi        # the `kind:` written to shop.yaml (how the runtimes
                                 # start and health-check it); default: the folder name
    ports: [8100, 8199]          # a free port is picked from this range when none given
    metrics_ports: [9100, 9199]  # optional: the kind serves /metrics on its own port
    proto: false                 # true: the kind renders protos/NAME.proto
    tags: [http]                 # optional: tags of the new shop.yaml entry
    files:                       # target (relative to the project root) -> template
      "{service_dir}/app.py": app.py.j2
    executable: ["{service_dir}/main.py"]   # optional: targets written with mode 0755
    notes: |                     # optional: printed after a successful scaffold
      ...

Targets may use `{name}` (the service name), `{module}` (the name as a Python
identifier) and `{service_dir}` (services/NAME).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shopctl.config.problems import did_you_mean
from shopctl.errors import ConfigError, UsageError

MANIFEST = "manifest.yaml"
TEMPLATES_DIR = "templates"  # relative to the folder holding shop.yaml


@dataclass(frozen=True)
class Kind:
    name: str
    path: Path  # the kind's folder; templates are looked up relative to it
    description: str
    runtime_kind: str
    ports: tuple[int, int]
    metrics_ports: tuple[int, int] | None
    proto: bool
    tags: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # (target pattern, template), manifest order
    executable: frozenset[str]  # target patterns
    notes: str
    source: str = "shopctl"  # "shopctl" (shipped) or "project" (the project's templates/)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "runtime_kind": self.runtime_kind,
            "ports": list(self.ports),
            "metrics_ports": list(self.metrics_ports) if self.metrics_ports else None,
            "proto": self.proto,
            "files": [target for target, _ in self.files],
            "source": self.source,
            "path": str(self.path),
        }


def templates_dir(project_root: Path) -> Path:
    return Path(project_root) / TEMPLATES_DIR


def discover_kinds(templates: Path, source: str = "shopctl") -> dict[str, Kind]:
    """Every kind under `templates`, by name (sorted). A folder without a manifest is
    not a kind (room for shared partials); a broken manifest is a ConfigError."""
    if not templates.is_dir():
        return {}
    kinds = {}
    for folder in sorted(p for p in templates.iterdir() if p.is_dir()):
        if (folder / MANIFEST).is_file():
            kinds[folder.name] = load_kind(folder, source)
    return kinds


def project_kinds(project_root: Path) -> dict[str, Kind]:
    """The kinds a project can scaffold: shopctl's, then its own templates/ over them."""
    from shopctl import bundle

    kinds = discover_kinds(bundle.templates(), "shopctl")
    own = templates_dir(project_root)
    if own.resolve() != bundle.templates().resolve():
        kinds.update(discover_kinds(own, "project"))
    return dict(sorted(kinds.items()))


def get_kind(templates: Path | dict[str, Kind], name: str) -> Kind:
    """The kind `name` (from a templates folder, or from kinds already found); UsageError
    naming the known kinds when there is none."""
    kinds = discover_kinds(templates) if isinstance(templates, Path) else templates
    if name in kinds:
        return kinds[name]
    known = ", ".join(kinds) or f"none (no {MANIFEST} found)"
    hint = did_you_mean(name, kinds) or f"known kinds: {known}"
    raise UsageError(f"unknown kind '{name}'", hint=hint)


def load_kind(folder: Path, source: str = "shopctl") -> Kind:
    manifest = folder / MANIFEST
    try:
        data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{manifest}: cannot read the kind's manifest: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{manifest}: expected a mapping")

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{manifest}: {message}")

    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise fail("'files' must map target paths to templates")
    for target, template in files.items():
        if not isinstance(template, str) or not (folder / template).is_file():
            raise fail(f"template {template!r} for {target!r} does not exist")
    executable = data.get("executable") or []
    if not isinstance(executable, list) or not set(executable) <= set(files):
        raise fail("'executable' must list targets that appear under 'files'")
    return Kind(
        name=folder.name,
        path=folder,
        description=str(data.get("description", "")).strip(),
        runtime_kind=str(data.get("runtime_kind", folder.name)),
        ports=_range(data.get("ports"), "ports", fail),
        metrics_ports=(
            _range(data["metrics_ports"], "metrics_ports", fail)
            if data.get("metrics_ports") is not None
            else None
        ),
        proto=bool(data.get("proto", False)),
        tags=tuple(str(tag) for tag in data.get("tags") or ()),
        files=tuple((str(t), str(f)) for t, f in files.items()),
        executable=frozenset(str(t) for t in executable),
        notes=str(data.get("notes") or "").strip(),
        source=source,
    )


def _range(value: Any, key: str, fail) -> tuple[int, int]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1 <= value[0] <= value[1] <= 65535
    ):
        return value[0], value[1]
    raise fail(f"'{key}' must be [first, last], two ports with first <= last")
