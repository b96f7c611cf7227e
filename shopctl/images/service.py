"""Service images: planned from a content hash, built only when that hash is new.

Contract:
- `plan_service_image(config, service)` computes the tag and content hash without
  building (milliseconds to a second: it reads files and asks the engine for two ids).
  `plan.exists` says whether the engine already has that exact image.
- `build_service_image(config, service, progress)` returns (tag, content_hash), building
  only when the tag is missing. The tag is `shopctl-<project>/<service>:<hash[:12]>`; the
  image carries the io.shopctl.project / .service / .config-hash labels. A failed build
  raises OperationFailed naming the step and quoting its last output lines.
- `build_service_images(config, services, progress)` builds several at once (two at a
  time: more only makes the engine and pip fight over two cores) and returns
  {service: (tag, content_hash)}; if any fails, the first failure is raised after all
  have finished, so one bad service does not leave the others half-built.
- With a `cancel` event (threading.Event), a build not begun when it is set is not
  begun, and one under way is stopped with its containers removed
  (shopctl.images.engine); the call then raises Cancelled.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import docker

from shopctl.docker_client import connect, docker_errors
from shopctl.errors import Cancelled
from shopctl.images import dockerfile
from shopctl.images.base import ensure_image
from shopctl.images.cache import file_lock
from shopctl.images.engine import build_from_context, image_id
from shopctl.images.sources import ServiceSources, collect, content_hash
from shopctl.images.tarball import ContextTar
from shopctl.images.wheels import image_python, wheelhouse
from shopctl.units import LABEL_HASH, LABEL_PROJECT, LABEL_SERVICE, Progress, no_progress

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

SHORT_HASH = 12
PARALLEL_BUILDS = 2


@dataclass(frozen=True)
class ServiceImagePlan:
    service: str
    tag: str
    content_hash: str
    exists: bool
    dockerfile: str
    sources: ServiceSources


def image_repository(project: str, service: str) -> str:
    return f"shopctl-{project}/{service}"


def plan_service_image(
    config: ShopConfig, service: str, client: docker.DockerClient | None = None
) -> ServiceImagePlan:
    """Tag and content hash of the image `service` needs now; nothing is built."""
    client = client or connect()
    sources = collect(config, service)
    base = config.infra.base_image
    text = dockerfile.render(service, base, sources.has_protogen)
    # A base image that is not there yet still yields a stable (if provisional) hash.
    base_id = image_id(client, base) or f"missing:{base}"
    digest = content_hash(sources, text, base_id)
    tag = f"{image_repository(config.project, service)}:{digest[:SHORT_HASH]}"
    return ServiceImagePlan(service, tag, digest, image_id(client, tag) is not None, text, sources)


def build_service_image(
    config: ShopConfig,
    service: str,
    progress: Progress = no_progress,
    client: docker.DockerClient | None = None,
    cancel: threading.Event | None = None,
) -> tuple[str, str]:
    """Build (when missing) the image of `service`; returns (tag, content_hash)."""
    client = client or connect()
    _check(cancel)
    ensure_image(client, config.infra.base_image, progress)
    plan = plan_service_image(config, service, client)
    if plan.exists:
        progress(service, f"image {plan.tag} is up to date")
        return plan.tag, plan.content_hash
    # Two processes planning the same tag must not both build it.
    with file_lock(f"build-{plan.tag}"):
        if image_id(client, plan.tag) is None:
            _build(client, config, plan, progress, cancel)
    return plan.tag, plan.content_hash


def build_service_images(
    config: ShopConfig,
    services: list[str],
    progress: Progress = no_progress,
    client: docker.DockerClient | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, tuple[str, str]]:
    """Build several service images, PARALLEL_BUILDS at a time (see module contract)."""
    client = client or connect()
    # Once up front, so the parallel builds do not queue on the base image's lock.
    ensure_image(client, config.infra.base_image, progress)
    with ThreadPoolExecutor(PARALLEL_BUILDS, thread_name_prefix="shopctl-build") as pool:
        futures = {
            name: pool.submit(build_service_image, config, name, progress, client, cancel)
            for name in services
        }
    results: dict[str, tuple[str, str]] = {}
    first_error: BaseException | None = None
    _check(cancel)  # a cancelled build is the news, not the failures it caused
    for name, future in futures.items():
        error = future.exception()
        if error is None:
            results[name] = future.result()
        elif first_error is None:
            first_error = error
    if first_error is not None:
        raise first_error
    return results


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("build cancelled")


def _build(
    client: docker.DockerClient,
    config: ShopConfig,
    plan: ServiceImagePlan,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> None:
    service = plan.service
    python = image_python(client, config.infra.base_image)
    wheels = wheelhouse(plan.sources.requirement_lines, python, subject=service, progress=progress)
    _check(cancel)
    progress(service, f"building image {plan.tag}")
    context = ContextTar()
    context.add_bytes("Dockerfile", plan.dockerfile.encode())
    context.add_bytes("requirements.txt", plan.sources.requirements.encode())
    kit_lines = "\n".join(plan.sources.shopkit_requirements) + "\n"
    context.add_bytes("shopkit-requirements.txt", kit_lines.encode())
    context.add_tree("wheels", sorted((p.name, p) for p in wheels.iterdir() if p.suffix == ".whl"))
    context.add_tree("shopkit", plan.sources.shopkit)
    protos = [(f"protos/{name}", path) for name, path in plan.sources.protos]
    context.add_tree("app", plan.sources.app + protos)
    labels = {
        LABEL_PROJECT: config.project,
        LABEL_SERVICE: service,
        LABEL_HASH: plan.content_hash,
    }
    build_from_context(client, context.finish(), plan.tag, labels=labels, subject=service,
                       progress=progress, cancel=cancel)


def remove_project_images(client: docker.DockerClient, project: str,
                          progress: Progress = no_progress) -> None:
    """Untag the service images of the project in `client`'s engine (found by its label;
    only their tags in the project's own repositories, shopctl-P/<service>, also as a
    registry names them: HOST/PREFIX/shopctl-P/<service>); the last tag gone removes the
    image and its build layers. Base and infra images carry no project label. An image
    still used by a container (of another project: this one's are gone) is reported and
    kept; one removed meanwhile (a concurrent down) is no error."""
    with docker_errors(f"listing the images of project {project}"):
        found = client.images.list(filters={"label": f"{LABEL_PROJECT}={project}"})
    for image in found:
        service = image.labels.get(LABEL_SERVICE)
        if service is None:
            continue  # labelled by hand, not built by shopctl
        repository = image_repository(project, service)
        refs = {tag: tag for tag in image.tags
                if (repo := tag.rpartition(":")[0]) == repository
                or repo.endswith(f"/{repository}")}
        if not image.tags:  # dangling: its tag moved on, the label says whose it is
            refs = {image.short_id: image.id}
        for name, ref in refs.items():
            progress(name, "removing image")
            with docker_errors(f"removing image {name}"):
                try:
                    client.images.remove(ref, noprune=False)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # 409 Conflict: in use
                        raise
                    progress(name, f"image kept: {exc.explanation or exc}")
