"""The images everything else starts FROM: the Python base, Consul, RabbitMQ and the
infra images built on them (PostgreSQL, Prometheus).

Contract of `ensure_base_images(config, progress)`:
- For infra.base_image, and the consul / rabbitmq images when enabled, an image the
  engine already has is left alone (a second call is a no-op).
- A missing `shopctl/...` image is built here from Debian packages (see RECIPES), and
  so is one built by an older recipe (its io.shopctl.recipe label differs); any other
  name is pulled, and when that fails (no registry on these machines) the
  error says how to switch to the shopctl/ images instead.
- Builds are serialised by a per-image file lock, so parallel `shopctl up`s build an
  image once; the loser of the race finds it present.
Returns one EnsuredImage per image, saying what was done and how long it took.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import docker
import docker.errors

from shopctl.docker_client import connect, docker_errors
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.images import rootfs
from shopctl.images.cache import cache_path, file_lock
from shopctl.images.engine import build_from_context, image_id
from shopctl.images.postgres import DOCKERFILE as _POSTGRES_DOCKERFILE
from shopctl.images.postgres import PACKAGES as _POSTGRES_PACKAGES
from shopctl.images.postgres import POSTGRES_IMAGE, download_debs
from shopctl.images.prometheus import DEFAULT_CONFIG as PROMETHEUS_DEFAULT_CONFIG
from shopctl.images.prometheus import DOCKERFILE as _PROMETHEUS_DOCKERFILE
from shopctl.images.prometheus import PROMETHEUS_IMAGE
from shopctl.images.registry import CONFIG as _REGISTRY_CONFIG
from shopctl.images.registry import DOCKERFILE as _REGISTRY_DOCKERFILE
from shopctl.images.registry import REGISTRY_IMAGE
from shopctl.images.tarball import ContextTar
from shopctl.infra import rabbitmq_boot
from shopctl.units import Progress, no_progress

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

PYTHON_IMAGE = "shopctl/python:3.11"
CONSUL_IMAGE = "shopctl/consul:1.8"
RABBITMQ_IMAGE = "shopctl/rabbitmq:3.10"
# The RabbitMQ image's command: Debian's script behind a wrapper that preloads modules.
RABBITMQ_SERVER = rabbitmq_boot.IMAGE_SERVER
# A Docker engine in a container, one per node of the lab swarm (shopctl.lab). Tagged with
# the version of bookworm's docker.io it carries.
SWARM_NODE_IMAGE = "shopctl/swarm-node:20.10"

_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# RabbitMQ only lets guest in from loopback by default; the services connect from other
# containers, and shopctl from the host through docker's port proxy.
_RABBITMQ_CONF = """\
loopback_users = none
listeners.tcp.default = 5672
log.console = true
log.console.level = info
log.file = false
log.console.use_colors = off
"""

# Consul needs no privilege: it runs as nobody (its ACL config is copied in owned by it).
CONSUL_UID = CONSUL_GID = 65534

_CONSUL_DOCKERFILE = f"""\
FROM {PYTHON_IMAGE}
COPY consul /usr/local/bin/consul
USER {CONSUL_UID}:{CONSUL_GID}
EXPOSE 8500
# -dev: one in-memory server that elects itself at once; -client 0.0.0.0 so the host
# (published port) and the services (project network) reach its HTTP API.
CMD ["consul", "agent", "-dev", "-client", "0.0.0.0", "-ui", "-node", "shopctl"]
"""


LABEL_RECIPE = "io.shopctl.recipe"
LABEL_PYTHON = "io.shopctl.python"  # major.minor of the image's python3, when known


@dataclass(frozen=True)
class EnsuredImage:
    name: str
    action: Literal["present", "built", "pulled"]
    seconds: float
    image_id: str


@dataclass(frozen=True)
class Recipe:
    """How to build one shopctl/ image. `fingerprint` changes whenever the recipe's
    inputs do, and is stored as a label so an image made by an older recipe is rebuilt."""

    build: Callable[[docker.DockerClient, str, Progress], str]  # (client, fingerprint, ...)
    inputs: str  # everything that defines the result, as text

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.inputs.encode()).hexdigest()[:16]


def ensure_base_images(
    config: ShopConfig,
    progress: Progress = no_progress,
    client: docker.DockerClient | None = None,
) -> list[EnsuredImage]:
    """Make sure every base/infra image the config names exists in the engine."""
    client = client or connect()
    wanted = [config.infra.base_image]
    if config.infra.consul.enabled:
        wanted.append(config.infra.consul.image)
    if config.infra.rabbitmq.enabled:
        wanted.append(config.infra.rabbitmq.image)
    done: dict[str, EnsuredImage] = {}
    for name in wanted:
        if name not in done:
            done[name] = ensure_image(client, name, progress)
    return list(done.values())


def ensure_image(
    client: docker.DockerClient, name: str, progress: Progress = no_progress
) -> EnsuredImage:
    """One image present, built or pulled (see the module contract)."""
    started = time.monotonic()
    recipe = RECIPES.get(name)
    if name.startswith("shopctl/") and recipe is None:
        raise OperationFailed(
            f"there is no recipe to build {name}", hint=f"shopctl builds: {', '.join(RECIPES)}"
        )
    found = _usable(client, name, recipe)
    if found:
        return EnsuredImage(name, "present", 0.0, found)
    with file_lock(f"image-{name}"):
        found = _usable(client, name, recipe)  # another process may have built it meanwhile
        if found:
            return EnsuredImage(name, "present", time.monotonic() - started, found)
        if recipe is not None:
            outdated = image_id(client, name)  # made by an older recipe, or None
            progress(name, "building base image (no registry: from Debian packages)")
            new_id = recipe.build(client, recipe.fingerprint, progress)
            action: Literal["built", "pulled"] = "built"
            if outdated and outdated != new_id:
                _drop_if_unused(client, outdated)
        else:
            new_id = _pull(client, name, progress)
            action = "pulled"
    seconds = time.monotonic() - started
    progress(name, f"{action} in {seconds:.1f}s")
    return EnsuredImage(name, action, seconds, new_id)


def _usable(client: docker.DockerClient, name: str, recipe: Recipe | None) -> str | None:
    """The id of `name` if the engine has it and (for our images) the current recipe made it."""
    with docker_errors(f"looking up image {name}"):
        try:
            image = client.images.get(name)
        except docker.errors.ImageNotFound:
            return None
    if recipe is not None and image.labels.get(LABEL_RECIPE) != recipe.fingerprint:
        return None
    return image.id


def _drop_if_unused(client: docker.DockerClient, old_id: str) -> None:
    """Remove a superseded base image unless containers or other images still use it
    (the engine refuses then, and that refusal is the check)."""
    try:
        client.images.remove(old_id, noprune=False)
    except docker.errors.APIError:
        pass


def _pull(client: docker.DockerClient, name: str, progress: Progress) -> str:
    progress(name, "pulling")
    repository, _, tag = name.rpartition(":")
    if not repository or "/" in tag:  # no tag given ("rabbitmq", "host:5000/img")
        repository, tag = name, "latest"
    try:
        client.images.pull(repository, tag=tag)
    except (docker.errors.APIError, docker.errors.DockerException) as exc:
        raise OperationFailed(
            f"image {name} is not in the engine and cannot be pulled: "
            f"{getattr(exc, 'explanation', None) or exc}",
            hint="this machine has no container registry. Use the images shopctl builds "
            f"locally in shop.yaml: infra.base_image: {PYTHON_IMAGE}, "
            f"infra.consul.image: {CONSUL_IMAGE}, infra.rabbitmq.image: {RABBITMQ_IMAGE}",
        ) from None
    with docker_errors(f"pulling {name}"):
        return client.images.get(name).id


def _from_debian(
    client: docker.DockerClient,
    name: str,
    packages: list[str],
    changes: list[str],
    fingerprint: str,
    progress: Progress,
    customise: Callable[[Path], None] = lambda root: None,
) -> str:
    """debootstrap a rootfs with `packages`, let `customise` edit it, import it as `name`."""
    work = cache_path("rootfs") / name.replace("/", "_").replace(":", "_")
    shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted build
    try:
        rootfs.bootstrap(work, packages, subject=name, progress=progress)
        customise(work)
        progress(name, "importing the root filesystem")
        labels = [f"LABEL {LABEL_RECIPE}={fingerprint}"] + _python_label(work)
        return rootfs.import_rootfs(client, work, name, [*changes, *labels])
    finally:
        # ~300 MB per rootfs; the .debs stay cached, so a rebuild does not download again.
        shutil.rmtree(work, ignore_errors=True)


def _python_label(rootfs_dir: Path) -> list[str]:
    """A LABEL naming the rootfs's python3 version, so wheel downloads need not ask it."""
    names = (
        path.name.removeprefix("python") for path in (rootfs_dir / "usr/bin").glob("python3.*")
    )
    versions = [v for v in names if re.fullmatch(r"3\.\d+", v)]
    if not versions:
        return []
    newest = max(versions, key=lambda v: int(v.split(".")[1]))
    return [f"LABEL {LABEL_PYTHON}={newest}"]


