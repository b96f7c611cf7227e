"""The docker runtime: each service and each piece of infra is one labelled container.

What exists for a project P (every object labelled io.shopctl.project=P, which is how
`observe` and `down` find them; nothing is tracked anywhere else):
    network    shopctl-P                  a bridge; services find each other by name
    container  shopctl-P-consul           consul agent -dev, HTTP on 127.0.0.1:<consul.port>
    container  shopctl-P-rabbitmq         AMQP on 127.0.0.1:<rabbitmq.port>
    volume     shopctl-P-rabbitmq-data    the broker's state
    container  shopctl-P-postgres         with infra.postgres (shopctl.databases), on
    volume     shopctl-P-postgres-data    127.0.0.1:<postgres.port>; its data
    container  shopctl-P-promsd, -prometheus  with infra.prometheus (shopctl.prom.docker)
    container  shopctl-P-<service>        network alias <service>, ports on 127.0.0.1
    volume     shopctl-P-<service>-data   mounted at /data (SHOP_DATA_DIR)
    image      shopctl-P/<service>:<hash> the service's code (shopctl.images.service);
                                          down removes these only when asked (images)

Infra containers are units (shopctl.units.UnitSpec) that shopctl.infra.docker builds
from the config; start_unit / ensure_unit / observe_units / remove_unit run any such
spec, and each infra container is reachable on the network by its unit name.

Services run with restart policy on-failure, so a crash is restarted by the engine and
shows in `restarts`; a container stopped or killed through the engine (`docker stop`,
`docker kill`) is not restarted and shows as exited.

Thread safety: the orchestrator starts independent services from several threads; the
only shared mutable things are the network (created under a lock) and the image table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from shopctl import broker, databases, readiness
from shopctl.docker_client import connect, docker_errors, interleave, parse_time, port_taken_error
from shopctl.errors import OperationFailed
from shopctl.fingerprint import data_hash
from shopctl.images.base import ensure_base_images, ensure_image
from shopctl.images.dockerfile import APP_DIR, DATA_DIR, KIT_DIR, SERVICE_GID, SERVICE_UID
from shopctl.images.service import (
    build_service_image,
    build_service_images,
    remove_project_images,
)
from shopctl.images.tarball import ContextTar, private_files_tar
from shopctl.infra import docker as docker_infra
from shopctl.infra.docker import AMQP_PORT, CONSUL_PORT
from shopctl.infra_names import CONSUL, POSTGRES, PROMETHEUS, RABBITMQ, enabled_by
from shopctl.ports import PortNeed, is_port_free
from shopctl.runtime import docker_volumes
from shopctl.runtime.base import UnitLifecycle
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
    container_name,
    expand_instances,
    instance_name,
    network_name,
    no_progress,
    volume_name,
)

if TYPE_CHECKING:
    from pathlib import Path

    from shopctl.config import ServiceConfig, ShopConfig
    from shopctl.units import Setup, UnitSpec

LABEL_PORT = "io.shopctl.port"  # the service's main port, for services gone from shop.yaml
SECRETS_DIR = "/run/shop-secrets"  # a service's SHOP_SECRETS_DIR in its container
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL, as `docker stop`
_LOOPBACK = "127.0.0.1"

_STATES: dict[str, State] = {
    "created": "starting",
    "running": "running",
    "restarting": "restarting",
}  # everything else (exited, dead, removing, paused) does not serve: "exited"


class DockerRuntime(UnitLifecycle):
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
        # (project, instance) -> the creation of a container start_service will start
        self._staged: dict[tuple[str, str], Future[tuple[str, str]]] = {}
        self._stage_lock = threading.Lock()
        self._stage_pool: ThreadPoolExecutor | None = None

    @property
    def client(self) -> docker.DockerClient:
        with self._connect_lock:
            if self._client is None:
                self._client = connect()
            return self._client

    # ---- infra and units --------------------------------------------------------------


    def start_infra(
        self, config: ShopConfig, progress: Progress = no_progress
    ) -> tuple[InfraEndpoints, dict[str, Callable[[], None]]]:
        """ensure_infra without the waiting: remove the infra units no longer wanted,
        start the others (all at once) and return the endpoints with, per unit, a
        function that blocks until it is ready (OperationFailed if its container stops,
        or after its readiness timeout from now). `up` lets RabbitMQ boot while services
        start. ensure_infra is exactly this plus calling every waiter."""
        ensure_base_images(config, progress, self.client)
        self._ensure_network(config.project)
        specs = docker_infra.units(config, self.name)
        wanted = {spec.name for spec in specs}
        for name, container in self._infra_containers(config).items():
            if name not in wanted:
                progress(name, f"removing ({enabled_by(name)} is false)")
                self._remove(container)
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            started = [(spec.name, pool.submit(self.start_unit, config, spec, progress))
                       for spec in specs]
        waiters = {name: future.result() for name, future in started}  # the first failure
        return _endpoints(config), waiters


    def start_unit(
        self, config: ShopConfig, spec: UnitSpec, progress: Progress = no_progress
    ) -> Callable[[], None]:
        """Keep the unit's container when its hash label matches (started if it was
        stopped), else replace it: remove it, check the host ports, create the
        container with its files, start it. The label covers spec.config_hash and the
        image's id, so a rebuilt or pulled image replaces the unit too. Returns a
        function that blocks until the unit is ready."""
        project = config.project
        name = container_name(project, spec.name)
        subject = spec.shown_as
        image_id = ensure_image(self.client, spec.image, progress).image_id
        wanted = data_hash({"spec": spec.config_hash, "image": image_id})[:16]
        found = self._container(name)
        if found is not None:
            if found.labels.get(LABEL_PROJECT) != project:
                raise OperationFailed(
                    f"a container named {name} exists but is not shopctl's",
                    hint=f"remove it: docker rm -f {name}",
                )
            if found.labels.get(LABEL_HASH) != wanted:
                progress(subject, "replacing the container: its configuration changed")
                self._remove(found)
                found = None
        if found is not None:
            if found.status != "running":
                progress(subject, "starting the existing container")
                with docker_errors(f"starting {spec.name}"):
                    found.start()
            else:
                progress(subject, "running")
        else:
            self._create_unit(config, spec, wanted, progress)
        return lambda: self._wait_unit(config, spec, progress)

    def observe_units(self, config: ShopConfig, role: str = "infra") -> dict[str, ServiceState]:
        """The units of `role` of the project, by name (as `observe` for services)."""
        with docker_errors("listing containers"):
            found = self.client.containers.list(
                all=True, filters={"label": [_project_label(config), f"{LABEL_ROLE}={role}"]})
        return {state.instance: state for state in (self._state(c.attrs, config) for c in found)}

    def remove_unit(self, config: ShopConfig, name: str, role: str = "infra") -> None:
        """Stop and remove the unit's container (its volume stays); missing is no error."""
        found = self._container(container_name(config.project, name))
        if found is not None and found.labels.get(LABEL_PROJECT) == config.project:
            self._remove(found)

    def _infra_containers(self, config: ShopConfig) -> dict[str, Any]:
        with docker_errors("listing containers"):
            found = self.client.containers.list(
                all=True, filters={"label": [_project_label(config), f"{LABEL_ROLE}=infra"]})
        return {c.labels.get(LABEL_SERVICE, c.name): c for c in found}

    def _create_unit(
        self, config: ShopConfig, spec: UnitSpec, config_hash: str, progress: Progress
    ) -> None:
        project = config.project
        name = container_name(project, spec.name)
        for need in spec.ports:
            self._check_port(need.host, f"starting {spec.name}")
        binds = {self._ensure_volume(project, key): {"bind": path, "mode": "rw"}
                 for key, path in spec.volumes.items()}
        labels = {LABEL_PROJECT: project, LABEL_SERVICE: spec.name, LABEL_ROLE: spec.role,
                  LABEL_HASH: config_hash}
        api = self.client.api
        progress(spec.shown_as, f"starting container {name} ({spec.image})")
        with docker_errors(f"starting {spec.name}"):
            host_config = api.create_host_config(
                port_bindings={p.inner: (_LOOPBACK, p.host) for p in spec.ports},
                binds=binds,
                restart_policy={"Name": "on-failure", "MaximumRetryCount": 0},
                network_mode=network_name(project),
            )
            networking = api.create_networking_config(
                {network_name(project): api.create_endpoint_config(aliases=[spec.name])}
            )
            created = api.create_container(
                spec.image,
                command=list(spec.command) if spec.command is not None else None,
                name=name,
                hostname=spec.name,  # fixed: RabbitMQ's node name, hence its data, stays
                user=spec.user,  # None: the image's
                environment=dict(spec.env) or None,
                labels=labels,
                ports=[(p.inner, "tcp") for p in spec.ports],
                host_config=host_config,
                networking_config=networking,
            )
            if spec.volume_owner is not None:
                for path in spec.volumes.values():
                    docker_volumes.hand_over(
                        self.client, created["Id"], spec.image, path, *spec.volume_owner,
                        labels={LABEL_PROJECT: project}, subject=spec.shown_as,
                        progress=progress)
            for folder, files in spec.files.items():  # before it starts: it reads them then
                api.put_archive(created["Id"], "/", private_files_tar(
                    folder, dict(files), *spec.files_owner, mode=spec.files_mode))
            api.start(created["Id"])

    def _wait_unit(self, config: ShopConfig, spec: UnitSpec, progress: Progress) -> None:
        if spec.readiness is None:  # running is ready
            progress(spec.shown_as, "ready")
            return
        name = container_name(config.project, spec.name)
        subject = spec.shown_as

        def failed() -> str | None:
            found = self._container(name)
            if found is None or found.status not in ("running", "restarting", "created"):
                return f"stopped while starting ({found.status if found else 'removed'})"
            return None

        def run_step(argv: tuple[str, ...], setup: Setup) -> tuple[bool, str]:
            found = self._container(name)
            if found is None:
                return False, "(no container)"
            with docker_errors(f"setting {spec.name} up"):
                done = found.exec_run(list(argv))
            return done.exit_code == 0, (done.output or b"").decode(errors="replace")

        progress(subject, spec.readiness.waiting)
        readiness.wait(spec.readiness, failed, spec.setup, run_step,
                       progress=lambda message: progress(subject, message), what=spec.name,
                       hint=lambda: "its last output:\n" + self._tail(name))
        progress(subject, "ready")

    def infra_endpoints(self, config: ShopConfig) -> InfraEndpoints | None:
        for part in _enabled_brokers(config):
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

    def stage_services(self, config: ShopConfig, specs: list[LaunchSpec]) -> None:
        """Create, in the background, the containers of instances that `up` is about to
        start for the first time (none of that name exists), while it waits for Consul
        and for their dependencies: start_service then only asks the engine to start one
        (the create, the volume and the secret files took 0.3-0.6 s an instance on this
        2-core box, on the path of every dependency level). Nothing runs before
        start_service; `unstage` removes what was not started."""
        with self._stage_lock:
            for spec in specs:
                key = (config.project, spec.instance)
                if key not in self._staged:
                    if self._stage_pool is None:
                        self._stage_pool = ThreadPoolExecutor(
                            max_workers=4, thread_name_prefix="shopctl-stage")
                    # Silent: the instance's line says what it waits for until it starts.
                    self._staged[key] = self._stage_pool.submit(
                        self._create_service, config, spec, no_progress)

    def unstage(self, config: ShopConfig) -> None:
        """Remove the staged containers of the project that were never started (an `up`
        that failed or was cancelled first)."""
        with self._stage_lock:
            left = {key: future for key, future in self._staged.items()
                    if key[0] == config.project}
            for key in left:
                del self._staged[key]
        for future in left.values():
            try:
                container_id, _hash = future.result()
            except Exception:  # noqa: BLE001 - a staging that failed left nothing to remove
                continue
            self._discard(container_id)

    def start_service(
        self, config: ShopConfig, spec: LaunchSpec, progress: Progress = no_progress
    ) -> ServiceState:
        with self._stage_lock:
            staged = self._staged.pop((config.project, spec.instance), None)
        container_id = None
        if staged is not None:
            container_id, config_hash = staged.result()  # its failure is this start's
            if config_hash != spec.config_hash:  # staged for another spec: not this one
                self._discard(container_id)
                container_id = None
        if container_id is None:
            container_id, _hash = self._create_service(config, spec, progress)
        name = container_name(config.project, spec.instance)
        progress(spec.instance, f"starting container {name}")
        with docker_errors(f"starting {spec.instance}"):
            self.client.api.start(container_id)
            return self._state(self.client.containers.get(container_id).attrs, config)

    def _create_service(
        self, config: ShopConfig, spec: LaunchSpec, progress: Progress
    ) -> tuple[str, str]:
        """The instance's container, created with its volume and secret files, not
        started; returns its id and the spec's config hash."""
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
        progress(instance, f"creating container {name}")
        api = self.client.api
        with docker_errors(f"creating the container of {instance}"):
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
            try:
                if inherited:
                    # A volume an older shopctl's root-run service wrote: give its files
                    # to the user.
                    docker_volumes.hand_over(self.client, created["Id"], tag, DATA_DIR,
                                             SERVICE_UID, SERVICE_GID, labels=labels,
                                             subject=service, progress=progress)
                if spec.secrets:
                    # Owned by the service's user (0400 in a 0500 folder): no other reads
                    # them.
                    api.put_archive(created["Id"], "/", private_files_tar(
                        SECRETS_DIR, dict(spec.secrets), SERVICE_UID, SERVICE_GID))
            except BaseException:
                # Half made (no secret files): a later `up` must not find and start it.
                with contextlib.suppress(OperationFailed):
                    self._discard(created["Id"])
                raise
        return created["Id"], spec.config_hash

    def _discard(self, container_id: str) -> None:
        """Remove a container shopctl created and never started (one gone already is fine)."""
        with contextlib.suppress(docker.errors.NotFound), \
                docker_errors(f"removing the unstarted container {container_id[:12]}"):
            self.client.api.remove_container(container_id, force=True, v=False)

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
                 for part in _enabled_brokers(config)]
        if infra.rabbitmq.enabled and infra.rabbitmq.management_port:
            needs.append(PortNeed(infra.rabbitmq.management_port,
                                  "infra.rabbitmq.management_port", RABBITMQ))
        if infra.prometheus.enabled:
            needs.append(PortNeed(infra.prometheus.port, "infra.prometheus.port", PROMETHEUS))
        if databases.enabled(config, self.name):
            needs.append(PortNeed(infra.postgres.port, "infra.postgres.port", POSTGRES))
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
        for key in [key for key in self._images if key[0] == config.project]:
            self._images.pop(key, None)  # a later start_service must build again
        remove_project_images(self.client, config.project, progress)

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
        postgres=(_LOOPBACK, config.infra.postgres.port)
        if databases.enabled(config, "docker") else None,
    )


def _live_path(name: str) -> str:
    """Where a source file named as in Runtime.reload_service lives in a service image."""
    root, _, rest = name.partition("/")
    base = {"app": APP_DIR, "shopkit": f"{KIT_DIR}/shopkit"}[root]  # see images.dockerfile
    return f"{base}/{rest}"


def _enabled_brokers(config: ShopConfig) -> list[str]:
    """Consul and RabbitMQ as enabled: the infra `up` cannot go without."""
    return [part for part in (CONSUL, RABBITMQ) if getattr(config.infra, part).enabled]
