"""How the swarm's nodes get the images the shop runs (issue 16): loaded into each node,
or pushed to a registry and run pinned by digest.

Contract of `distributor(config, builder, manager)`: an object whose
`ship(images, progress, managers_only)` makes every image (a name the building engine
has) available to the swarm and returns {image: the reference a service spec names}.
- `NodeLoader`, without infra.swarm.registry (the lab/CI mode): each image is loaded
  into every Ready node lacking its id (shopctl.swarm.nodes.distribute; only managers
  for the infra, which runs there); the reference is the image's id (sha256:...), which
  a node never tries to pull (a name it would first look up in a registry, Docker Hub
  included, unless its engine runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, which
  stops the registry mode's pulls too).
- `RegistryPusher`, with infra.swarm.registry: each image is tagged into the registry's
  namespace (PUSH/PREFIX/REPOSITORY:TAG, the local tag kept: content hashes for service
  images) and pushed by the building engine, in parallel, unless the registry already
  holds the digest that engine recorded for that image; the reference is
  PULL/PREFIX/REPOSITORY:TAG@sha256:..., so every task runs exactly the image pushed,
  whatever the tag says later. Nothing is loaded into nodes: they pull.
Errors are ShopctlErrors written for people: RuntimeUnavailable for a registry that does
not answer, OperationFailed for a push refused (TLS, authentication, anything else), each
with what to do. The pure parts (references, error wording) are tested alone.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shopctl.errors import OperationFailed, RuntimeUnavailable, ShopctlError
from shopctl.units import Progress, no_progress

if TYPE_CHECKING:
    import docker

    from shopctl.config import ShopConfig
    from shopctl.config.model import RegistryConfig

PUSH_WORKERS = 4  # pushes at once; the engine shares a layer two of them upload
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


# ---- pure parts: references ---------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """An image reference: [HOST[:PORT]/]PATH[:TAG][@DIGEST]."""

    registry: str  # "" for none given (Docker Hub, or a local name such as shopctl/...)
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}" if self.registry else self.path

    def __str__(self) -> str:
        return (self.repository + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def parse_reference(text: str) -> Reference:
    """'127.0.0.1:5000/shop/pay:ab12@sha256:...' -> its parts. The first path part is a
    registry when it has a dot or a port or is localhost, as the engine reads it."""
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    first, slash, rest = name.partition("/")
    registry = ""
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, name = first, rest
    path, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        path, tag = name, ""
    if not path:
        raise ValueError(f"not an image reference: {text!r}")
    return Reference(registry, path, tag, digest)


def in_registry(image: str, host: str, prefix: str = "") -> Reference:
    """Where `image` (a local name, tagged) goes in the registry at `host` under
    `prefix`: its registry part (if any) replaced, its path and tag kept, `latest` when
    it has none."""
    ref = parse_reference(image)
    path = f"{prefix.strip('/')}/{ref.path}" if prefix.strip("/") else ref.path
    return Reference(host, path, ref.tag or "latest")


def pinned(ref: Reference, digest: str) -> str:
    """REPOSITORY:TAG@DIGEST: the engine runs the digest; the tag is for people."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return str(Reference(ref.registry, ref.path, ref.tag, digest))


def recorded_digest(repo_digests: list[str], repository: str) -> str | None:
    """The digest an engine recorded for an image in `repository` (its RepoDigests:
    what it pushed there or pulled from there)."""
    for entry in repo_digests or []:
        name, _, digest = entry.partition("@")
        if name == repository and _DIGEST.fullmatch(digest):
            return digest
    return None


# ---- pure parts: what a refusal means --------------------------------------------------------

_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "no route to host",
                "network is unreachable", "connection reset", "eof")
_TLS = ("http response to https client", "x509", "tls:", "certificate")
_AUTH = ("unauthorized", "authentication required", "no basic auth credentials", "denied",
         "forbidden")


