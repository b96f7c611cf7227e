"""Render a kind's templates into File objects. Pure: it reads templates, writes nothing.

Rendering the same ServiceSpec twice gives equal lists, so a dry run shows exactly what
a real run writes (writer.py is the only module that touches the disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import jinja2

from shopctl import bundle
from shopctl.scaffold.kinds import Kind

SHARED = "_shared"


@dataclass(frozen=True)
class File:
    path: PurePosixPath  # relative to the project root
    content: str
    executable: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a template may depend on; the CLI's checks have already passed."""

    name: str
    kind: Kind
    port: int
    metrics_port: int | None = None
    depends_on: tuple[str, ...] = ()
    kit_version: str = ""  # the service kit (shopkit) version the service is made for

    @property
    def module(self) -> str:
        """The name as a Python identifier (hyphens are not allowed in module names)."""
        return self.name.replace("-", "_")

    @property
    def service_dir(self) -> str:
        return f"services/{self.name}"


def template_context(spec: ServiceSpec) -> dict[str, Any]:
    """The variables every template sees (documented in the README's "Adding a kind")."""
    return {
        "name": spec.name,
        "module": spec.module,
        "title": "".join(part.capitalize() for part in spec.name.split("-")),
        "kind": spec.kind.name,
        "runtime_kind": spec.kind.runtime_kind,
        "port": spec.port,
        "metrics_port": spec.metrics_port,
        "depends_on": list(spec.depends_on),
        "service_dir": spec.service_dir,
        "proto_package": f"shop.{spec.module}.v1",
        "kit_version": spec.kit_version,
    }


def target_path(pattern: str, spec: ServiceSpec) -> PurePosixPath:
    path = PurePosixPath(
        pattern.format(name=spec.name, module=spec.module, service_dir=spec.service_dir)
    )
    # A manifest is data someone else may have written: keep its files inside the project.
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"template target {pattern!r} leaves the project folder")
    return path


def render_service(spec: ServiceSpec) -> list[File]:
    """The files of a new service, in manifest order."""
    env = jinja2.Environment(
        # The kind's own folder first, then templates/_shared (partials kinds include;
        # it has no manifest, so it is not a kind itself).
        # A project's kind may also include the partials shopctl ships.
        loader=jinja2.FileSystemLoader([str(spec.kind.path), str(spec.kind.path.parent / SHARED),
                                        str(bundle.templates() / SHARED)]),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly, not blank
        keep_trailing_newline=True,
        autoescape=False,  # we render Python and YAML, not HTML
    )
    context = template_context(spec)
    return [
        File(
            path=target_path(pattern, spec),
            content=env.get_template(template).render(context),
            executable=pattern in spec.kind.executable,
        )
        for pattern, template in spec.kind.files
    ]
