"""The docker runtime: each service and each piece of infra is one labelled container.

What exists for a project P (every object labelled io.shopctl.project=P, which is how
`observe` and `down` find them; nothing is tracked anywhere else):
    network    shopctl-P                  a bridge; services find each other by name
    container  shopctl-P-consul           consul agent -dev, HTTP on 127.0.0.1:<consul.port>
    container  shopctl-P-rabbitmq         AMQP on 127.0.0.1:<rabbitmq.port>
    volume     shopctl-P-rabbitmq-data    the broker's state
    container  shopctl-P-<service>        network alias <service>, ports on 127.0.0.1
    volume     shopctl-P-<service>-data   mounted at /data (SHOP_DATA_DIR)
    image      shopctl-P/<service>:<hash> the service's code (shopctl.images.service);
                                          down removes these only when asked (images)

Services run with restart policy on-failure, so a crash is restarted by the engine and
shows in `restarts`; a container stopped or killed through the engine (`docker stop`,
`docker kill`) is not restarted and shows as exited.

Thread safety: the orchestrator starts independent services from several threads; the
only shared mutable things are the network (created under a lock) and the image table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests

from shopctl import broker, consul_acl
from shopctl.docker_client import connect, docker_errors, interleave, parse_time, port_taken_error
from shopctl.errors import OperationFailed
from shopctl.fingerprint import data_hash
from shopctl.images.base import (
    CONSUL_GID,
    CONSUL_IMAGE,
    CONSUL_UID,
    RABBITMQ_IMAGE,
    RABBITMQ_SERVER,
    ensure_base_images,
)
from shopctl.images.dockerfile import APP_DIR, DATA_DIR, KIT_DIR, SERVICE_GID, SERVICE_UID
from shopctl.images.service import (
    build_service_image,
    build_service_images,
    image_repository,
)
from shopctl.images.tarball import ContextTar, private_files_tar
from shopctl.infra_names import CONSUL, PROMETHEUS, RABBITMQ
from shopctl.ports import PortNeed, is_port_free
from shopctl.runtime import docker_volumes
from shopctl.units import (
    LABEL_HASH,
    LABEL_INSTANCE,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_SERVICE,
    InfraEndpoints,
    LaunchSpec,
    LogLine,
    Progress,
    ServiceState,
    State,
    expand_instances,
    instance_name,
    no_progress,
)

if TYPE_CHECKING:
    from pathlib import Path

    from shopctl.config import ServiceConfig, ShopConfig

LABEL_PORT = "io.shopctl.port"  # the service's main port, for services gone from shop.yaml
INFRA = (CONSUL, RABBITMQ)  # a service cannot take these names: the config refuses them
CONSUL_PORT = 8500  # inside the container
SECRETS_DIR = "/run/shop-secrets"  # a service's SHOP_SECRETS_DIR in its container
CONSUL_ACL_FILE = "/run/shopctl/consul-acl.json"  # the ACL config, in Consul's container
RABBITMQ_DEFINITIONS = "/run/shopctl/rabbitmq-definitions.json"  # the project's user
# More config the broker reads at boot (RABBITMQ_CONFIG_FILES takes a glob): beside the
# definitions, so one archive holds both.
RABBITMQ_CONF = "/run/shopctl/rabbitmq.conf"
AMQP_PORT = 5672
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL, as `docker stop`
INFRA_READY_TIMEOUT = 120.0
INFRA_POLL = 0.1  # seconds between readiness checks of consul / rabbitmq
_LOOPBACK = "127.0.0.1"

_STATES: dict[str, State] = {
    "created": "starting",
    "running": "running",
    "restarting": "restarting",
}  # everything else (exited, dead, removing, paused) does not serve: "exited"


def network_name(project: str) -> str:
    return f"shopctl-{project}"


def container_name(project: str, service: str) -> str:
    return f"shopctl-{project}-{service}"


def volume_name(project: str, service: str) -> str:
    return f"shopctl-{project}-{service}-data"


class DockerRuntime:
    """Runtime protocol (shopctl.runtime.base) on a Docker engine. Connects lazily, so
    constructing one never fails; the first call raises RuntimeUnavailable if no engine
    answers. `config` is accepted because make_runtime passes it; every method takes the
    config it acts on, so it is not kept."""

    name = "docker"

    def __init__(
        self, config: ShopConfig | None = None, *, client: docker.DockerClient | None = None
    ):
        self._client = client
        self._connect_lock = threading.Lock()
        self._network_lock = threading.Lock()
        self._images: dict[tuple[str, str], str] = {}  # (project, service) -> tag

    @property
    def client(self) -> docker.DockerClient:
        with self._connect_lock:
            if self._client is None:
                self._client = connect()
            return self._client

    # ---- infra ---------------------------------------------------------------------------

    def ensure_infra(self, config: ShopConfig, progress: Progress = no_progress) -> InfraEndpoints:
        endpoints, waiters = self.start_infra(config, progress)
        for wait in waiters.values():
            wait()
        return endpoints

    def start_infra(
        self, config: ShopConfig, progress: Progress = no_progress
    ) -> tuple[InfraEndpoints, dict[str, Callable[[], None]]]:
        """ensure_infra without the waiting: start the infra containers that do not run
        (all at once) and return the endpoints with, per enabled part, a function that
        blocks until that part answers (OperationFailed if its container stops, or after
        INFRA_READY_TIMEOUT from now). `up` lets RabbitMQ boot while services start.
        ensure_infra is exactly this plus calling every waiter."""
        ensure_base_images(config, progress, self.client)
        self._ensure_network(config.project)
        parts = self._enabled_infra(config)
        with ThreadPoolExecutor(max_workers=max(1, len(parts))) as pool:
            started = [
                pool.submit(self._ensure_infra_container, config, part, progress)
                for part in parts
            ]
        for future in started:
            future.result()  # the first failure, in INFRA order
        endpoints = _endpoints(config)
        deadline = time.monotonic() + INFRA_READY_TIMEOUT
        checks = {
            "consul": ("waiting for a leader", lambda: _consul_has_leader(endpoints)),
            "rabbitmq": ("waiting for AMQP", lambda: self._rabbitmq_ready(config)),
        }

        def waiter(part: str) -> Callable[[], None]:
            doing, ready = checks[part]

            def wait() -> None:
                progress(part, doing)
                self._wait_ready(config, part, ready, deadline)
                progress(part, "ready")

            return wait

        waiters = {part: waiter(part) for part in parts}
        # Prometheus and its Consul bridge as infra.prometheus says (shopctl.prom.docker).
        waiters["prometheus"] = lambda: _sync_prometheus(self, config, progress)
        return endpoints, waiters

    def _rabbitmq_ready(self, config: ShopConfig) -> bool:
        """The broker answers AMQP and lets the project's user in, guest not (adding
        the user and removing guest the first time: see shopctl.broker)."""
        port = config.infra.rabbitmq.port
        if not broker.answers(_LOOPBACK, port):
            return False
        if not broker.needs_provisioning(config, _LOOPBACK, port, own_broker=True):
            return True
        container = self._container(container_name(config.project, RABBITMQ))
        if container is None:
            return False
        folder, file = RABBITMQ_DEFINITIONS.rsplit("/", 1)
        with docker_errors("giving RabbitMQ the project's user"):
            # a salted hash of the password, not the password: readable by the broker
            container.put_archive("/", private_files_tar(
                folder, {file: broker.definitions(config)}, mode=0o444))
            imported = container.exec_run(["rabbitmqctl", "import_definitions",
                                           RABBITMQ_DEFINITIONS])
            if imported.exit_code != 0:
                return False  # a booting node refuses the CLI for a moment: next poll
            container.exec_run(["rabbitmqctl", "delete_user", broker.GUEST])
        return not broker.needs_provisioning(config, _LOOPBACK, port, own_broker=True)

    def infra_endpoints(self, config: ShopConfig) -> InfraEndpoints | None:
        for part in self._enabled_infra(config):
            found = self._container(container_name(config.project, part))
            if found is None or found.status != "running":
                return None
        return _endpoints(config)

    # ---- services -------------------------------------------------------------------------

    def prepare(
        self, config: ShopConfig, services: list[str], progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> None:
        built = build_service_images(config, services, progress, self.client, cancel)
        for service, (tag, _hash) in built.items():
            self._images[(config.project, service)] = tag

    def start_service(
        self, config: ShopConfig, spec: LaunchSpec, progress: Progress = no_progress
    ) -> ServiceState:
        service, instance = spec.service, spec.instance
        svc = config.service(service)
        project = config.project
        name = container_name(project, instance)
        tag = self._image_for(config, service, progress)
        self._ensure_network(project)
        self.stop_service(config, instance)  # replacing: the old one must free its ports
        ports = _host_ports(svc)
        if spec.fixed_ports:
            for port in ports:
                self._check_port(port, f"starting {instance}")
        labels = {
            LABEL_PROJECT: project,
            LABEL_SERVICE: service,
            LABEL_INSTANCE: str(spec.index),
            LABEL_ROLE: "service",
            LABEL_HASH: spec.config_hash,
            LABEL_PORT: str(svc.port),
        }
        # A new volume takes the owner of the image's /data at the first start: only one
        # that exists may need handing over, and looking costs the engine ~0.2-0.3 s.
        inherited = self._volume_exists(volume_name(project, service))
        volume = self._ensure_volume(project, service)
        progress(instance, f"starting container {name}")
        api = self.client.api
        with docker_errors(f"starting {instance}"):
            host_config = api.create_host_config(
                # Further instances publish on free host ports the engine picks.
                port_bindings={port: (_LOOPBACK, port) if spec.fixed_ports else (_LOOPBACK,)
                               for port in ports},
                binds={volume: {"bind": "/data", "mode": "rw"}},
                restart_policy={"Name": "on-failure", "MaximumRetryCount": 0},
                network_mode=network_name(project),
                security_opt=["no-new-privileges"],  # no way back to root (setuid binaries)
            )
            # Every instance answers to the service's name on the network (and to its own).
            aliases = list(dict.fromkeys([service, instance]))
            networking = api.create_networking_config(
                {network_name(project): api.create_endpoint_config(aliases=aliases)}
            )
            created = api.create_container(
                tag,
                name=name,
                hostname=instance,
                user=f"{SERVICE_UID}:{SERVICE_GID}",  # as the image says; never root
                environment=_service_env(config, svc, spec),
                labels=labels,
                ports=[(port, "tcp") for port in ports],
                host_config=host_config,
                networking_config=networking,
            )
            if inherited:
                # A volume an older shopctl's root-run service wrote: give its files to the user.
                docker_volumes.hand_over(self.client, created["Id"], tag, DATA_DIR, SERVICE_UID,
                                         SERVICE_GID, labels=labels, subject=service,
                                         progress=progress)
            if spec.secrets:
                # Owned by the service's user (0400 in a 0500 folder): no other reads them.
                api.put_archive(created["Id"], "/", private_files_tar(
                    SECRETS_DIR, dict(spec.secrets), SERVICE_UID, SERVICE_GID))
            api.start(created["Id"])
            return self._state(self.client.containers.get(created["Id"]).attrs, config)

    def reload_service(
        self, config: ShopConfig, spec: LaunchSpec, changed: list[tuple[str, Path | None]]
    ) -> ServiceState:
        """Copy the changed files into the container (root's, as the image has them),
        delete the deleted ones, restart the container. Its image now lacks that code,
        and its label keeps the old hash: the next `up` rebuilds and replaces it."""
        found = self._container(container_name(config.project, spec.instance))
        if found is None:
            raise OperationFailed(f"{spec.instance} has no container to reload",
                                  hint=f"`shopctl up {spec.service}` starts it")
        tar = ContextTar()
        gone = []
        for name, path in changed:
            target = _live_path(name)
            if path is None:
                gone.append(target)
            elif path.is_file():
                tar.add_file(target.lstrip("/"), path)
        with docker_errors(f"reloading {spec.instance}"):
            running = found.status == "running"
            if not running:  # crashing after a bad save: halt its restart loop first
                found.stop(timeout=STOP_TIMEOUT)
            found.put_archive("/", tar.finish().read())
            if gone:  # a process must run to delete in its file system
                if not running:
                    found.start()
                found.exec_run(["rm", "-f", *gone], user="root")
            # Not restart() right after start(): a process still importing has no SIGTERM
            # handler yet, and as pid 1 it ignores the signal until the stop timeout.
            if running or gone:
                found.restart(timeout=STOP_TIMEOUT)
            else:
                found.start()
            found.reload()
        return self._state(found.attrs, config)

    def stop_service(self, config: ShopConfig, service: str) -> None:
        """`service`: an instance name (a service's first instance is named as it)."""
        found = self._container(container_name(config.project, service))
        if found is not None:
            self._remove(found)

    def running_units(self, config: ShopConfig) -> list[str]:
        """The infra parts, then the services, of the project whose containers run now."""
        with docker_errors("listing containers"):
            found = self.client.containers.list(filters={"label": _project_label(config)})
        names = [(c.labels.get(LABEL_ROLE) != "infra", _unit_name(c.labels, c.name))
                 for c in found]
        return [name for _, name in sorted(names)]

    def observe(self, config: ShopConfig) -> dict[str, ServiceState]:
        with docker_errors("listing containers"):
            found = self.client.containers.list(
                all=True, filters={"label": [_project_label(config), f"{LABEL_ROLE}=service"]}
            )
        states = {}
        for container in found:
            state = self._state(container.attrs, config)
            states[state.instance] = state
        return states

    def instance(self, config: ShopConfig, service: str) -> ServiceState | None:
        found = self._container(container_name(config.project, service))
        if found is None or found.labels.get(LABEL_PROJECT) != config.project:
            return None
        return self._state(found.attrs, config)

    def infra_ports(self, config: ShopConfig) -> list[PortNeed]:
        infra = config.infra
        needs = [PortNeed(getattr(infra, part).port, f"infra.{part}.port", part)
                 for part in self._enabled_infra(config)]
        if infra.rabbitmq.enabled and infra.rabbitmq.management_port:
            needs.append(PortNeed(infra.rabbitmq.management_port,
                                  "infra.rabbitmq.management_port", RABBITMQ))
        if infra.prometheus.enabled:
            needs.append(PortNeed(infra.prometheus.port, "infra.prometheus.port", PROMETHEUS))
        return needs

    def port_owners(
        self, config: ShopConfig, ports: list[int]
    ) -> dict[int, tuple[str | None, str | None]]:
        """Who publishes each port among the running containers of every project (a
        container's host port is held by the engine's proxy, not by the container)."""
        wanted = {str(port) for port in ports}
        owners: dict[int, tuple[str | None, str | None]] = {}
        with docker_errors("listing containers"):
            # The list's own entries name the published ports: one request, where
            # containers.list() inspects every container of the engine (a no-op `up` asks).
            containers = self.client.api.containers()
        for found in containers:
            labels = found.get("Labels") or {}
            for binding in found.get("Ports") or []:
                host_port = str(binding.get("PublicPort", ""))
                if host_port not in wanted:
                    continue
                ours = labels.get(LABEL_PROJECT) == config.project
                unit = labels.get(LABEL_SERVICE) if ours else None
                name = (found.get("Names") or [found["Id"][:12]])[0].lstrip("/")
                owners[int(host_port)] = (unit, f"container {name}")
        return owners

    def logs(
        self, config: ShopConfig, services: list[str], follow: bool, tail: int | None
    ) -> Iterator[LogLine]:
        """Interleaved log lines; `services` may name infra too ("consul", "rabbitmq"); an
        empty list means every service of the project."""
        observed = self.observe(config)
        names = expand_instances(config, services, observed) if services else sorted(observed)
        targets = {name: container_name(config.project, name) for name in names}
        return interleave(self.client, targets, follow=follow, tail=tail)

    def down(self, config: ShopConfig, volumes: bool, progress: Progress = no_progress,
             images: bool = False) -> None:
        label = _project_label(config)
        client = self.client
        with docker_errors(f"removing project {config.project}"):
            containers = client.containers.list(all=True, filters={"label": label})
            # Services before infra, so nothing logs "consul unreachable" while stopping.
            containers.sort(key=lambda c: c.labels.get(LABEL_ROLE) == "infra")
            for container in containers:
                progress(_unit_name(container.labels, container.name), "removing")
                self._remove(container)
            for network in client.networks.list(filters={"label": label}):
                progress(network.name, "removing network")
                network.remove()
            if volumes:
                for volume in client.volumes.list(filters={"label": label}):
                    progress(volume.name, "removing volume")
                    volume.remove(force=True)
        if images:
            self._remove_images(config, progress)

    # ---- helpers --------------------------------------------------------------------------

    def _remove_images(self, config: ShopConfig, progress: Progress) -> None:
        """Untag the service images of the project (by its label, and only their tags in
        the project's own repositories: shopctl-P/<service>); the last tag gone removes
        the image and its build layers. Base and infra images carry no project label. An
        image still used by a container (of another project: this one's are gone) is
        reported and kept; one removed meanwhile (a concurrent down) is no error."""
        project = config.project
        for key in [key for key in self._images if key[0] == project]:
            self._images.pop(key, None)  # a later start_service must build again
        with docker_errors(f"listing the images of project {project}"):
            found = self.client.images.list(filters={"label": _project_label(config)})
        for image in found:
            service = image.labels.get(LABEL_SERVICE)
            if service is None:
                continue  # labelled by hand, not built by shopctl
            repository = image_repository(project, service)
            refs = {tag: tag for tag in image.tags if tag.rpartition(":")[0] == repository}
            if not image.tags:  # dangling: its tag moved on, the label says whose it is
                refs = {image.short_id: image.id}
            for name, ref in refs.items():
                progress(name, "removing image")
                with docker_errors(f"removing image {name}"):
                    try:
                        self.client.images.remove(ref, noprune=False)
                    except docker.errors.NotFound:
                        pass
                    except docker.errors.APIError as exc:
                        if exc.status_code != 409:  # 409 Conflict: in use
                            raise
                        progress(name, f"image kept: {exc.explanation or exc}")

    def _image_for(self, config: ShopConfig, service: str, progress: Progress) -> str:
        """The tag prepare() built; builds (or finds up to date) when prepare was skipped."""
        tag = self._images.get((config.project, service))
        if tag is None:
            tag, _hash = build_service_image(config, service, progress, self.client)
            self._images[(config.project, service)] = tag
        return tag

    def _ensure_network(self, project: str) -> None:
        name = network_name(project)
        with self._network_lock, docker_errors(f"creating network {name}"):
            if not self.client.networks.list(names=[name]):
                self.client.networks.create(
                    name,
                    driver="bridge",
                    labels={LABEL_PROJECT: project, LABEL_ROLE: "network"},
                    check_duplicate=True,  # the engine otherwise allows two of one name
                )

    def _ensure_volume(self, project: str, service: str) -> str:
        name = volume_name(project, service)
        with docker_errors(f"creating volume {name}"):
            # Creating an existing volume returns it unchanged: data survives replaces.
            self.client.volumes.create(
                name, labels={LABEL_PROJECT: project, LABEL_SERVICE: service}
            )
        return name

    def _volume_exists(self, name: str) -> bool:
        with docker_errors(f"looking up volume {name}"):
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                return False
        return True

    def _enabled_infra(self, config: ShopConfig) -> list[str]:
        return [part for part in INFRA if getattr(config.infra, part).enabled]

    def _ensure_infra_container(self, config: ShopConfig, part: str, progress: Progress) -> None:
        project = config.project
        name = container_name(project, part)
        files, command = _infra_files(config, part)
        wanted = data_hash({"image": getattr(config.infra, part).image, "files": files,
                            "command": command})[:16]
        found = self._container(name)
        if found is not None:
            if found.labels.get(LABEL_PROJECT) != project:
                raise OperationFailed(
                    f"a container named {name} exists but is not shopctl's",
                    hint=f"remove it: docker rm -f {name}",
                )
            if found.labels.get(LABEL_HASH) != wanted:  # its config changed (ACLs on)
                progress(part, "replacing the container: its configuration changed")
                self._remove(found)
                found = None
        if found is not None:
            if found.status != "running":
                progress(part, "starting the existing container")
                with docker_errors(f"starting {part}"):
                    found.start()
            return
        settings = getattr(config.infra, part)
        inner = CONSUL_PORT if part == "consul" else AMQP_PORT
        ports = {f"{inner}/tcp": (_LOOPBACK, settings.port)}
        if part == "rabbitmq" and settings.management_port:
            ports["15672/tcp"] = (_LOOPBACK, settings.management_port)
        for host_port in (binding[1] for binding in ports.values()):
            self._check_port(host_port, f"starting {part}")
        extra: dict[str, Any] = {}
        if part == "rabbitmq":
            volume = self._ensure_volume(project, part)
            extra["volumes"] = {volume: {"bind": "/var/lib/rabbitmq", "mode": "rw"}}
        if command:
            extra["command"] = command
        # Who reads the files: the user shopctl's own image runs Consul as (nobody), the
        # file private to it; another image's user is unknown (the official one switches
        # to its own), so any user of that container may read them.
        owner = (CONSUL_UID, CONSUL_GID, 0o400) if settings.image == CONSUL_IMAGE else (0, 0, 0o444)
        progress(part, f"starting container {name} ({settings.image})")
        with docker_errors(f"starting {part}"):
            created = self.client.containers.create(
                settings.image,
                name=name,
                # A fixed hostname keeps RabbitMQ's node name, hence its data, across
                # container replacements.
                hostname=part,
                labels={LABEL_PROJECT: project, LABEL_SERVICE: part, LABEL_ROLE: "infra",
                        LABEL_HASH: wanted},
                ports=ports,
                network=network_name(project),
                restart_policy={"Name": "on-failure", "MaximumRetryCount": 0},
                **extra,
            )
            for folder, contents in files.items():  # before it starts: it reads them then
                created.put_archive("/", private_files_tar(folder, contents, *owner))
            created.start()

    def _wait_ready(self, config: ShopConfig, part: str, ready: Any, deadline: float) -> None:
        name = container_name(config.project, part)
        while True:
            if ready():
                return
            found = self._container(name)
            if found is None or found.status not in ("running", "restarting", "created"):
                raise OperationFailed(
                    f"{part} stopped while starting ({found.status if found else 'removed'})",
                    hint="its last output:\n" + self._tail(name),
                )
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"{part} did not become ready within {INFRA_READY_TIMEOUT:.0f}s",
                    hint="its last output:\n" + self._tail(name),
                )
            time.sleep(INFRA_POLL)

    def _tail(self, name: str, lines: int = 15) -> str:
        found = self._container(name)
        if found is None:
            return "(no container)"
        with docker_errors(f"reading logs of {name}"):
            return found.logs(tail=lines).decode(errors="replace").rstrip()

    def _check_port(self, port: int, doing: str) -> None:
        if is_port_free(_LOOPBACK, port):
            return
        raise port_taken_error(port, doing, holder=self._container_publishing(port))

    def _container_publishing(self, port: int) -> str | None:
        """'container NAME' when a container (of any project) publishes host `port`."""
        with docker_errors("listing containers"):
            for container in self.client.containers.list():
                for bindings in (container.ports or {}).values():
                    if any(str(port) == b.get("HostPort") for b in bindings or []):
                        return f"container {container.name}"
        return None  # port_taken_error then asks /proc

    def _container(self, name: str) -> Any:
        with docker_errors(f"looking up {name}"):
            try:
                return self.client.containers.get(name)
            except docker.errors.NotFound:
                return None

    def _remove(self, container: Any) -> None:
        with docker_errors(f"removing {container.name}"):
            try:
                if container.status in ("running", "restarting"):
                    container.stop(timeout=STOP_TIMEOUT)
                # v=True drops anonymous volumes (images that declare VOLUME); named
                # volumes, the ones holding data, stay.
                container.remove(v=True, force=True)
            except docker.errors.NotFound:
                pass  # removed meanwhile (a concurrent down): the goal is reached

    def _state(self, attrs: dict[str, Any], config: ShopConfig) -> ServiceState:
        labels = attrs["Config"].get("Labels") or {}
        service = labels.get(LABEL_SERVICE, attrs["Name"].lstrip("/"))
        raw = attrs["State"]
        status = raw.get("Status", "exited")
        state = _STATES.get(status, "exited")
        svc = config.services.get(service)
        port = svc.port if svc else int(labels.get(LABEL_PORT, 0)) or None
        network = (attrs.get("NetworkSettings", {}).get("Networks") or {}).get(
            network_name(config.project)
        )
        extra = {"container": attrs["Name"].lstrip("/"), "docker_status": status}
        try:
            index = max(1, int(labels.get(LABEL_INSTANCE, "1")))
        except ValueError:
            index = 1
        restarts = int(attrs.get("RestartCount", 0))
        if svc and svc.metrics_port:
            extra["metrics_port"] = str(svc.metrics_port)
        return ServiceState(
            service=service,
            state=state,
            instance_id=attrs["Id"][:12],
            address=(network or {}).get("IPAddress") or None,
            port=port,
            host_port=_published(attrs, port),
            index=index,
            started_at=parse_time(raw.get("StartedAt", "")),
            restarts=restarts,
            image=attrs["Config"].get("Image"),
            config_hash=labels.get(LABEL_HASH),
            # The engine keeps the last exit's code while the container is down; a
            # container running again reports 0.
            exit_code=raw.get("ExitCode") if state in ("exited", "restarting") else None,
            # The engine counts a restart when it schedules it, i.e. at the crash.
            crashes=restarts,
            extra=extra,
        )


def _unit_name(labels: dict[str, str], fallback: str) -> str:
    """An infra part's name, or a service instance's (SERVICE, SERVICE.N)."""
    service = labels.get(LABEL_SERVICE)
    if service is None:
        return fallback
    try:
        return instance_name(service, int(labels.get(LABEL_INSTANCE, "1")))
    except ValueError:
        return service


def _project_label(config: ShopConfig) -> str:
    return f"{LABEL_PROJECT}={config.project}"


def _host_ports(svc: ServiceConfig) -> list[int]:
    """Ports published on 127.0.0.1, the same number inside and out."""
    ports = [svc.port]
    if svc.metrics_port and svc.metrics_port != svc.port:
        ports.append(svc.metrics_port)
    return ports


def _published(attrs: dict[str, Any], port: int | None) -> int | None:
    """The host port `port` is published on: as running (a free port the engine chose
    shows only there), else as configured."""
    if port is None:
        return None
    for where in (attrs.get("NetworkSettings", {}).get("Ports"),
                  attrs.get("HostConfig", {}).get("PortBindings")):
        for binding in (where or {}).get(f"{port}/tcp") or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
    return None


def _service_env(config: ShopConfig, svc: ServiceConfig, spec: LaunchSpec) -> dict[str, str]:
    """spec.env as given, plus what only a container can decide (bind all interfaces,
    data on the volume); the SHOP_* basics are filled in if the caller left them out."""
    env = {key: str(value) for key, value in spec.env.items()}
    env.setdefault("SHOP_PROJECT", config.project)
    env.setdefault("SHOP_SERVICE", svc.name)
    env["SHOP_INSTANCE"] = spec.instance
    env.setdefault("SHOP_PORT", str(svc.port))
    if svc.metrics_port:
        env.setdefault("SHOP_METRICS_PORT", str(svc.metrics_port))
    # 127.0.0.1 inside a container is unreachable from the published port and from
    # Consul's checks; /data is the volume whatever path the host side would use.
    env["SHOP_HOST"] = "0.0.0.0"
    env["SHOP_DATA_DIR"] = "/data"
    env["SHOP_SECRETS_DIR"] = SECRETS_DIR
    return env


def _endpoints(config: ShopConfig) -> InfraEndpoints:
    """Endpoints of the project's infra; "" for a part that is disabled."""
    consul, rabbit = config.infra.consul, config.infra.rabbitmq
    consul_name = container_name(config.project, "consul")
    rabbit_name = container_name(config.project, "rabbitmq")
    return InfraEndpoints(
        consul_http=f"http://{_LOOPBACK}:{consul.port}" if consul.enabled else "",
        amqp_uri=broker.uri(config, _LOOPBACK, rabbit.port) if rabbit.enabled else "",
        service_consul_addr=f"{consul_name}:{CONSUL_PORT}" if consul.enabled else "",
        service_amqp_uri=broker.uri(config, rabbit_name, AMQP_PORT) if rabbit.enabled else "",
    )


def _live_path(name: str) -> str:
    """Where a source file named as in Runtime.reload_service lives in a service image."""
    root, _, rest = name.partition("/")
    base = {"app": APP_DIR, "shopkit": f"{KIT_DIR}/shopkit"}[root]  # see images.dockerfile
    return f"{base}/{rest}"


def _infra_files(config: ShopConfig, part: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """({folder: {file: content}}, command) an infra container is created with: Consul
    with ACLs reads its config from a private file (the management token is in it).
    shopctl's RabbitMQ imports the project's user at boot (a new broker then never has
    guest), instead of two `rabbitmqctl` calls of ~0.4 s each once it answers; a broker
    whose data predates the user still gets it that way (see _rabbitmq_ready)."""
    if part == CONSUL and consul_acl.enabled(config):
        folder, file = CONSUL_ACL_FILE.rsplit("/", 1)
        config_text = consul_acl.agent_config(consul_acl.management_token(config))
        command = ["consul", "agent", "-dev", "-client", "0.0.0.0", "-ui", "-node", "shopctl",
                   "-config-file", CONSUL_ACL_FILE]
        return {folder: {file: config_text}}, command
    if part == RABBITMQ and config.infra.rabbitmq.image == RABBITMQ_IMAGE:
        folder, file = RABBITMQ_DEFINITIONS.rsplit("/", 1)
        conf = RABBITMQ_CONF.rsplit("/", 1)[1]
        files = {folder: {file: broker.definitions(config),
                          conf: f"load_definitions = {RABBITMQ_DEFINITIONS}"}}
        return files, ["env", f"RABBITMQ_CONFIG_FILES={folder}/*.conf", RABBITMQ_SERVER]
    return {}, []


def _sync_prometheus(runtime: DockerRuntime, config: ShopConfig, progress: Progress) -> None:
    from shopctl.prom.docker import sync_prometheus

    sync_prometheus(runtime, config, progress)


def _consul_has_leader(endpoints: InfraEndpoints) -> bool:
    # requests (which the Docker SDK loads anyway), not httpx: ~0.1 s less per `up`.
    try:
        response = requests.get(f"{endpoints.consul_http}/v1/status/leader", timeout=2.0)
        return response.status_code == 200 and bool(response.json())
    except (requests.RequestException, ValueError):
        return False