def push_failure(registry: str, doing: str, text: str) -> ShopctlError:
    """The error for a registry's (or the engine's) refusal `text` while `doing`."""
    lower = text.lower()
    where = f"the registry at {registry}"
    if any(word in lower for word in _TLS):
        return OperationFailed(
            f"{doing}: the building engine will not speak plain HTTP to {where} ({text})",
            hint="without TLS an engine pushes to loopback only: push to 127.0.0.1:PORT "
                 "(infra.swarm.registry: {push: 127.0.0.1:PORT, pull: ADDRESS:PORT}), or "
                 f"list {registry} in the engine's insecure-registries "
                 "(/etc/docker/daemon.json), or give the registry a certificate")
    if any(word in lower for word in _AUTH):
        return OperationFailed(
            f"{doing}: {where} refused it: not logged in, or not allowed to push ({text})",
            hint=f"`docker login {registry}` as a user who may push there (the building "
                 "engine's credentials are used), or change infra.swarm.registry")
    if any(word in lower for word in _UNREACHABLE):
        return RuntimeUnavailable(
            f"{doing}: {where} does not answer ({text})",
            hint="start it (`shopctl lab up --registry` runs the lab's), or fix "
                 "infra.swarm.registry in shop.yaml")
    return OperationFailed(f"{doing}: {where} said: {text}",
                           hint="check the registry's log; `docker push` shows the same")


PULL_REFUSALS = 3  # tasks of one image refused for it before `up` gives up waiting


def pull_failure(tasks: list[dict], image: str, since: float) -> OperationFailed | None:
    """The error for a service whose nodes cannot get `image`: PULL_REFUSALS of its
    tasks (for that image) rejected since `since` (Unix time) with an error about it.
    The swarm would retry forever; the person needs to know the nodes cannot reach or
    trust the registry. Older rejections (a registry since fixed) do not count."""
    from shopctl.docker_client import parse_time

    errors = [((t.get("Status") or {}).get("Err") or "") for t in tasks
              if ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Image") == image
              and (t.get("Status") or {}).get("State") == "rejected"
              and (parse_time((t.get("Status") or {}).get("Timestamp", "")) or 0) >= since]
    errors = [e for e in errors if "pull" in e.lower() or "no such image" in e.lower()
              or "manifest" in e.lower()]
    if len(errors) < PULL_REFUSALS:
        return None
    registry = parse_reference(image).registry or "the registry"
    return OperationFailed(
        f"the swarm's nodes cannot get {image}: {errors[0]}",
        hint=f"every node's engine must reach {registry} (infra.swarm.registry.pull) and "
             "trust it: a registry without TLS must be in each node's insecure-registries "
             "(the lab's nodes trust the lab's subnet); `docker pull` on a node shows why")


# ---- the two ways ---------------------------------------------------------------------------

class NodeLoader:
    """No registry: images loaded into the nodes (shopctl.swarm.nodes)."""

    mode = "loaded"

    def __init__(self, config: ShopConfig, builder: docker.DockerClient,
                 manager: docker.DockerClient):
        self._port = config.infra.swarm.node_port
        self._builder = builder
        self._manager = manager

    def ship(self, images: list[str], progress: Progress = no_progress,
             managers_only: bool = False) -> dict[str, str]:
        from shopctl.swarm import nodes

        targets = [n for n in nodes.nodes(self._manager)
                   if n.role == "manager" or not managers_only]
        nodes.distribute(self._builder, images, targets, self._port, progress)
        from shopctl.docker_client import docker_errors

        with docker_errors("looking up the images loaded"):
            return {image: self._builder.images.get(image).id for image in images}


