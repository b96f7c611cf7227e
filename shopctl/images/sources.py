"""What goes into a service image, found on disk without touching the engine.

Contract of `collect(config, service)`: the files and texts a service image is built
from: the service folder (minus caches, data/ and generated/), the shared shopkit
package, the repository's protos/ (for gRPC services and any service with a
protogen.py) and the requirement lines. `content_hash(...)` digests all of it plus the
Dockerfile text and the base image id; it is what names the image, so "unchanged" can
be decided in milliseconds, before any build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shopctl.bundle import kit_for
from shopctl.errors import OperationFailed
from shopctl.ignore import ignored
from shopctl.images.tarball import walk_files

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

PROTOGEN = "protogen.py"

Files = list[tuple[str, Path]]


@dataclass(frozen=True)
class ServiceSources:
    service: str
    app: Files  # the service folder, relative names
    shopkit: Files  # the kit's shopkit package (the project's own, else the shipped one)
    protos: Files  # the repository's protos/ folder, when the service needs it
    requirements: str  # the service's requirements.txt, as written
    shopkit_requirements: list[str]  # shopkit's declared dependencies

    @property
    def has_protogen(self) -> bool:
        return any(name == PROTOGEN for name, _ in self.app)

    @property
    def requirement_lines(self) -> list[str]:
        """Everything pip must fetch: the service's lines, then shopkit's."""
        own = [line.strip() for line in self.requirements.splitlines()]
        own = [line for line in own if line and not line.startswith("#")]
        return own + self.shopkit_requirements


def collect(config: ShopConfig, service: str) -> ServiceSources:
    svc = config.service(service)
    folder = (config.root / svc.path).resolve()
    if not folder.is_dir():
        raise OperationFailed(
            f"service {service}: folder {folder} does not exist",
            hint=f"fix services.{service}.path, or regenerate the folder with "
            f"`shopctl scaffold new-service {service} --kind {svc.kind} --force`",
        )
    app = walk_files(folder, ignored)
    requirements_file = folder / "requirements.txt"
    requirements = requirements_file.read_text() if requirements_file.is_file() else ""
    kit = kit_for(config.root)  # the project's own services/shopkit, else the shipped one
    kit_files = walk_files(kit.package, ignored) if kit.package.is_dir() else []
    protos_dir = config.root / "protos"
    wants_protos = svc.kind == "grpc" or (folder / PROTOGEN).is_file()
    protos = walk_files(protos_dir, ignored) if wants_protos and protos_dir.is_dir() else []
    return ServiceSources(
        service=service,
        app=app,
        shopkit=kit_files,
        protos=protos,
        requirements=requirements,
        shopkit_requirements=kit.dependencies,
    )


def content_hash(sources: ServiceSources, dockerfile: str, base_image_id: str) -> str:
    """sha256 over every input of the image; equal hashes mean an equal image."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        # Length-prefixed, so no two different input sets can run together the same way.
        digest.update(f"{label}:{len(data)}:".encode())
        digest.update(data)

    add("dockerfile", dockerfile.encode())
    add("base", base_image_id.encode())
    add("requirements", "\n".join(sources.requirement_lines).encode())
    for group, files in (
        ("app", sources.app),
        ("shopkit", sources.shopkit),
        ("protos", sources.protos),
    ):
        for name, path in files:
            mode = "x" if path.stat().st_mode & 0o111 else "-"
            add(f"{group}/{name}{mode}", path.read_bytes())
    return digest.hexdigest()