_PYTHON_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
_PYTHON_CHANGES = [f"ENV {_PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]']


def build_python(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    return _from_debian(
        client, PYTHON_IMAGE, _PYTHON_PACKAGES, _PYTHON_CHANGES, fingerprint, progress
    )


_RABBITMQ_PACKAGES = ["rabbitmq-server"]
_RABBITMQ_CHANGES = [
    f"ENV {_PATH}",
    "ENV LANG=C.UTF-8",
    "ENV HOME=/var/lib/rabbitmq",
    "USER rabbitmq",
    "WORKDIR /var/lib/rabbitmq",
    "EXPOSE 5672",
    # The Debian wrapper in /usr/sbin sends the broker's output to a file; the real
    # script keeps it in the foreground, logging to stdout (docker logs). Ours runs that
    # script with the module preload (shopctl.infra.rabbitmq_boot).
    f'CMD ["{RABBITMQ_SERVER}"]',
]


def build_rabbitmq(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    def configure(root: Path) -> None:
        (root / "etc/rabbitmq/rabbitmq.conf").write_text(_RABBITMQ_CONF)
        own = root / rabbitmq_boot.IMAGE_DIR.lstrip("/")
        own.mkdir(parents=True, exist_ok=True)
        (root / rabbitmq_boot.IMAGE_PRELOAD.lstrip("/")).write_text(rabbitmq_boot.PRELOAD)
        server = root / rabbitmq_boot.IMAGE_SERVER.lstrip("/")
        server.write_text(rabbitmq_boot.IMAGE_WRAPPER)
        server.chmod(0o755)

    return _from_debian(
        client,
        RABBITMQ_IMAGE,
        _RABBITMQ_PACKAGES,
        _RABBITMQ_CHANGES,
        fingerprint,
        progress,
        customise=configure,
    )


def build_prometheus(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    binary = _host_binary(
        "prometheus", "the Prometheus image",
        "install it with `make system` (scripts/install-system.sh prometheus), or set "
        "infra.prometheus.image to an image your registry provides (prom/prometheus)")
    return _binary_on_python(client, PROMETHEUS_IMAGE, fingerprint, progress, binary, {
        "Dockerfile": _PROMETHEUS_DOCKERFILE, "prometheus.yml": PROMETHEUS_DEFAULT_CONFIG})


def build_registry(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    binary = _host_binary(
        "docker-registry", "the registry image",
        "install it with `make system` (scripts/install-system.sh docker-registry)")
    return _binary_on_python(client, REGISTRY_IMAGE, fingerprint, progress, binary, {
        "Dockerfile": _REGISTRY_DOCKERFILE, "config.yml": _REGISTRY_CONFIG})


def build_consul(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    binary = _host_binary(
        "consul", "the Consul image",
        "install it with `make system` (scripts/install-system.sh consul)")
    return _binary_on_python(client, CONSUL_IMAGE, fingerprint, progress, binary,
                             {"Dockerfile": _CONSUL_DOCKERFILE})


def build_postgres(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    """Debian's postgresql-15 on the Python base (see shopctl.images.postgres)."""
    import io
    import tarfile

    ensure_image(client, PYTHON_IMAGE, progress)
    with docker_errors(f"reading the package list of {PYTHON_IMAGE}"):
        container = client.containers.create(PYTHON_IMAGE, command=["true"])
        try:
            stream, _ = container.get_archive("/var/lib/dpkg/status")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.extractfile("status")
                status = member.read() if member is not None else b""
        finally:
            container.remove(force=True)
    progress(POSTGRES_IMAGE, f"fetching {', '.join(_POSTGRES_PACKAGES)} with the host's apt")
    debs = download_debs(status, cache_path("postgres", "debs"))
    context = ContextTar()
    context.add_bytes("Dockerfile", _POSTGRES_DOCKERFILE.encode())
    for deb in debs:
        context.add_file(f"debs/{deb.name}", deb)
    return build_from_context(client, context.finish(), POSTGRES_IMAGE,
                              labels={LABEL_RECIPE: fingerprint}, subject=POSTGRES_IMAGE,
                              progress=progress)


def _host_binary(name: str, image: str, hint: str) -> str:
    """The host's `name` on the PATH or in /usr/bin (Debian's packages put it there; a
    root shell's PATH may lack it), else RuntimeUnavailable with `hint`."""
    binary = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if binary is None:
        raise RuntimeUnavailable(f"no {name} binary on this host to put in {image}",
                                 hint=hint)
    return binary


def _binary_on_python(client: docker.DockerClient, image: str, fingerprint: str,
                      progress: Progress, binary: str, texts: dict[str, str]) -> str:
    """`image` built on the Python base from the host's `binary` (dynamically linked
    against glibc only, so any Debian image carries it) and `texts` (Dockerfile first)."""
    ensure_image(client, PYTHON_IMAGE, progress)
    context = ContextTar()
    for name, text in texts.items():
        context.add_bytes(name, text.encode())
    context.add_file(Path(binary).name, Path(binary).resolve())
    return build_from_context(client, context.finish(), image,
                              labels={LABEL_RECIPE: fingerprint}, subject=image,
                              progress=progress)


# dockerd with what it needs inside a container: iptables for its networks, fuse-overlayfs
# as a storage fallback, tini as PID 1 (reaps containerd-shims, forwards SIGTERM), procps
# for `docker top`. The engine's flags and start-up script are the lab's (shopctl.lab), so
# changing them needs no rebuild.
_SWARM_NODE_PACKAGES = ["docker.io", "iptables", "fuse-overlayfs", "tini", "procps",
                        "ca-certificates"]
_SWARM_NODE_CHANGES = [f"ENV {_PATH}", "ENV LANG=C.UTF-8", 'ENTRYPOINT ["/usr/bin/tini", "--"]',
                       'CMD ["dockerd"]']


def build_swarm_node(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    return _from_debian(client, SWARM_NODE_IMAGE, _SWARM_NODE_PACKAGES, _SWARM_NODE_CHANGES,
                        fingerprint, progress)


def _inputs(*parts: object) -> str:
    return "\n".join(repr(part) for part in parts)


_PYTHON_RECIPE = Recipe(build_python, _inputs(_PYTHON_PACKAGES, _PYTHON_CHANGES))
RECIPES: dict[str, Recipe] = {
    PYTHON_IMAGE: _PYTHON_RECIPE,
    # The consul image is FROM the python one, so it changes when that recipe does.
    CONSUL_IMAGE: Recipe(build_consul, _inputs(_CONSUL_DOCKERFILE, _PYTHON_RECIPE.inputs)),
    RABBITMQ_IMAGE: Recipe(
        build_rabbitmq, _inputs(_RABBITMQ_PACKAGES, _RABBITMQ_CHANGES, _RABBITMQ_CONF,
                                rabbitmq_boot.PRELOAD, rabbitmq_boot.IMAGE_WRAPPER)
    ),
    PROMETHEUS_IMAGE: Recipe(
        build_prometheus, _inputs(_PROMETHEUS_DOCKERFILE, _PYTHON_RECIPE.inputs)
    ),
    POSTGRES_IMAGE: Recipe(
        build_postgres, _inputs(_POSTGRES_DOCKERFILE, _POSTGRES_PACKAGES, _PYTHON_RECIPE.inputs)
    ),
    REGISTRY_IMAGE: Recipe(
        build_registry, _inputs(_REGISTRY_DOCKERFILE, _REGISTRY_CONFIG, _PYTHON_RECIPE.inputs)
    ),
    SWARM_NODE_IMAGE: Recipe(build_swarm_node, _inputs(_SWARM_NODE_PACKAGES, _SWARM_NODE_CHANGES)),
}
