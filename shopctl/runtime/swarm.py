"""The swarm runtime: the shop on a Docker Swarm, one swarm service per unit.

What exists for a project P on the swarm (all labelled io.shopctl.project=P):
    network  shopctl-P                 overlay, attachable; units find each other by name
    service  shopctl-P-consul          on a manager, HTTP published there (host mode) on
                                       infra.consul.port: where shopctl reaches Consul
    service  shopctl-P-rabbitmq        on a manager, AMQP likewise; data on its volume
    service  shopctl-P-postgres        with infra.postgres (shopctl.databases): likewise
    service  shopctl-P-registrar       on a manager with its docker socket: registers
                                       every running task in Consul (shopctl.swarm.registrar)
    service  shopctl-P-<service>       `replicas` tasks, spread by the swarm; a volume per
                                       node at /data; ports published per task in host mode
    secret   shopctl-P-<unit>-<file>-<hash>  the files a unit reads (tokens, keys)

Instances are tasks: SERVICE is the task in slot 1, SERVICE.N the one in slot N, each
shown with its node. The swarm schedules, restarts and moves them; shopctl decides what
each service's spec is (its config hash, the same LaunchSpec as the other runtimes) and
`up` applies a plan per service: create, a rolling update (start-first, rollback on
failure) when the hash changed, a new replica count, or nothing. `up`'s gate is
Consul's: it returns once every changed service has `replicas` passing instances, all
of the new spec, and fails when the swarm rolled an update back. shopctl registers
nothing itself on swarm: the registrar does, and deregisters what it registered.

Images are built by the engine shopctl's environment names (DOCKER_HOST, else the local
socket) and reach the nodes as shopctl.swarm.images says: loaded into each node, or, with
infra.swarm.registry, pushed there and run pinned by digest; the swarm is the engine of
infra.swarm.host (else that same engine). The host reaches Consul and RabbitMQ at the
manager's address; services are registered at their node's address and published port
(infra.swarm.address: node), which the host reaches, so `shopctl saga run` works from
the host unchanged; with `overlay` addresses, only drivers inside the swarm reach them.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import docker
import docker.errors

from shopctl import broker, databases, readiness
from shopctl.docker_client import LONG_TIMEOUT, connect, docker_errors, parse_time
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.fingerprint import data_hash
from shopctl.images.base import ensure_base_images, ensure_image
from shopctl.images.dockerfile import SERVICE_GID, SERVICE_UID
from shopctl.images.service import build_service_images, remove_project_images
from shopctl.infra import docker as docker_infra
from shopctl.infra.docker import AMQP_PORT, CONSUL_PORT
from shopctl.infra_names import CONSUL, PROMETHEUS, PROMSD, RABBITMQ
from shopctl.plan import Action
from shopctl.runtime.base import UnitLifecycle
from shopctl.swarm import images as swarm_images
from shopctl.swarm import nodes as swarm_nodes
from shopctl.swarm import specs
from shopctl.units import (
    LABEL_HASH,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_SERVICE,
    InfraEndpoints,
    LaunchSpec,
    LogLine,
    Progress,
    ServiceState,
    State,
    UnitSpec,
    expand_instances,
    instance_name,
    no_progress,
    split_instance,
)

if TYPE_CHECKING:
    from shopctl.config import ShopConfig
    from shopctl.plan import Plan
    from shopctl.ports import PortNeed

POLL = 0.5
READY_TIMEOUT = 120.0
LABEL_IMAGE = "io.shopctl.image"  # a service's image by the name it was built as
REGISTRAR_SCRIPT = "/run/shopctl/registrar.py"
REGISTRAR_TOKEN = "/run/shopctl/consul-token"
DOCKER_SOCKET = "/var/run/docker.sock"
# Update states in which the swarm gave up on the new spec.
_ROLLED_BACK = ("rollback_started", "rollback_paused", "rollback_completed", "paused")
_TASK_STATES: dict[str, State] = {
    "running": "running", "new": "starting", "pending": "starting", "assigned": "starting",
    "accepted": "starting", "preparing": "starting", "ready": "starting",
    "starting": "starting",
}  # complete, failed, shutdown, rejected, orphaned, remove: not serving


class SwarmRuntime(UnitLifecycle):
    """Runtime protocol (shopctl.runtime.base) on a Docker Swarm. Connects lazily."""

    name = "swarm"
    publishes_service_ports = False  # no fixed host ports to check before `up`

    def __init__(self, config: ShopConfig | None = None):
        self._lock = threading.Lock()
        self._builder: docker.DockerClient | None = None
        self._manager: docker.DockerClient | None = None
        self._host = (config.infra.swarm.host if config is not None else None) or None
        self._images: dict[tuple[str, str], str] = {}
        self._shipper: swarm_images.NodeLoader | swarm_images.RegistryPusher | None = None
        self._refs: dict[str, str] = {}  # image -> the reference its services name

    # ---- engines ---------------------------------------------------------------------------

    @property
    def builder(self) -> docker.DockerClient:
        """The engine images are built on: shopctl's environment's."""
        with self._lock:
            if self._builder is None:
                self._builder = connect()
            return self._builder

    @property
    def manager(self) -> docker.DockerClient:
        """A manager of the swarm: infra.swarm.host, else the building engine."""
        if self._host is None:
            return self.builder
        with self._lock:
            if self._manager is None:
                try:
                    client = docker.DockerClient(base_url=self._host, timeout=LONG_TIMEOUT)
                    client.ping()
                except Exception as exc:  # noqa: BLE001 - any failure: the swarm is not there
                    raise RuntimeUnavailable(
                        f"the swarm manager's engine at {self._host} does not answer ({exc})",
                        hint="start the swarm (`shopctl lab up` for a local lab) or "
                             "set infra.swarm.host") from None
                self._manager = client
            return self._manager

    def manager_address(self) -> str:
        """Where the host reaches the ports published on the manager."""
        url = self._host or os.environ.get("DOCKER_HOST") or ""
        host = urlsplit(url).hostname if "://" in url else None
        return host if host and not url.startswith("unix") else "127.0.0.1"

    def _check_swarm(self) -> None:
        with docker_errors("asking the engine about its swarm"):
            info = self.manager.info().get("Swarm") or {}
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            raise RuntimeUnavailable(
                "the engine found for the swarm is not a swarm manager "
                f"({info.get('LocalNodeState') or 'no swarm'})",
                hint="point infra.swarm.host (or DOCKER_HOST) at a manager of the swarm")

    # ---- infra and units ---------------------------------------------------------------


    def start_infra(
        self, config: ShopConfig, progress: Progress = no_progress
    ) -> tuple[InfraEndpoints, dict[str, Callable[[], None]]]:
        """Consul, RabbitMQ and the registrar as services on a manager; Prometheus is not
        run on the swarm (a notice says so)."""
        self._check_swarm()
        if config.infra.prometheus.enabled:
            progress(PROMETHEUS, "not run on the swarm runtime (infra.prometheus is ignored)")
        ensure_base_images(config, progress, self.builder)
        units = self.infra_units(config)
        for image in dict.fromkeys(u.image for u in units):  # PostgreSQL's, when it runs
            ensure_image(self.builder, image, progress)
        self._ship(config, [u.image for u in units], progress, managers_only=True)
        self._ensure_network(config.project)
        wanted = {unit.name for unit in units}
        for name in self.observe_units(config):
            if name not in wanted:
                progress(name, "removing (no longer enabled)")
                self.remove_unit(config, name)
        waiters = {unit.name: self.start_unit(config, unit, progress) for unit in units}
        return self._endpoints(config), waiters

    def infra_units(self, config: ShopConfig) -> list[UnitSpec]:
        """The docker runtime's Consul, RabbitMQ and PostgreSQL specs, and the registrar."""
        units = [u for u in docker_infra.units(config, self.name)
                 if u.name not in (PROMETHEUS, PROMSD)]
        if config.infra.consul.enabled:
            units.append(self.registrar_unit(config))
        return units

    def registrar_unit(self, config: ShopConfig) -> UnitSpec:
        from importlib import resources

        from shopctl import consul_acl

        script = resources.files("shopctl.swarm").joinpath("registrar.py").read_bytes()
        files: dict[str, dict[str, bytes]] = {"/run/shopctl": {"registrar.py": script}}
        token = consul_acl.management_token(config)
        if token:
            files["/run/shopctl"]["consul-token"] = token.encode()
        env = {"SHOP_PROJECT": config.project, "CONSUL_HTTP_ADDR": f"{CONSUL}:{CONSUL_PORT}",
               "REGISTRAR_TOKEN_FILE": REGISTRAR_TOKEN if token else "",
               "REGISTRAR_ADDRESS": config.infra.swarm.address,
               "REGISTRAR_NETWORK": specs.network_name(config.project),
               "PYTHONUNBUFFERED": "1"}
        return UnitSpec(
            name=specs.REGISTRAR, role="infra", image=config.infra.base_image,
            command=("python3", REGISTRAR_SCRIPT), env=env, files=files, user="0:0",
            config_hash=data_hash({"script": script.decode(), "env": env,
                                   "token": data_hash(token or "")})[:16])


    def start_unit(self, config: ShopConfig, spec: UnitSpec,
                   progress: Progress = no_progress) -> Callable[[], None]:
        """Create the unit's service, keep it while its hash label (the spec's hash and
        its image's id) is the same, else update it (stop-first: its host ports)."""
        name = specs.service_name(config.project, spec.name)
        with docker_errors(f"looking up image {spec.image}"):
            image_id = self.builder.images.get(spec.image).id
        ref = self._reference(config, spec.image, progress)  # the image's id when loaded
        wanted = data_hash({"spec": spec.config_hash, "image": image_id}
                           | ({"ref": ref} if ref not in (spec.image, image_id) else {}))[:16]
        found = self._service(name)
        if found is not None and found["Spec"]["Labels"].get(LABEL_HASH) == wanted:
            progress(spec.shown_as, "running")
        else:
            secrets = self._secrets(config, spec.name, specs.secret_files(spec),
                                    spec.files_owner, spec.files_mode)
            mounts = ({"Type": "bind", "Source": DOCKER_SOCKET, "Target": DOCKER_SOCKET},) \
                if spec.name == specs.REGISTRAR else ()
            body = specs.unit_service_spec(config, replace(spec, config_hash=wanted, image=ref),
                                           secrets, mounts=mounts)
            body["Labels"][LABEL_IMAGE] = spec.image
            progress(spec.shown_as, "updating the service" if found else
                     f"creating service {name} ({spec.image})")
            self._apply(body, found)
        return lambda: self._wait_unit(config, spec, progress)

    def _wait_unit(self, config: ShopConfig, spec: UnitSpec, progress: Progress) -> None:
        host = self.manager_address()
        subject = spec.shown_as
        if spec.name == CONSUL:
            progress(subject, "waiting for a leader")
        elif spec.name == RABBITMQ:
            progress(subject, "waiting for AMQP")
        elif spec.readiness is not None:
            progress(subject, spec.readiness.waiting)
        deadline, since = time.monotonic() + READY_TIMEOUT, time.time()
        while not self._unit_ready(config, spec, host):
            self._check_pulls(config, spec.name, since)
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"{spec.name} did not become ready on the swarm within {READY_TIMEOUT:.0f}s",
                    hint=self._task_errors(config, spec.name) or
                    f"`shopctl logs {spec.name}` shows its side")
            time.sleep(POLL)
        progress(subject, "ready")

    def _unit_ready(self, config: ShopConfig, spec: UnitSpec, host: str) -> bool:
        """Consul has a leader, the broker lets the project's user in (both at the
        manager's published ports), another unit's readiness holds there, a unit
        without one has a task running."""
        name = spec.name
        if name == CONSUL:
            return readiness.consul_has_leader(config.infra.consul.port, host=host)
        if name == RABBITMQ:
            port = config.infra.rabbitmq.port
            return broker.answers(host, port) and broker.logs_in(broker.uri(config, host, port))
        if spec.readiness is not None:
            return readiness.holds(spec.readiness, host)
        return self._running_tasks(config, name) > 0

    def observe_units(self, config: ShopConfig, role: str = "infra") -> dict[str, ServiceState]:
        return {split_instance(name)[0] if role == "infra" else name: state
                for name, state in self._observe(config, role).items()}

    def remove_unit(self, config: ShopConfig, name: str, role: str = "infra") -> None:
        found = self._service(specs.service_name(config.project, name))
        if found is not None and found["Spec"]["Labels"].get(LABEL_PROJECT) == config.project:
            with docker_errors(f"removing {name}"):
                try:
                    self.manager.api.remove_service(found["ID"])
                except docker.errors.NotFound:
                    pass

    def infra_endpoints(self, config: ShopConfig) -> InfraEndpoints | None:
        for part in (CONSUL, RABBITMQ):
            if getattr(config.infra, part).enabled and not self._running_tasks(config, part):
                return None
        return self._endpoints(config)

    def _endpoints(self, config: ShopConfig) -> InfraEndpoints:
        consul, rabbit = config.infra.consul, config.infra.rabbitmq
        host = self.manager_address()
        return InfraEndpoints(
            consul_http=f"http://{host}:{consul.port}" if consul.enabled else "",
            amqp_uri=broker.uri(config, host, rabbit.port) if rabbit.enabled else "",
            service_consul_addr=f"{CONSUL}:{CONSUL_PORT}" if consul.enabled else "",
            service_amqp_uri=broker.uri(config, RABBITMQ, AMQP_PORT) if rabbit.enabled else "",
            postgres=(host, config.infra.postgres.port)
            if databases.enabled(config, self.name) else None,
        )

    # ---- services ------------------------------------------------------------------------

    def prepare(self, config: ShopConfig, services: list[str], progress: Progress = no_progress,
                cancel: threading.Event | None = None) -> None:
        """Build the images (on the building engine) and get them to the nodes: loaded
        into every node, or pushed to the registry (shopctl.swarm.images)."""
        built = build_service_images(config, services, progress, self.builder, cancel)
        for service, (tag, _hash) in built.items():
            self._images[(config.project, service)] = tag
        self._ship(config, [tag for tag, _ in built.values()], progress)

    def apply_up(self, config: ShopConfig, registry, plan: Plan,
                 specs_by_instance: Mapping[str, LaunchSpec], progress: Progress,
                 wait_infra: Callable[[str], None], infra_ready: Callable[[], bool],
                 before_start: Callable[[], None] | None = None,
                 cancel: threading.Event | None = None, timeout_extra: float = 30.0,
                 ) -> dict[str, object]:
        """`up` on the swarm (orchestrate.apply_up hands the plan here): level by level,
        each service whose instances the plan changes is created, updated (a rolling
        update: new hash) or rescaled, then awaited in Consul: `replicas` passing
        instances, all with the new hash. A service the swarm rolled back fails `up`."""
        if plan.built:
            self.prepare(config, plan.built, progress, cancel)
        wait_infra(CONSUL)
        if before_start is not None:
            before_start()
        health: dict[str, object] = {}
        for level in plan.levels:
            changed = {}
            for service in dict.fromkeys(step.service for step in level):
                steps = [s for s in level if s.service == service]
                spec = next(specs_by_instance[s.instance] for s in steps if s.starts)
                if all(s.action in (Action.NOOP, Action.START) for s in steps):
                    progress(service, "unchanged")
                    continue
                changed[service] = spec
                self._ensure_service(config, spec, steps, progress)
            for service, spec in changed.items():
                health = self._await(config, registry, service, spec.config_hash, progress,
                                     timeout_extra, cancel)
        deadline = time.monotonic() + READY_TIMEOUT
        while not infra_ready():
            if time.monotonic() > deadline:
                raise OperationFailed("the swarm's infra did not become ready")
            time.sleep(POLL)
        return health or dict(registry.health())

    def _ensure_service(self, config: ShopConfig, spec: LaunchSpec, steps: list,
                        progress: Progress) -> None:
        svc = config.services[spec.service]
        name = specs.service_name(config.project, svc.name)
        found = self._service(name)
        recreate = found is None or found["Spec"]["Labels"].get(LABEL_HASH) != spec.config_hash
        # From one instance to several (or back) the placement changes too (see
        # specs.placement): that is a rolling update, not a new replica count alone.
        moves = found is not None and (found["Spec"]["TaskTemplate"].get("Placement") or {}).get(
            "Constraints", []) != specs.placement(svc.replicas).get("Constraints", [])
        if not recreate and not moves:
            progress(svc.name, f"scaling to {svc.replicas}")
            with docker_errors(f"scaling {svc.name}"):
                self.manager.api.update_service(
                    found["ID"], found["Version"]["Index"],
                    mode={"Replicated": {"Replicas": svc.replicas}}, fetch_current_spec=True)
            return
        tag = self._images.get((config.project, svc.name))
        if tag is None:
            self.prepare(config, [svc.name], progress)
            tag = self._images[(config.project, svc.name)]
        secrets = self._secrets(config, svc.name, [
            (f"{specs.SECRETS_DIR}/{key}", value.encode()) for key, value in spec.secrets.items()],
            (SERVICE_UID, SERVICE_GID), 0o400)
        body = specs.service_spec(config, spec, self._reference(config, tag, progress), secrets)
        body["Labels"][LABEL_IMAGE] = tag
        progress(svc.name, f"rolling update to {tag}" if found else
                 f"creating service {name} ({svc.replicas} replicas)")
        self._apply(body, found)

    def _await(self, config: ShopConfig, registry, service: str, config_hash: str,
               progress: Progress, timeout_extra: float,
               cancel: threading.Event | None) -> dict[str, object]:
        svc = config.services[service]
        # By count, not by name: scaling down, the swarm keeps the tasks that balance the
        # nodes best, whatever their slots (instance names follow the slots).
        wanted = svc.replicas
        deadline = time.monotonic() + svc.health.start_period + timeout_extra \
            + 15 * svc.replicas
        said, since = "", time.time()
        while True:
            if cancel is not None and cancel.is_set():
                from shopctl.errors import Cancelled

                raise Cancelled("up cancelled")
            found = self._service(specs.service_name(config.project, service))
            update = (found or {}).get("UpdateStatus") or {}
            if update.get("State") in _ROLLED_BACK:
                raise OperationFailed(
                    f"the swarm rolled {service}'s update back ({update.get('State')}): "
                    f"{update.get('Message', '')}",
                    hint=(self._task_errors(config, service) or "")
                    + f"\n`shopctl logs {service}` shows why; the old version still runs")
            self._check_pulls(config, service, since, found)
            health = registry.health()
            passing = {name for name, entry in health.items()
                       if entry.service == service and entry.status == "passing"
                       and entry.meta.get("config_hash") == config_hash}
            listed = {name for name, entry in health.items() if entry.service == service}
            if len(passing) == wanted and listed == passing and update.get("State") in (
                    None, "completed"):
                progress(service, f"healthy: {wanted} of {wanted} passing")
                return dict(health)
            now = f"{len(passing)} of {wanted} passing"
            if now != said:
                progress(service, now)
                said = now
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"{service} did not have {wanted} passing instances in Consul in "
                    f"time ({now})",
                    hint=(self._task_errors(config, service) or "")
                    + f"\n`shopctl logs {service}` and `shopctl status` show more")
            time.sleep(POLL)

    def start_service(self, config: ShopConfig, spec: LaunchSpec,
                      progress: Progress = no_progress) -> ServiceState:
        """Create or update the service's swarm service (all its tasks: the swarm runs
        instances, not shopctl)."""
        self._ensure_service(config, spec, [], progress)
        return self.instance(config, spec.instance) or ServiceState(spec.service, "starting")

    def stop_service(self, config: ShopConfig, service: str) -> None:
        """Remove a service's swarm service with all its tasks (an instance name stands
        for its service: the swarm places tasks, so one alone cannot be removed)."""
        self.remove_unit(config, split_instance(service)[0], role="service")

    def reload_service(self, config, spec, changed) -> ServiceState:
        raise OperationFailed("`shopctl dev` does not run on the swarm runtime",
                              hint="use it with --runtime docker or local; on the swarm, "
                                   "`shopctl up` rolls a code change out")

    def observe(self, config: ShopConfig) -> dict[str, ServiceState]:
        return self._observe(config, "service")

    def instance(self, config: ShopConfig, service: str) -> ServiceState | None:
        return self.observe(config).get(service)

    def infra_ports(self, config: ShopConfig) -> list[PortNeed]:
        return []  # published on the manager, not on this host

    def port_owners(self, config: ShopConfig, ports: list[int]) -> dict:
        return {}

    def logs(self, config: ShopConfig, services: list[str], follow: bool,
             tail: int | None) -> Iterator[LogLine]:
        """Each task's lines, named SERVICE(.N)@NODE, oldest first."""
        observed = {**self._observe(config, "service"), **self._observe(config, "infra")}
        names = expand_instances(config, services, observed) if services else sorted(
            n for n, s in observed.items() if s.extra.get("role") == "service")
        units = list(dict.fromkeys(split_instance(n)[0] for n in names))
        only = set(names)
        tasks = self._task_names(config)
        return _service_logs(self.manager, [specs.service_name(config.project, u)
                                            for u in units], tasks, only, follow, tail)

    def down(self, config: ShopConfig, volumes: bool, progress: Progress = no_progress,
             images: bool = False) -> None:
        label = f"{LABEL_PROJECT}={config.project}"
        api = self.manager.api
        with docker_errors(f"removing project {config.project}"):
            found = api.services(filters={"label": label})
            found.sort(key=lambda s: s["Spec"]["Labels"].get(LABEL_ROLE) == "infra")
            for service in found:
                progress(service["Spec"]["Labels"].get(LABEL_SERVICE, service["Spec"]["Name"]),
                         "removing")
                try:
                    api.remove_service(service["ID"])
                except docker.errors.NotFound:
                    pass
            # Tasks leave the network as their containers stop: retry until they did.
            deadline = time.monotonic() + 60
            for network in api.networks(filters={"label": label}):
                progress(network["Name"], "removing network")
                while True:
                    try:
                        api.remove_network(network["Id"])
                        break
                    except docker.errors.NotFound:
                        break
                    except docker.errors.APIError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(POLL)
            for secret in api.secrets(filters={"label": label}):
                try:
                    api.remove_secret(secret["ID"])
                except docker.errors.APIError:
                    pass
        if volumes:
            for node in swarm_nodes.nodes(self.manager):
                if not node.ready:
                    continue
                client = swarm_nodes.engine(node, config.infra.swarm.node_port)
                with docker_errors(f"removing volumes on {node.hostname}"):
                    # The swarm keeps its tasks' stopped containers a while, and those
                    # still hold their volumes.
                    for container in client.containers.list(all=True,
                                                            filters={"label": label}):
                        try:
                            container.remove(force=True)
                        except docker.errors.NotFound:
                            pass  # the swarm removed it meanwhile
                    for volume in client.volumes.list(filters={"label": label}):
                        progress(f"{volume.name}@{node.hostname}", "removing volume")
                        volume.remove(force=True)
        if images:
            # What this host built for the project; the copies loaded into the nodes (or
            # pushed to the registry) are the nodes' (registry's) to prune.
            remove_project_images(self.builder, config.project, progress)
            progress("images", "kept: the copies on the swarm's nodes"
                     + (" and in the registry" if config.infra.swarm.registry else ""))

    def images_mode(self, config: ShopConfig) -> dict[str, str]:
        """How the nodes get their images (for `status --json`)."""
        return swarm_images.describe(config)

    # ---- helpers ---------------------------------------------------------------------------

    def _ship(self, config: ShopConfig, images: list[str], progress: Progress,
              managers_only: bool = False) -> None:
        if self._shipper is None:
            builder, manager = self.builder, self.manager  # these take the lock themselves
            with self._lock:
                if self._shipper is None:
                    self._shipper = swarm_images.distributor(config, builder, manager)
        shipper = self._shipper
        self._refs.update(shipper.ship(images, progress, managers_only=managers_only))

    def _reference(self, config: ShopConfig, image: str, progress: Progress) -> str:
        """What a service spec names for `image`: itself when loaded into the nodes, its
        pinned reference in the registry (pushed now if this run has not yet)."""
        if image not in self._refs:
            self._ship(config, [image], progress)
        return self._refs[image]

    def _apply(self, body: dict[str, Any], found: dict | None) -> None:
        api = self.manager.api
        kwargs = dict(task_template=body["TaskTemplate"], name=body["Name"],
                      labels=body["Labels"], mode=body["Mode"],
                      update_config=body["UpdateConfig"],
                      rollback_config=body["RollbackConfig"],
                      endpoint_spec=body["EndpointSpec"])
        with docker_errors(f"{'updating' if found else 'creating'} service {body['Name']}"):
            if found is None:
                api.create_service(**kwargs)
            else:
                api.update_service(found["ID"], found["Version"]["Index"], **kwargs)

    def _secrets(self, config: ShopConfig, unit: str, files: list[tuple[str, bytes]],
                 owner: tuple[int, int], mode: int) -> list[dict]:
        """A swarm secret per file (named by its content's hash), as references."""
        api = self.manager.api
        refs = []
        for path, data in files:
            name = specs.secret_name(config.project, unit, path.rsplit("/", 1)[1], data)
            with docker_errors(f"storing the secret {name}"):
                found = api.secrets(filters={"name": name})
                found = [s for s in found if s["Spec"]["Name"] == name]
                secret_id = found[0]["ID"] if found else api.create_secret(
                    name, data, labels={LABEL_PROJECT: config.project, LABEL_SERVICE: unit,
                                        specs.LABEL_SECRET: path})["ID"]
            refs.append(specs.secret_ref(secret_id, name, path, *owner, mode))
        return refs

    def _ensure_network(self, project: str) -> None:
        name = specs.network_name(project)
        api = self.manager.api
        with self._lock, docker_errors(f"creating network {name}"):
            if not [n for n in api.networks(names=[name]) if n["Name"] == name]:
                api.create_network(name, driver="overlay", attachable=True,
                                   check_duplicate=True,
                                   labels={LABEL_PROJECT: project, LABEL_ROLE: "network"})

    def _service(self, name: str) -> dict | None:
        with docker_errors(f"looking up service {name}"):
            try:
                return self.manager.api.inspect_service(name)
            except docker.errors.NotFound:
                return None

    def _services(self, config: ShopConfig, role: str | None = None) -> list[dict]:
        label = [f"{LABEL_PROJECT}={config.project}"]
        if role:
            label.append(f"{LABEL_ROLE}={role}")
        with docker_errors("listing services"):
            return self.manager.api.services(filters={"label": label})

    def _tasks(self, service_ids: list[str]) -> list[dict]:
        if not service_ids:
            return []
        with docker_errors("listing tasks"):
            return self.manager.api.tasks(filters={"service": service_ids})

    def _running_tasks(self, config: ShopConfig, unit: str) -> int:
        found = self._service(specs.service_name(config.project, unit))
        if found is None:
            return 0
        return sum(1 for t in self._tasks([found["ID"]])
                   if (t.get("Status") or {}).get("State") == "running"
                   and t.get("DesiredState") == "running")

    def _observe(self, config: ShopConfig, role: str) -> dict[str, ServiceState]:
        services = self._services(config, role)
        if not services:
            return {}
        hosts = {n.id: n for n in swarm_nodes.nodes(self.manager)}
        by_id = {s["ID"]: s for s in services}
        return observe_tasks(config, by_id, self._tasks(list(by_id)), hosts)

    def _task_names(self, config: ShopConfig) -> dict[str, str]:
        """{task id: INSTANCE@NODE} of every task of the project's services."""
        services = self._services(config)
        hosts = {n.id: n.hostname for n in swarm_nodes.nodes(self.manager)}
        names = {s["ID"]: s["Spec"]["Labels"].get(LABEL_SERVICE, s["Spec"]["Name"])
                 for s in services}
        from shopctl.swarm.registrar import ranks

        out = {}
        tasks = self._tasks(list(names))
        rank = ranks(tasks)
        for task in tasks:
            unit = names.get(task["ServiceID"], "?")
            slot = int(task.get("Slot") or 1)
            index = rank.get((task["ServiceID"], slot), slot)
            node = hosts.get(task.get("NodeID", ""), "?")
            out[task["ID"]] = f"{instance_name(unit, index)}@{node}"
        return out

    def _check_pulls(self, config: ShopConfig, unit: str, since: float,
                     found: dict | None = None) -> None:
        """Fail at once when the nodes cannot get the unit's image (registry mode)."""
        if config.infra.swarm.registry is None:
            return
        found = found or self._service(specs.service_name(config.project, unit))
        if found is None:
            return
        image = found["Spec"]["TaskTemplate"]["ContainerSpec"].get("Image", "")
        failure = swarm_images.pull_failure(self._tasks([found["ID"]]), image, since)
        if failure is not None:
            raise failure

    def _task_errors(self, config: ShopConfig, unit: str) -> str:
        """The swarm's word on the unit's failed tasks (newest first), for hints."""
        found = self._service(specs.service_name(config.project, unit))
        if found is None:
            return ""
        lines = []
        for task in sorted(self._tasks([found["ID"]]), key=lambda t: t.get("UpdatedAt", ""),
                           reverse=True)[:6]:
            status = task.get("Status") or {}
            if status.get("Err") or status.get("State") in ("failed", "rejected"):
                lines.append(f"  task {task['ID'][:12]} (slot {task.get('Slot')}): "
                             f"{status.get('State')}: {status.get('Err') or status.get('Message')}")
        return "the swarm says:\n" + "\n".join(lines) if lines else ""