class RegistryPusher:
    """Images pushed to infra.swarm.registry and named by digest (see the contract)."""

    mode = "registry"

    def __init__(self, registry: RegistryConfig, builder: docker.DockerClient):
        self._registry = registry
        self._builder = builder
        self._lock = threading.Lock()
        self._shipped: dict[tuple[str, str], str] = {}  # (image, id) -> pinned reference
        self._checked = False

    def ship(self, images: list[str], progress: Progress = no_progress,
             managers_only: bool = False) -> dict[str, str]:
        images = list(dict.fromkeys(images))
        if not images:
            return {}
        self.check(images[0])
        workers = max(1, min(PUSH_WORKERS, len(images)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shopctl-push") as pool:
            futures = {image: pool.submit(self.push, image, progress) for image in images}
        return {image: future.result() for image, future in futures.items()}

    def check(self, image: str) -> None:
        """Once: does the registry answer the building engine? (Asking it for a manifest
        is the engine's own way, with its TLS settings and credentials.)"""
        import docker.errors

        if self._checked:
            return
        target = in_registry(image, self._registry.push, self._registry.prefix)
        try:
            self._builder.api.inspect_distribution(str(target))
        except docker.errors.NotFound:
            pass  # it answers; it lacks the image
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "manifest unknown" not in text.lower() and "not found" not in text.lower():
                raise push_failure(self._registry.push, "reaching the image registry",
                                   text) from None
        self._checked = True

    def push(self, image: str, progress: Progress = no_progress) -> str:
        """`image` in the registry, as PULL/...:TAG@DIGEST (pushed unless there)."""
        from shopctl.docker_client import docker_errors

        with docker_errors(f"looking up image {image}"):
            found = self._builder.images.get(image)
        key = (image, found.id)
        with self._lock:
            if key in self._shipped:
                return self._shipped[key]
        target = in_registry(image, self._registry.push, self._registry.prefix)
        pull = in_registry(image, self._registry.pull_host, self._registry.prefix)
        with docker_errors(f"tagging {image} as {target}"):
            found.tag(target.repository, target.tag)
            found.reload()
        digest = recorded_digest(found.attrs.get("RepoDigests") or [], target.repository)
        if digest is not None and self._registry_has(target, digest):
            progress(image, f"already in the registry ({digest[7:19]})")
        else:
            started = time.monotonic()
            progress(image, f"pushing to {target.registry}")
            digest = self._push(target)
            progress(image, f"pushed in {time.monotonic() - started:.1f}s ({digest[7:19]})")
        reference = pinned(pull, digest)
        with self._lock:
            self._shipped[key] = reference
        return reference

    def _registry_has(self, target: Reference, digest: str) -> bool:
        import docker.errors

        try:
            found = self._builder.api.inspect_distribution(str(target))
        except docker.errors.APIError:
            return False
        return (found.get("Descriptor") or {}).get("digest") == digest

    def _push(self, target: Reference) -> str:
        """Push and return the manifest digest the registry answered with."""
        import docker.errors
        import requests.exceptions

        doing = f"pushing {target}"
        digest = None
        try:
            for line in self._builder.api.push(target.repository, tag=target.tag,
                                               stream=True, decode=True):
                if line.get("error") or line.get("errorDetail"):
                    text = line.get("error") or (line.get("errorDetail") or {}).get(
                        "message", "")
                    raise push_failure(self._registry.push, doing, text)
                aux = line.get("aux") or {}
                if aux.get("Digest"):
                    digest = aux["Digest"]
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise push_failure(self._registry.push, doing,
                               str(getattr(exc, "explanation", None) or exc)) from None
        if digest is None or not _DIGEST.fullmatch(digest):
            raise OperationFailed(f"{doing}: the engine reported no digest for it",
                                  hint="`docker push` by hand shows what the registry says")
        return digest


def distributor(config: ShopConfig, builder: docker.DockerClient,
                manager: docker.DockerClient) -> NodeLoader | RegistryPusher:
    registry = config.infra.swarm.registry
    if registry is None:
        return NodeLoader(config, builder, manager)
    return RegistryPusher(registry, builder)


def describe(config: ShopConfig) -> dict[str, str]:
    """How the swarm's nodes get their images under `config` (for status and docs)."""
    registry = config.infra.swarm.registry
    if registry is None:
        return {"mode": NodeLoader.mode}
    return {"mode": RegistryPusher.mode, "push": registry.push, "pull": registry.pull_host,
            "prefix": registry.prefix}
