"""The local runtime: every service, Consul and RabbitMQ as a supervised process on 127.0.0.1.

Each unit (a service by name, or infra as `_consul` / `_rabbitmq`, names no service can
have) runs under its own detached `shopctl.runtime.supervisor`, which restarts it on
crashes, timestamps its output into `.shopctl/local/logs/<unit>.log` and keeps
`.shopctl/local/run/<unit>.json` current. Infra units come as specs from
shopctl.infra.local (start_unit / ensure_unit run any UnitSpec); this module launches
them and the services and reads those files back; it never keeps state in memory, so
any shopctl process can observe or stop what another one started.

Every process we start (supervisor, child and whatever the child starts) carries
SHOPCTL_STATE_DIR and SHOPCTL_UNIT in its environment: the local equivalent of the
docker runtime's labels, used to find leftovers after a supervisor was killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopctl import broker, databases, readiness
from shopctl.bundle import kit_for
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.infra import local as local_infra
from shopctl.infra_names import (
    CONSUL,
    INFRA_PARTS,
    POSTGRES,
    RABBITMQ,
    START_ORDER,
    enabled_by,
)
from shopctl.ports import (
    PortNeed,
    environ_of,
    is_port_free,
    listening_pid,
    port_holder,
    port_to_hand_out,
)
from shopctl.runtime.base import UnitLifecycle
from shopctl.runtime.supervisor import MODULE as SUPERVISOR_MODULE
from shopctl.runtime.supervisor import LogReader, supervisor_running
from shopctl.state import ProjectState, write_atomic
from shopctl.units import (
    InfraEndpoints,
    LaunchSpec,
    LogLine,
    Progress,
    ServiceState,
    expand_instances,
    no_progress,
    split_instance,
)

if TYPE_CHECKING:
    from shopctl.config import ShopConfig
    from shopctl.units import Setup, UnitSpec

HOST = "127.0.0.1"
UNIT_CONSUL = local_infra.unit_name(CONSUL)
UNIT_RABBITMQ = local_infra.unit_name(RABBITMQ)
# Also their stop order: the reverse of their start order, brokers last.
INFRA_UNITS = tuple(local_infra.unit_name(part) for part in reversed(START_ORDER))
ENV_STATE_DIR = "SHOPCTL_STATE_DIR"
ENV_UNIT = "SHOPCTL_UNIT"
# epmd (Erlang's port mapper) is one per machine and shared by every Erlang node on it;
# it must survive our broker even when our broker started it.
SHARED_DAEMONS = frozenset({"epmd"})
_POLL = 0.25
_PROTOCOLS = {"http": "HTTP", "consul-leader": "HTTP", "amqp": "AMQP", "amqp-login": "AMQP",
              "postgres": "PostgreSQL"}


@dataclass(frozen=True)
class Unit:
    """One process to supervise: what the supervisor spec is made from."""

    name: str  # service name, or _consul / _rabbitmq
    role: str  # "service" | "infra"
    argv: list[str]
    cwd: Path
    env: Mapping[str, str]  # the child's complete environment (markers are added)
    config_hash: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # copied to the run file
    death_signal: str = "SIGKILL"  # sent to the child if its supervisor dies
    grace: float | None = None  # SIGTERM -> SIGKILL; None: the runtime's default


class LocalRuntime(UnitLifecycle):
    """Runtime whose instances are local processes (see shopctl.runtime.base.Runtime)."""

    name = "local"

    def __init__(
        self,
        python: str | None = None,
        grace: float = 10.0,
        launch_timeout: float = 15.0,
        consul_timeout: float = 30.0,
        rabbitmq_timeout: float = 90.0,
    ):
        self.python = python or sys.executable  # runs the supervisors (shopctl's own)
        # Runs the services: `python` when given, else chosen by prepare() (pyenv).
        self.service_python = python
        self.grace = grace
        self.launch_timeout = launch_timeout
        self.consul_timeout = consul_timeout
        self.rabbitmq_timeout = rabbitmq_timeout

    # -- infra and units --------------------------------------------------------------


    def start_infra(
        self, config: ShopConfig, progress: Progress = no_progress
    ) -> tuple[InfraEndpoints, dict[str, Callable[[], None]]]:
        """The infra units of shopctl.infra.local: a unit of a part that is no longer
        wanted stops, the others start in order (each supervisor reports its child
        running before the next starts); the waiters block until each part is ready."""
        ps = ProjectState(config.root)
        specs = local_infra.units(config, self._infra_options(config, ps))
        wanted = {spec.name for spec in specs}
        for part in reversed(START_ORDER):
            if part not in wanted and read_record(ps, local_infra.unit_name(part)):
                progress(part, f"stopping ({enabled_by(part)} is false)")
                self.remove_unit(config, part)
        waiters = {spec.name: self.start_unit(config, spec, progress) for spec in specs}
        return endpoints(config), waiters

    def _infra_options(self, config: ShopConfig, ps: ProjectState) -> local_infra.Options:
        running = {}
        for part in INFRA_PARTS:
            unit = local_infra.unit_name(part)
            record = read_record(ps, unit)
            port = ((record or {}).get("meta") or {}).get("port")
            if port and self._running(ps, unit):
                running[part] = int(port)
        return local_infra.Options(
            python=self.python, free_port=free_port, running_ports=running,
            consul_timeout=self.consul_timeout, rabbitmq_timeout=self.rabbitmq_timeout)


    def start_unit(
        self, config: ShopConfig, spec: UnitSpec, progress: Progress = no_progress
    ) -> Callable[[], None]:
        """Keep the unit when its supervisor runs with spec's hash, else replace it
        (stop, check its ports, write its files, launch); or, when nothing of ours runs
        and spec.adopt_readiness answers, adopt what answers there. Returns a function
        that blocks until the unit is ready (OperationFailed when it exits first or
        after its readiness timeout)."""
        ps = ProjectState(config.root)
        unit = self._unit_name(spec)
        subject = spec.shown_as
        port = spec.main_port
        record = read_record(ps, unit)
        running = self._running(ps, unit)
        if running and (record or {}).get("config_hash") != spec.config_hash:
            progress(subject, "replacing: its configuration changed")
            self._stop_units(ps, [unit])
            running = False
        check, setup = spec.readiness, spec.setup
        if running:
            progress(subject, f"running on :{port}" if port else "running")
        elif spec.adopt_readiness is not None and readiness.answers(spec.adopt_readiness):
            progress(subject, f"reusing the {spec.noun or 'process'} already answering "
                              f"{_PROTOCOLS[spec.adopt_readiness.kind]} on :{port}")
            check, setup, unit = spec.adopt_readiness, spec.adopt_setup, ""
        else:
            self._stop_units(ps, [unit])  # a dead supervisor's leftovers
            for need in spec.ports:
                require_free_port(need.host, need.setting or f"{subject}'s port", need.env_var)
            for folder in spec.dirs:
                ps.ensure(Path(folder))
            for folder, files in spec.files.items():
                ps.ensure(Path(folder))
                for name, data in files.items():
                    write_atomic(Path(folder) / name, data, mode=spec.files_mode)
            cwd = Path(spec.dirs[0]) if spec.dirs else ps.ensure(ps.data_dir(unit))
            noun = f"{spec.noun} " if spec.noun else ""
            progress(subject, f"starting {noun}on :{port}{spec.note}" if port else
                     f"starting {noun}".rstrip())
            grace = None if spec.stop_grace is None else max(self.grace, spec.stop_grace)
            self._launch(config, ps, Unit(
                unit, spec.role, list(spec.argv), cwd, {**os.environ, **spec.env},
                spec.config_hash, {"port": port}, death_signal=spec.death_signal,
                grace=grace))

        def wait() -> None:
            if check is None:  # running is ready
                progress(subject, "ready")
                return
            progress(subject, check.waiting)
            readiness.wait(
                check, failed=lambda: self._exited(ps, unit) if unit else None, setup=setup,
                run_step=self._run_step, progress=lambda message: progress(subject, message),
                what=INFRA_PARTS.get(spec.name, spec.name),
                hint=lambda: _log_hint(ps, unit) if unit else "")
            progress(subject, "ready")

        return wait

    def observe_units(self, config: ShopConfig, role: str = "infra") -> dict[str, ServiceState]:
        """The units of `role` this runtime started, by name ("consul", a service's name);
        a broker it merely reuses is absent."""
        ps = ProjectState(config.root)
        states = {}
        for unit, record in all_records(ps).items():
            if record.get("role") == role:
                states[unit.lstrip("_")] = service_state(
                    record, supervisor_alive(ps, unit, record))
        return states

    def remove_unit(self, config: ShopConfig, name: str, role: str = "infra") -> None:
        """Stop the unit (and whatever it started); a missing one is not an error."""
        unit = local_infra.unit_name(name) if role == "infra" else name
        self._stop_units(ProjectState(config.root), [unit])

    def infra_endpoints(self, config: ShopConfig) -> InfraEndpoints | None:
        consul_ok = not config.infra.consul.enabled or consul_ready(config.infra.consul.port)
        amqp_ok = not config.infra.rabbitmq.enabled or amqp_answers(config.infra.rabbitmq.port)
        return endpoints(config) if consul_ok and amqp_ok else None

    @staticmethod
    def _unit_name(spec: UnitSpec) -> str:
        return local_infra.unit_name(spec.name) if spec.role == "infra" else spec.name

    def _exited(self, ps: ProjectState, unit: str) -> str | None:
        """Why the unit cannot become ready any more, or None while it may."""
        record = read_record(ps, unit)
        if record is None:
            return None
        if not supervisor_alive(ps, unit, record) or record["state"] in ("restarting", "exited"):
            return "exited while starting"
        return None

    @staticmethod
    def _run_step(argv: tuple[str, ...], setup: Setup) -> tuple[bool, str]:
        try:
            done = subprocess.run(list(argv), env={**os.environ, **setup.env}, capture_output=True,
                                  text=True, timeout=60, input=setup.stdin)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        return done.returncode == 0, done.stdout + done.stderr

    # -- services --------------------------------------------------------------------------

    def observe(self, config: ShopConfig) -> dict[str, ServiceState]:
        ps = ProjectState(config.root)
        states = {}
        for unit, record in all_records(ps).items():
            if record.get("role") == "service":
                states[unit] = service_state(record, supervisor_alive(ps, unit, record))
        return states

    def instance(self, config: ShopConfig, service: str) -> ServiceState | None:
        ps = ProjectState(config.root)
        record = read_record(ps, service)
        if record is None or record.get("role") != "service":
            return None
        return service_state(record, supervisor_alive(ps, service, record))

    def infra_ports(self, config: ShopConfig) -> list[PortNeed]:
        """Consul's and Prometheus' ports, and RabbitMQ's unless a broker already answers
        AMQP there (ours, or one this runtime reuses: see _ensure_rabbitmq)."""
        infra = config.infra
        needs = []
        if infra.consul.enabled:
            needs.append(PortNeed(infra.consul.port, "infra.consul.port", "consul"))
        if infra.rabbitmq.enabled and not amqp_answers(infra.rabbitmq.port):
            needs.append(PortNeed(infra.rabbitmq.port, "infra.rabbitmq.port", "rabbitmq"))
        if infra.prometheus.enabled:
            needs.append(PortNeed(infra.prometheus.port, "infra.prometheus.port", "prometheus"))
        if databases.enabled(config, self.name):
            needs.append(PortNeed(infra.postgres.port, "infra.postgres.port", POSTGRES))
        return needs

    def port_owners(
        self, config: ShopConfig, ports: list[int]
    ) -> dict[int, tuple[str | None, str | None]]:
        """A listener is this project's when its environment carries the project's marker
        (every process a supervisor starts does); its unit is the marker's."""
        state_dir = str(ProjectState(config.root).dir)
        owners: dict[int, tuple[str | None, str | None]] = {}
        for port in ports:
            pid = listening_pid(port)
            environ = environ_of(pid) if pid is not None else None
            if environ and environ.get(ENV_STATE_DIR) == state_dir and environ.get(ENV_UNIT):
                owners[port] = (environ[ENV_UNIT].lstrip("_"), None)
        return owners

    def prepare(
        self, config: ShopConfig, services: list[str], progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> None:
        """Nothing to build locally; fail now, by name, if a service cannot be started."""
        missing = [
            f"{name}: {config.root / config.services[name].path / 'main.py'}"
            for name in services
            if not (config.root / config.services[name].path / "main.py").is_file()
        ]
        if missing:
            raise OperationFailed(
                "cannot run locally, main.py is missing:\n  " + "\n  ".join(missing),
                hint="each service starts as `python main.py` in its folder (services.NAME.path)",
            )
        if not os.access(self.python, os.X_OK):
            raise RuntimeUnavailable(f"the Python interpreter {self.python} cannot be run")
        self._service_python(config, progress)

    def _service_python(self, config: ShopConfig, progress: Progress = no_progress) -> str:
        """shopctl's own Python when it has every service's requirements, else the
        project's venv, made to have them (see shopctl.runtime.pyenv)."""
        if self.service_python is None:
            from shopctl.runtime import pyenv

            texts = [(config.root / svc.path / "requirements.txt").read_text()
                     for svc in config.services.values()
                     if (config.root / svc.path / "requirements.txt").is_file()]
            kit_deps = kit_for(config.root).dependencies
            ps = ProjectState(config.root)
            ps.ensure(ps.local_dir)
            self.service_python = pyenv.interpreter(
                pyenv.requirement_lines([*texts, "\n".join(kit_deps)]), ps.venv_dir,
                progress, self.python)
        return self.service_python

    def start_service(
        self, config: ShopConfig, spec: LaunchSpec, progress: Progress = no_progress
    ) -> ServiceState:
        ps = ProjectState(config.root)
        svc = config.services[spec.service]
        instance = spec.instance
        self._stop_units(ps, [instance])  # replacing: the old instance goes first
        port, metrics_port = svc.port, svc.metrics_port
        if spec.fixed_ports:
            require_free_port(svc.port, f"services.{svc.name}.port", None)
            if svc.metrics_port:
                require_free_port(svc.metrics_port, f"services.{svc.name}.metrics_port", None)
        else:  # a further instance: free ports, which Consul's registration records
            port = free_port()
            metrics_port = free_port() if svc.metrics_port else None
        ports = {"SHOP_PORT": str(port), "SHOP_INSTANCE": instance}
        if metrics_port:
            ports["SHOP_METRICS_PORT"] = str(metrics_port)
        # The instances of a service share its data folder, as its containers share a volume.
        data = ps.ensure(ps.data_dir(spec.service))
        kit = kit_for(config.root)  # imported from its folder: edits need no reinstall
        path = os.pathsep.join(p for p in (str(kit.root), os.environ.get("PYTHONPATH")) if p)
        secrets = ps.write_service_secrets(spec.service, dict(spec.secrets))
        env = child_env(os.environ, spec.env, {"SHOP_HOST": HOST, "SHOP_DATA_DIR": str(data),
                                               "SHOP_SECRETS_DIR": str(secrets),
                                               "PYTHONPATH": path, **ports})
        python = self._service_python(config, progress)
        unit = Unit(
            instance, "service", [python, "main.py"], config.root / svc.path, env,
            spec.config_hash, {"port": port, "metrics_port": metrics_port,
                               "service": spec.service, "index": spec.index},
        )
        record = self._launch(config, ps, unit)
        progress(instance, f"running as pid {record.get('child_pid')}")
        return service_state(record, alive=True)

    def reload_service(
        self, config: ShopConfig, spec: LaunchSpec, changed: list[tuple[str, Path | None]]
    ) -> ServiceState:
        """The process runs the project's own files, so a restart is all a change needs
        (its record takes the new hash: code and process agree)."""
        return self.start_service(config, spec)

    def stop_service(self, config: ShopConfig, service: str) -> None:
        self._stop_units(ProjectState(config.root), [service])

    def down(self, config: ShopConfig, volumes: bool, progress: Progress = no_progress,
             images: bool = False) -> None:
        """`images` is accepted for the contract and ignored: local processes use no images."""
        ps = ProjectState(config.root)
        records = all_records(ps)
        services = [unit for unit, rec in records.items() if rec.get("role") == "service"]
        for group in (services, [unit for unit in INFRA_UNITS if unit in records]):
            for unit in group:
                progress(unit.lstrip("_"), "stopping")
            self._stop_units(ps, group)
            for unit in group:
                progress(unit.lstrip("_"), "stopped")
        # Whatever still carries the project's marker (children of a killed supervisor).
        terminate(marked_pids(ps.dir), grace=5.0)
        if volumes and ps.data_root.exists():
            shutil.rmtree(ps.data_root)
            progress("data", f"removed {ps.data_root}")
        outside = ps.system_data_dir(local_infra.unit_name(POSTGRES)).parent
        if volumes and outside.exists():
            shutil.rmtree(outside)
            progress("data", f"removed {outside}")

    # -- logs ------------------------------------------------------------------------------

    def logs(
        self, config: ShopConfig, services: list[str], follow: bool, tail: int | None
    ) -> Iterator[LogLine]:
        """Lines of the services' log files, interleaved by timestamp; `tail` applies to
        each service (as docker compose does), then follow polls for new lines."""
        ps = ProjectState(config.root)
        names = expand_instances(config, services or list(config.services), self.observe(config))
        readers = [LogReader(name, ps.log_file(name)) for name in names]
        history: list[LogLine] = []
        for reader in readers:
            history.extend(reader.read_new(tail))
        yield from sorted(history, key=_log_order)
        while follow:
            batch = [line for reader in readers for line in reader.read_new()]
            yield from sorted(batch, key=_log_order)
            if not batch:
                time.sleep(_POLL)

    # -- supervisors -------------------------------------------------------------------------

    def _running(self, ps: ProjectState, unit: str) -> bool:
        record = read_record(ps, unit)
        return record is not None and supervisor_alive(ps, unit, record)

    def _launch(self, config: ShopConfig, ps: ProjectState, unit: Unit) -> dict[str, Any]:
        """Start a supervisor for `unit`; returns its first record once the child runs."""
        ps.ensure(ps.run_dir)
        ps.ensure(ps.logs_dir)
        markers = {ENV_STATE_DIR: str(ps.dir), ENV_UNIT: unit.name}
        launch_id = uuid.uuid4().hex
        spec = {
            "unit": unit.name, "role": unit.role, "project": config.project,
            "launch_id": launch_id, "argv": unit.argv, "cwd": str(unit.cwd),
            "env": {**unit.env, **markers}, "log": str(ps.log_file(unit.name)),
            "state": str(ps.run_file(unit.name)), "config_hash": unit.config_hash,
            "grace": self.grace if unit.grace is None else unit.grace,
            "death_signal": unit.death_signal, "meta": dict(unit.meta),
        }
        # 0600: the environment holds the project's token secret.
        write_atomic(ps.spec_file(unit.name), json.dumps(spec, indent=1), mode=0o600)
        package_parent = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
        sup_env = {**os.environ, **markers, "PYTHONPATH": path}
        with open(ps.log_file(unit.name), "ab") as log:  # the supervisor's own errors land there
            launched = subprocess.run(
                [self.python, "-m", SUPERVISOR_MODULE, "--detach", str(ps.spec_file(unit.name))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                env=sup_env, cwd=ps.dir, start_new_session=True, timeout=30, check=False,
            )
        if launched.returncode != 0:
            raise OperationFailed(
                f"the supervisor of {unit.name} did not start", hint=_log_hint(ps, unit.name)
            )
        deadline = time.monotonic() + self.launch_timeout
        while time.monotonic() < deadline:
            record = read_record(ps, unit.name)
            if record and record.get("launch_id") == launch_id and record["state"] != "starting":
                if record["state"] == "exited":
                    why = record.get("error") or "it exited"
                    raise OperationFailed(
                        f"{unit.name.lstrip('_')} could not start: {why}",
                        hint=_log_hint(ps, unit.name),
                    )
                return record
            time.sleep(0.05)
        raise OperationFailed(
            f"the supervisor of {unit.name} did not report within {self.launch_timeout:.0f}s",
            hint=_log_hint(ps, unit.name),
        )


    def _stop_units(self, ps: ProjectState, units: list[str]) -> None:
        """SIGTERM the units' supervisors together (each stops its child), wait, then
        SIGKILL what is left, including processes of those units without a supervisor."""
        records = {unit: read_record(ps, unit) for unit in units}
        live = {
            unit: rec for unit, rec in records.items()
            if rec is not None and supervisor_alive(ps, unit, rec)
        }
        for rec in live.values():
            _kill(rec["supervisor_pid"], signal.SIGTERM)
        grace = max([self.grace, *(_spec_grace(ps, u) for u in live)]) + 5.0
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            live = {u: r for u, r in live.items() if supervisor_alive(ps, u, r)}
            time.sleep(0.05)
        for rec in live.values():  # did not stop in time: take the whole group down
            _kill_group(rec["supervisor_pid"], signal.SIGKILL)
            if rec.get("child_pid"):
                _kill_group(rec["child_pid"], signal.SIGKILL)
        for unit in units:
            terminate(marked_pids(ps.dir, unit), grace=5.0)
            for path in (ps.run_file(unit), ps.spec_file(unit)):
                path.unlink(missing_ok=True)


# -- what runs -----------------------------------------------------------------------------


def endpoints(config: ShopConfig) -> InfraEndpoints:
    """Host and services share the loopback, so both views are the same addresses."""
    consul_port, amqp_port = config.infra.consul.port, config.infra.rabbitmq.port
    amqp = broker.uri(config, HOST, amqp_port)
    return InfraEndpoints(
        consul_http=f"http://{HOST}:{consul_port}",
        amqp_uri=amqp,
        service_consul_addr=f"{HOST}:{consul_port}",
        service_amqp_uri=amqp,
        postgres=(HOST, config.infra.postgres.port)
        if databases.enabled(config, "local") else None,
    )










def child_env(
    inherited: Mapping[str, str], contract: Mapping[str, str], runtime: Mapping[str, str]
) -> dict[str, str]:
    """The user's environment without any SHOP_* / CONSUL_HTTP_ADDR of their shell (the
    contract comes from the LaunchSpec alone), then the contract, then the runtime's part."""
    base = {
        key: value for key, value in inherited.items()
        if not key.startswith("SHOP_") and key != "CONSUL_HTTP_ADDR"
    }
    return {**base, **contract, **runtime}


def require_free_port(port: int, setting: str, env_var: str | None) -> None:
    if is_port_free(HOST, port):
        return
    holder = port_holder(port) or "a process this user cannot see"
    where = f"change {setting}" + (f" (or set {env_var})" if env_var else "")
    raise OperationFailed(
        f"port {port} ({setting}) is in use by {holder}",
        hint=f"stop that process or {where} in shop.yaml",
    )


def free_port() -> int:
    """A port nothing listens on now, for a unit to bind (see ports.port_to_hand_out)."""
    return port_to_hand_out(HOST)


def consul_ready(port: int) -> bool:
    """Consul answers and has elected a leader (shopctl.readiness, as every such check)."""
    return readiness.consul_has_leader(port)


def amqp_answers(port: int, timeout: float = 1.0) -> bool:
    """Whatever listens on `port` speaks AMQP 0-9-1 (not merely: something listens)."""
    return broker.answers(HOST, port, timeout)


# -- run files, processes --------------------------------------------------------------


def read_record(ps: ProjectState, unit: str) -> dict[str, Any] | None:
    try:
        return json.loads(ps.run_file(unit).read_text())
    except (FileNotFoundError, ValueError):  # written atomically, so absent or whole
        return None


def all_records(ps: ProjectState) -> dict[str, dict[str, Any]]:
    if not ps.run_dir.is_dir():
        return {}
    records = {}
    for path in sorted(ps.run_dir.glob("*.json")):
        unit = path.name.removesuffix(".json")
        if not unit.endswith(".spec"):
            record = read_record(ps, unit)
            if record is not None:
                records[unit] = record
    return records


def service_state(record: Mapping[str, Any], alive: bool) -> ServiceState:
    """A run record as the runtime contract's value; a dead supervisor means exited."""
    meta = record.get("meta") or {}
    state = record.get("state") if alive else "exited"
    child = record.get("child_pid") if alive else None
    restarts = int(record.get("restarts") or 0)
    extra = {"supervisor_pid": str(record.get("supervisor_pid")), "log": str(record.get("log"))}
    if meta.get("metrics_port"):
        extra["metrics_port"] = str(meta["metrics_port"])
    return ServiceState(
        service=meta.get("service") or split_instance(record["unit"])[0],
        index=int(meta.get("index") or split_instance(record["unit"])[1]),
        state=state if state in ("starting", "running", "restarting") else "exited",
        instance_id=str(child) if child else None,
        address=HOST,
        port=meta.get("port"),
        host_port=meta.get("port"),
        started_at=record.get("started_at"),
        restarts=restarts,
        config_hash=record.get("config_hash") or None,
        exit_code=record.get("last_exit_code"),
        # The supervisor counts a restart when it starts the child again, after the
        # backoff; while it waits ("restarting") the crash is not counted yet.
        crashes=restarts + (1 if state == "restarting" else 0),
        extra=extra,
    )


def supervisor_alive(ps: ProjectState, unit: str, record: Mapping[str, Any]) -> bool:
    pid = record.get("supervisor_pid")
    return isinstance(pid, int) and supervisor_running(pid, ps.spec_file(unit))


def marked_pids(state_dir: Path, unit: str | None = None) -> list[int]:
    """Pids whose environment carries this project's marker (and unit's, if given)."""
    wanted = {f"{ENV_STATE_DIR}={state_dir}".encode()}
    if unit is not None:
        wanted.add(f"{ENV_UNIT}={unit}".encode())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            comm = (entry / "comm").read_text().strip()
        except OSError:  # gone, or not ours to read
            continue
        if wanted <= environ and comm not in SHARED_DAEMONS:
            found.append(int(entry.name))
    return found


def terminate(pids: Iterable[int], grace: float) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace` seconds."""
    pids = [pid for pid in pids if _kill(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [pid for pid in pids if _running(pid)]
    for pid in pids:
        _kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has finished running


def _kill(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _spec_grace(ps: ProjectState, unit: str) -> float:
    try:
        return float(json.loads(ps.spec_file(unit).read_text()).get("grace", 0))
    except (FileNotFoundError, ValueError):
        return 0.0


def _log_hint(ps: ProjectState, unit: str, lines: int = 12) -> str:
    reader = LogReader(unit, ps.log_file(unit))
    tail = [line.text for line in reader.read_new(lines)]
    shown = "\n    ".join(tail) if tail else "(empty)"
    return f"last lines of {ps.log_file(unit)}:\n    {shown}"


def _log_order(line: LogLine) -> float:
    return line.timestamp or 0.0