def observe_tasks(config: ShopConfig, services: Mapping[str, dict], tasks: list[dict],
                  hosts: Mapping[str, swarm_nodes.Node]) -> dict[str, ServiceState]:
    """One ServiceState per slot of each service where a task is meant to run: the task
    the swarm wants running there, its node, its address (node address and published
    port, else overlay address), its state, and the failed tasks of that slot as
    restarts. Instances are numbered 1..N by the rank of their slot (the registrar
    numbers them alike), whatever slots a scale-down kept. Pure."""
    from shopctl.swarm.registrar import ranks

    rank = ranks([t for t in tasks if t.get("ServiceID") in services])
    by_slot: dict[tuple[str, int], list[dict]] = {}
    for task in tasks:
        if task.get("ServiceID") in services:
            by_slot.setdefault((task["ServiceID"], int(task.get("Slot") or 1)), []).append(task)
    out: dict[str, ServiceState] = {}
    for (service_id, slot), found in by_slot.items():
        labels = services[service_id]["Spec"]["Labels"]
        unit = labels.get(LABEL_SERVICE, services[service_id]["Spec"]["Name"])
        found.sort(key=lambda t: (t.get("DesiredState") == "running", t.get("UpdatedAt", "")))
        task = found[-1]
        if task.get("DesiredState") not in ("running", "ready"):
            continue  # a slot the swarm gave up (scaled away): no task is meant to run there
        status = task.get("Status") or {}
        state = _TASK_STATES.get(status.get("State", ""), "exited")
        node = hosts.get(task.get("NodeID", ""))
        container = (task.get("Spec") or {}).get("ContainerSpec") or {}
        svc = config.services.get(unit)
        port = svc.port if svc else int(labels.get(specs.LABEL_PORT, 0) or 0) or None
        published = {p.get("TargetPort"): p.get("PublishedPort")
                     for p in (status.get("PortStatus") or {}).get("Ports") or []}
        exit_code = ((status.get("ContainerStatus") or {}).get("ExitCode"))
        failures = sum(1 for t in found if (t.get("Status") or {}).get("State") == "failed")
        extra = {"node": node.hostname if node else "?", "task": task["ID"][:12],
                 "slot": str(slot),
                 "swarm_state": status.get("State", ""),
                 "role": labels.get(LABEL_ROLE, "")}
        if svc and svc.metrics_port:
            extra["metrics_port"] = str(published.get(svc.metrics_port) or svc.metrics_port)
        if published:  # reached at its node's address (infra.swarm.address: node)
            address = node.address if node else None
        else:  # at its overlay address, inside the swarm only
            address = _overlay_address(task, specs.network_name(config.project))
        index = rank.get((service_id, slot), slot)
        out[instance_name(unit, index)] = ServiceState(
            service=unit, state=state, instance_id=task["ID"][:12],
            address=address,
            port=published.get(port) if published else port,
            host_port=published.get(port),
            started_at=parse_time(status.get("Timestamp", "")) if state == "running" else None,
            # REPOSITORY:TAG@DIGEST with a registry: what the task runs, exactly; the
            # name the image was built as when loaded into the nodes (run by its id).
            restarts=failures, image=_shown_image(container.get("Image") or "", labels),
            config_hash=(container.get("Labels") or {}).get(LABEL_HASH),
            exit_code=exit_code if state != "running" else None,
            crashes=failures, extra=extra, index=index)
    return out


