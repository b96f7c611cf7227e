"""`shopctl scaffold`: a new service from a kind's templates, wired into shop.yaml.

    result = scaffold_service(config, "reviews", "fastapi", port=None, depends_on=["shipping"])

Contract: every refusal (a bad name, an existing service or folder without force, a port
clash, an unknown kind, a missing dependency, an invalid resulting shop.yaml) raises a
UsageError or ConfigError (exit 2) before anything is written. On success the service's
files are written first and shop.yaml is replaced atomically last; with dry_run nothing
is written and the result says what would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shopctl.bundle import kit_for
from shopctl.config import ShopConfig
from shopctl.config.model import SERVICE_NAME
from shopctl.config.problems import did_you_mean
from shopctl.errors import UsageError
from shopctl.infra_names import reserved_name_refusal
from shopctl.scaffold import shopfile, writer
from shopctl.scaffold.kinds import Kind, discover_kinds, get_kind, project_kinds
from shopctl.scaffold.render import File, ServiceSpec, render_service
from shopctl.scaffold.shopfile import ServiceEntry

__all__ = ["File", "Kind", "ScaffoldResult", "discover_kinds", "scaffold_service"]


@dataclass(frozen=True)
class ScaffoldResult:
    files: list[File]
    yaml_diff: str
    entry: ServiceEntry
    notes: str
    dry_run: bool

    def to_dict(self) -> dict:
        return {
            "service": self.entry.name,
            "dry_run": self.dry_run,
            "entry": self.entry.as_data(),
            "files": [str(f.path) for f in self.files],
            "shop_yaml_diff": self.yaml_diff,
            "notes": self.notes,
        }


def scaffold_service(
    config: ShopConfig,
    name: str,
    kind: str,
    port: int | None = None,
    depends_on: Sequence[str] = (),
    dry_run: bool = False,
    force: bool = False,
) -> ScaffoldResult:
    _check_name(name)
    chosen = get_kind(project_kinds(config.root), kind)
    _check_not_taken(config, name, force)
    deps = _check_depends_on(config, name, depends_on)
    main_port, metrics_port = _ports(config, name, chosen, port, force)

    spec = ServiceSpec(name, chosen, main_port, metrics_port, deps,
                       kit_version=kit_for(config.root).version)
    files = render_service(spec)
    clashes = [] if force else writer.existing(config.root, files)
    if clashes:
        raise UsageError(
            f"{clashes[0].path} already exists", hint="use --force to overwrite"
        )
    entry = ServiceEntry(
        name=name,
        kind=chosen.runtime_kind,
        path=spec.service_dir,
        port=main_port,
        metrics_port=metrics_port,
        depends_on=deps,
        tags=chosen.tags,
    )
    edit = shopfile.plan_edit(config.source, entry)
    with shopfile.validated(edit, name) as staged_shop_yaml:
        if not dry_run:
            writer.write_files(config.root, files, force=force)
            staged_shop_yaml.commit()
    return ScaffoldResult(files, edit.diff(), entry, _notes(chosen, spec), dry_run)


def _notes(kind: Kind, spec: ServiceSpec) -> str:
    # Plain replacement rather than str.format: notes are prose and may contain braces.
    text = kind.notes
    for key, value in (("name", spec.name), ("module", spec.module),
                       ("service_dir", spec.service_dir)):
        text = text.replace("{" + key + "}", value)
    return text


def _check_name(name: str) -> None:
    if not SERVICE_NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a valid service name",
            hint="a DNS label: lowercase letters, digits and hyphens, starting with a "
            "letter, not ending with a hyphen, at most 63 characters",
        )
    refusal = reserved_name_refusal(name)
    if refusal is not None:
        message, hint = refusal
        raise UsageError(message, hint=hint)


def _check_not_taken(config: ShopConfig, name: str, force: bool) -> None:
    if force:
        return
    if name in config.services:
        raise UsageError(
            f"service '{name}' already exists in {config.source.name}",
            hint="pick another name, or use --force to regenerate it",
        )
    folder = config.root / "services" / name
    if folder.exists():
        raise UsageError(
            f"services/{name} already exists", hint="pick another name, or use --force"
        )


def _check_depends_on(config: ShopConfig, name: str, depends_on: Sequence[str]) -> tuple[str, ...]:
    deps: list[str] = []
    for dep in depends_on:
        if dep == name:
            raise UsageError(f"a service cannot depend on itself ('{dep}')")
        if dep not in config.services:
            hint = did_you_mean(dep, config.services) or (
                f"services: {', '.join(config.services)}"
            )
            raise UsageError(f"--depends-on: no service named '{dep}'", hint=hint)
        if dep not in deps:
            deps.append(dep)
    return tuple(deps)


def _ports(
    config: ShopConfig, name: str, kind: Kind, port: int | None, force: bool
) -> tuple[int, int | None]:
    """(port, metrics_port): the given port after checks, or free ones from the kind's
    ranges. With force, the ports of the entry being replaced count as free."""
    owners = shopfile.port_owners(config, ignore_service=name if force else None)
    if port is not None:
        if port in owners:
            raise UsageError(
                f"port {port} is already used by {owners[port]}",
                hint="leave --port out to get a free one",
            )
        if not shopfile.host_port_free(port):
            raise UsageError(
                f"port {port} is in use on this host",
                hint="leave --port out to get a free one",
            )
    else:
        port = shopfile.choose_port(*kind.ports, set(owners))
    metrics_port = None
    if kind.metrics_ports:
        metrics_port = shopfile.choose_port(*kind.metrics_ports, set(owners) | {port})
    return port, metrics_port