def _shown_image(image: str, labels: Mapping[str, str]) -> str | None:
    if image.startswith("sha256:"):
        return labels.get(LABEL_IMAGE) or image
    return image or None


def _overlay_address(task: dict, network: str) -> str | None:
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for cidr in attachment.get("Addresses") or []:
                return cidr.split("/")[0]
    return None


def _service_logs(manager: docker.DockerClient, services: list[str], tasks: dict[str, str],
                  only: set[str], follow: bool, tail: int | None) -> Iterator[LogLine]:
    """Service logs with details (the task id), oldest first; with follow, as they come."""
    lines: queue.Queue[LogLine | None] = queue.Queue()

    def read(name: str) -> None:
        try:
            stream = manager.api.service_logs(name, details=True, stdout=True, stderr=True,
                                              timestamps=True, follow=follow,
                                              tail="all" if tail is None else tail)
            for raw in stream:
                for text in raw.decode(errors="replace").splitlines():
                    line = _log_line(text, tasks)
                    if line.service.split("@")[0] in only:
                        lines.put(line)
        except docker.errors.APIError:
            pass
        finally:
            lines.put(None)

    threads = [threading.Thread(target=read, args=(name,), daemon=True) for name in services]
    for thread in threads:
        thread.start()
    if not follow:
        for thread in threads:
            thread.join()
        got = []
        while not lines.empty():
            item = lines.get()
            if item is not None:
                got.append(item)
        yield from sorted(got, key=lambda line: line.timestamp or 0.0)
        return
    open_streams = len(threads)
    while open_streams:
        item = lines.get()
        if item is None:
            open_streams -= 1
        else:
            yield item


def _log_line(text: str, tasks: dict[str, str]) -> LogLine:
    """'TIMESTAMP com.docker.swarm.node.id=..,com.docker.swarm.service.id=..,
    com.docker.swarm.task.id=ID TEXT' -> LogLine('web.2@node-2', TEXT, time)."""
    stamp, _, rest = text.partition(" ")
    details, _, message = rest.partition(" ")
    fields = dict(part.split("=", 1) for part in details.split(",") if "=" in part)
    task = fields.get("com.docker.swarm.task.id")
    if task is None:
        return LogLine("?", rest, parse_time(stamp))
    return LogLine(tasks.get(task, task[:12]), message, parse_time(stamp))
