"""`up` and `down`: plan, then apply, across a runtime and the Consul registry.

Nothing here prints. Progress goes through a callback; failures are raised as
ShopctlError subclasses carrying what the user needs (the failing service, its last
log lines, the failing check's output).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from shopctl.config import ShopConfig
from shopctl.consul_acl import service_token
from shopctl.errors import Cancelled, OperationFailed
from shopctl.launch import launch_spec
from shopctl.plan import Action, Plan, make_plan
from shopctl.ports import PortNeed, is_port_free, port_holder
from shopctl.runtime.base import Runtime
from shopctl.scheduler import Node, Scheduler
from shopctl.units import (
    InfraEndpoints,
    LaunchSpec,
    Progress,
    ServiceState,
    instance_name,
    no_progress,
    split_instance,
)

POLL_SECONDS = 0.1  # between looks at the local Consul agent (and probes) while waiting
# Consul runs a new check first at a random point within its interval (and never more
# often than once a second), so a service registered with a 5 s interval may wait 5 s for
# its first verdict. Until Consul passes it, an instance `up` registers is checked at
# most this far apart; then it is registered again with its own interval (Consul keeps
# the passing status across that).
FIRST_CHECK_INTERVAL = 1.0
CRASHES_TO_FAIL = 2  # a first crash may be a dependency not answering yet; a second is not
EXIT_CODE_WAIT = 3.0  # seconds to wait for a crash-looping instance's exit code (docker
# shows it only while the container is down between two runs)
SUMMARY_PROBE_SECONDS = 1.0  # the longest a failing `up` waits to say which others are up
CANCEL_WAIT = 0.8  # the longest a cancelled `up` waits for the starts under way to return
LOOPBACK = "127.0.0.1"  # where both runtimes publish the services' and infra's host ports


@dataclass
class UpResult:
    runtime: str
    plan: Plan
    applied: bool
    health: Mapping[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def with_dependencies(config: ShopConfig, names: list[str] | None) -> list[str]:
    """The services asked for plus everything they depend on, transitively."""
    if not names:
        return list(config.services)
    wanted: list[str] = []
    for name in names:
        config.service(name)  # raises UsageError with a did-you-mean hint when unknown
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in wanted:
            continue
        wanted.append(name)
        stack.extend(config.services[name].depends_on)
    return [name for name in config.services if name in wanted]


def planned_specs(
    config: ShopConfig, runtime: Runtime, infra: InfraEndpoints, secret: str, targets: list[str]
) -> dict[str, LaunchSpec]:
    """What each instance of the targets is started with, keyed by instance name."""
    specs = {}
    for name in targets:
        spec = launch_spec(config, name, infra, secret, runtime.name)
        for index in range(1, config.services[name].replicas + 1):
            specs[instance_name(name, index)] = spec.for_instance(index)
    return specs


def plan_up(
    config: ShopConfig, runtime: Runtime, specs: Mapping[str, LaunchSpec]
) -> tuple[Plan, dict[str, ServiceState]]:
    observed = runtime.observe(config)
    hashes = {name: spec.config_hash for name, spec in specs.items()}
    return make_plan(config.start_order(), hashes, observed), observed


def ports_needed(config: ShopConfig, runtime: Runtime, plan: Plan) -> list[PortNeed]:
    """Every host port applying `plan` takes: the infra's (as the runtime starts it) and
    each service's port and metrics_port for the services it creates or replaces."""
    infra_ports = getattr(runtime, "infra_ports", None)
    needs = list(infra_ports(config)) if infra_ports is not None else []
    if not getattr(runtime, "publishes_service_ports", True):
        return needs  # services take no fixed host port (a swarm publishes per task)
    for step in plan.changes:
        if not step.starts or step.instance != step.service:
            continue  # removed, or a further instance: it takes free ports
        svc = config.services[step.service]
        needs.append(PortNeed(svc.port, f"services.{svc.name}.port", svc.name))
        if svc.metrics_port and svc.metrics_port != svc.port:
            needs.append(PortNeed(svc.metrics_port, f"services.{svc.name}.metrics_port",
                                  svc.name))
    return needs


def check_ports(config: ShopConfig, runtime: Runtime, plan: Plan) -> None:
    """Fail before anything starts when a host port the plan needs is taken, naming each
    such port, its setting in shop.yaml and who holds it (pid, container). A port held
    by this project's own instance of the same unit (a service kept or replaced, infra
    already running) is no conflict, nor one held by a service this plan replaces."""
    busy = [need for need in ports_needed(config, runtime, plan)
            if not is_port_free(LOOPBACK, need.port)]
    if not busy:
        return
    owners_of = getattr(runtime, "port_owners", None)
    owners = owners_of(config, sorted({need.port for need in busy})) if owners_of else {}
    replaced = {step.service for step in plan.changes}
    conflicts = []
    for need in busy:
        unit, known = owners.get(need.port, (None, None))
        if unit is not None and (unit == need.unit or unit in replaced):
            continue
        who = [f"{config.project}'s own {unit}"] if unit is not None else []
        who += [known] if known else []
        who += [port_holder(need.port) or ("" if who else "a process this user cannot see")]
        conflicts.append(f"port {need.port} ({need.setting}) is in use by "
                         + ", ".join(w for w in who if w))
    if not conflicts:
        return
    head = conflicts[0] if len(conflicts) == 1 else (
        f"{len(conflicts)} host ports shop.yaml needs are in use:\n  " + "\n  ".join(conflicts))
    raise OperationFailed(
        f"{head}\nnothing was started",
        hint="stop what holds the port, or change that setting in shop.yaml",
    )


class InfraStartup:
    """The project's infra, started; each part's readiness awaited in the background.

    `runtime.start_infra` returns as soon as the units run, with a blocking waiter per
    part; each waiter runs here in a daemon thread (so an `up` that fails meanwhile
    exits at once instead of waiting out the infra timeout).
    """

    def __init__(self, config: ShopConfig, runtime: Runtime, progress: Progress = no_progress):
        self._done: dict[str, threading.Event] = {}
        self._errors: dict[str, BaseException] = {}
        self.endpoints: InfraEndpoints
        self.endpoints, waiters = runtime.start_infra(config, progress)
        for part, waiter in waiters.items():
            done = self._done[part] = threading.Event()
            threading.Thread(
                target=self._wait_one, args=(part, waiter, done), name=f"shopctl-infra-{part}",
                daemon=True,
            ).start()

    def _wait_one(self, part: str, waiter: Callable[[], None], done: threading.Event) -> None:
        try:
            waiter()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._errors[part] = exc
        finally:
            done.set()

    def ready(self, part: str) -> bool:
        """Whether `part` answers (True for parts nobody waits for); raises its failure."""
        done = self._done.get(part)
        if done is None or not done.is_set():
            return done is None
        if part in self._errors:
            raise self._errors[part]
        return True

    def all_ready(self) -> bool:
        return all([self.ready(part) for part in self._done])

    def wait(self, part: str, cancel: threading.Event | None = None) -> None:
        """Block until `part` answers; raises its failure (the waiter has its own timeout),
        or Cancelled once `cancel` is set."""
        done = self._done.get(part)
        if done is not None:
            while not done.wait(POLL_SECONDS if cancel is not None else None):
                _check(cancel)
        self.ready(part)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("up cancelled")


def apply_up(
    config: ShopConfig,
    runtime: Runtime,
    registry,
    plan: Plan,
    specs: Mapping[str, LaunchSpec],
    observed: Mapping[str, ServiceState],
    progress: Progress = no_progress,
    timeout_extra: float = 30.0,
    infra: InfraStartup | None = None,
    before_start: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cancel: threading.Event | None = None,
) -> dict[str, object]:
    """Start each planned instance as soon as what it needs is there, register it, and
    wait until every planned instance's Consul checks pass (and all infra answers).

    The order, the parallelism and the deadlines are shopctl.scheduler's; an instance is
    one node there, and waits for every instance of the services its service
    depends_on. Instances independent of each other start in parallel, whatever their
    level. RabbitMQ may still be booting: a Nameko service waits for its broker itself
    (shopkit.amqp), and cannot pass its check before it connects. What "healthy" means,
    and what else ends `up` early, is _UpGate's (see there): Consul's verdict, shopctl's
    own probe to let dependents start sooner, and the runtime's crash watch.
    `before_start` runs once Consul answers, before any instance starts (Shop.up writes
    the KV settings the services read when they start).

    `cancel` (a threading.Event, set by the CLI on Ctrl+C or SIGTERM) is looked at
    between every two units of work: once set, nothing more is built, started or
    registered; builds under way are stopped (see runtime.prepare), starts under way get
    CANCEL_WAIT seconds to return, and Cancelled is raised. What was started runs on.

    A runtime that places instances itself (a swarm: `replicas` tasks per service, and
    a registrar that registers them) applies the plan with its own `apply_up`, given the
    same plan, specs and hooks; its gate is its own too (see shopctl.runtime.swarm).
    """
    own = getattr(runtime, "apply_up", None)
    if own is not None:
        return own(config, registry, plan, specs, progress,
                   wait_infra=(lambda part: infra.wait(part, cancel)) if infra is not None
                   else (lambda part: None),
                   infra_ready=infra.all_ready if infra is not None else (lambda: True),
                   before_start=before_start, cancel=cancel, timeout_extra=timeout_extra)
    if plan.built:
        runtime.prepare(config, plan.built, progress, cancel=cancel)
    _check(cancel)
    # New instances are made ready to start (a runtime that can: containers created)
    # while Consul boots and their dependencies start.
    with _staged(runtime, config, [specs[step.instance] for step in plan.steps
                                   if step.action is Action.CREATE]):
        if infra is not None:
            infra.wait("consul", cancel)
        _check(cancel)
        if before_start is not None:
            before_start()
        remove_instances(config, runtime, registry,
                         [step.instance for step in plan.steps if not step.starts], progress)
        steps = {step.instance: step for step in plan.steps if step.starts}
        instances: dict[str, list[str]] = {}
        for name, step in steps.items():
            instances.setdefault(step.service, []).append(name)
        # A no-op step's instance (observed running) is a node with nothing to start.
        kept = {name: observed[name] for name, step in steps.items() if step.action is Action.NOOP}
        nodes = [Node(name,
                      needs=tuple(other for dep in config.services[step.service].depends_on
                                  for other in instances.get(dep, ())),
                      start=None if name in kept else partial(
                          _start_instance, config, runtime, registry, step.action, specs[name],
                          progress),
                      grace=config.services[step.service].health.start_period + timeout_extra)
                 for name, step in steps.items()]
        gate = _UpGate(config, runtime, registry, kept, progress, clock)
        gate.scheduler = Scheduler(
            nodes, look=gate.look, on_late=gate.late, on_started=gate.started,
            ready_for_dependents=gate.probe, watch=gate.watch,
            ready=infra.all_ready if infra is not None else lambda: True,  # raises its failure
            progress=progress, poll=POLL_SECONDS, cancel=cancel, cancel_wait=CANCEL_WAIT,
            clock=clock, sleep=sleep)
        gate.scheduler.run()
        return dict(gate.health)


@contextmanager
def _staged(runtime, config: ShopConfig, specs: list[LaunchSpec]) -> Iterator[None]:
    """Has the runtime stage `specs` (when it can), and unstage on the way out what a
    failed or cancelled `up` never started."""
    stage = getattr(runtime, "stage_services", None)
    if stage is None:
        yield
        return
    stage(config, specs)
    try:
        yield
    finally:
        runtime.unstage(config)


def register_instance(config: ShopConfig, registry, runtime: str, state: ServiceState,
                      first: bool) -> bool:
    """Register one instance in Consul with its service's check, under the service's own
    token. With `first` (Consul has not passed this instance yet), the check runs at
    most FIRST_CHECK_INTERVAL apart, so Consul's verdict comes within about a second
    whatever the service's interval; register it again without `first` once Consul
    passes it. Returns whether it got the short interval."""
    svc = config.services[state.service]
    short = first and svc.health.interval > FIRST_CHECK_INTERVAL
    if short:
        svc = svc.model_copy(update={"health": svc.health.model_copy(
            update={"interval": FIRST_CHECK_INTERVAL})})
    registry.register(svc, state, runtime, token=service_token(config, svc.name))
    return short

class _UpGate:
    """`up`'s hooks into the scheduler: when an instance is healthy, and when it failed.

    Healthy is Consul's verdict (`look`), which is also the result. Consul runs a new
    check after a random pause of up to one interval, so for an instance others wait
    for, shopctl performs the same check itself (`probe`) until Consul passes it.
    Each instance is registered with its check at most FIRST_CHECK_INTERVAL apart until
    Consul passes it, then again with its own interval; it is registered once the
    runtime gives it an address (a container that crashed before its first look has
    none), and again when that address changes. An instance kept as it runs is
    registered again as it is.

    When the runtime shows instances (`instance`), `watch` fails `up` as soon as one
    exits for good or crashes a second time (start_failure_error: its exit code, its
    last log lines, and what the others were left doing) instead of waiting out its
    start period; one still not passing at its deadline fails it with unhealthy_error.
    """

    def __init__(self, config: ShopConfig, runtime: Runtime, registry,
                 kept: Mapping[str, ServiceState], progress: Progress,
                 clock: Callable[[], float]):
        self.config, self.runtime, self.registry = config, runtime, registry
        self.kept, self.progress = kept, progress
        self.scheduler: Scheduler  # set by apply_up
        self.health: Mapping[str, object] = {}  # Consul's, at the latest look
        self.states: dict[str, ServiceState] = {}  # each started instance, as last seen
        self.registered: dict[str, str] = {}  # instance -> the address Consul has for it
        self.first_checks: set[str] = set()  # registered with FIRST_CHECK_INTERVAL
        self.crashes = CrashWatch(clock)
        for name, state in kept.items():
            self.crashes.baseline[name] = state.crashes  # old crashes are not this up's

    def look(self, names: list[str]) -> set[str]:
        self.health = self.registry.health()
        passing = set()
        for name in names:
            status = getattr(self.health.get(name), "status", "critical")
            if status == "passing":
                passing.add(name)
                if name in self.first_checks:  # Consul passed it: its own interval now
                    self._send(name, self.states[name], first=False)
            else:
                self.scheduler.report(name, self.crashes.down.get(name) or f"check {status}")
        return passing

    def started(self, name: str, state: ServiceState | None) -> None:
        """`state` is None for an instance kept as it runs."""
        passes = False
        if state is None:
            self.progress(name, "unchanged")
            state = self.kept[name]
            passes = getattr(self.health.get(name), "status", None) == "passing"
        self.states[name] = state
        self._register(name, state, passes)
        if name not in self.registered:
            self.scheduler.report(name, f"{state.state}, not registered yet (no address)")

    def watch(self, names: list[str]) -> None:
        instance = getattr(self.runtime, "instance", None)
        if instance is None:
            return  # this runtime does not show its instances
        for name in names:
            state = instance(self.config, name) or _gone(self.states[name])
            self.states[name] = state
            self.crashes.look(name, state)
            if state.state == "running":
                self._register(name, state)
        failed = self.crashes.failed()
        if failed:
            raise start_failure_error(self.config, self.runtime, self.registry,
                                      {name: self.states[name] for name in failed},
                                      self.crashes, self._others(failed))

    def probe(self, name: str) -> bool:
        return _probe_passes(self.config, self.registry, self.states[name])

    def late(self, names: list[str]) -> OperationFailed:
        return unhealthy_error(self.config, self.runtime, self.health, names)

    def _register(self, name: str, state: ServiceState, passes: bool = False) -> None:
        """In Consul, if the runtime gave it an address Consul does not have yet; with a
        short first interval unless Consul `passes` it already."""
        if state.address and self.registered.get(name) != state.address:
            self._send(name, state, first=not passes)
            self.registered[name] = state.address
            self.scheduler.report(name, "registered, waiting for checks")

    def _send(self, name: str, state: ServiceState, first: bool) -> None:
        if register_instance(self.config, self.registry, self.runtime.name, state, first):
            self.first_checks.add(name)
        else:
            self.first_checks.discard(name)

    def _others(self, failed: list[str]) -> dict[str, str]:
        """What each other planned instance was doing when `up` gave up: "healthy",
        its runtime state once started ("running": not healthy yet), "starting" or
        "not started"."""
        run = self.scheduler
        out = {}
        for name in run.nodes:
            if name in failed:
                continue
            if name in run.passing or name in run.answered:
                out[name] = "healthy"
            elif name in self.states:
                out[name] = self.states[name].state
            elif name in run.starting:
                out[name] = "starting"
            else:
                out[name] = "not started"
        return out


class CrashWatch:
    """What the runtime said of each starting instance, and which ones failed to start.

    An instance fails when it is down for good ("exited": it exited and will not be
    restarted, or its supervisor is gone) or has crashed CRASHES_TO_FAIL times since
    this `up` started it. Its exit code is the last one the runtime showed.
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.baseline: dict[str, int] = {}  # crashes before this up (instances it kept)
        self.exit_codes: dict[str, int] = {}
        self.crashes: dict[str, int] = {}
        self.down: dict[str, str] = {}  # service -> progress line while it crashes
        self._failing_since: dict[str, float] = {}
        self._gone: set[str] = set()

    def look(self, name: str, state: ServiceState) -> None:
        crashes = max(0, state.crashes - self.baseline.get(name, 0))
        if state.exit_code is not None and (state.state != "running" or crashes):
            self.exit_codes[name] = state.exit_code
        self.crashes[name] = crashes
        code = self.exit_codes.get(name)
        why = f"exit code {code}" if code is not None else "crashed"
        if state.state == "exited":
            self._gone.add(name)
            self.down[name] = f"exited ({why})"
        elif crashes:
            times = "1 crash" if crashes == 1 else f"{crashes} crashes"
            self.down[name] = (f"restarting ({why})" if state.state == "restarting"
                               else f"running again after {times} ({why})")
            if crashes >= CRASHES_TO_FAIL:
                self._failing_since.setdefault(name, self.clock())
        else:
            self.down.pop(name, None)

    def failed(self) -> list[str]:
        """Services that failed to start, in the order they were seen failing."""
        out = [name for name in self._gone]
        for name, since in self._failing_since.items():
            if name in out:
                continue
            # The code shows while the instance is down; do not wait long for it.
            if name in self.exit_codes or self.clock() - since >= EXIT_CODE_WAIT:
                out.append(name)
        return out


def _gone(last: ServiceState) -> ServiceState:
    """The state of an instance that no longer exists (removed while starting)."""
    return ServiceState(last.service, "exited", exit_code=None, crashes=last.crashes)


def start_failure_error(
    config: ShopConfig,
    runtime: Runtime,
    registry,
    failed: Mapping[str, ServiceState],
    watch: CrashWatch,
    others: dict[str, str],
) -> OperationFailed:
    """One error for services that crashed or exited while starting: for each, how (exit
    code, crashes) and its last log lines; then what the other services were left doing,
    with a last look at those that run but did not pass a check yet."""
    parts = []
    for name, state in failed.items():
        code = watch.exit_codes.get(name)
        code_text = f"exit code {code}" if code is not None else "exit code unknown"
        if state.state == "exited":
            what = f"{name} exited while starting ({code_text}) and was not restarted"
        else:
            what = (f"{name} crashed while starting ({code_text}); crashed "
                    f"{watch.crashes.get(name, 0)} times, the {runtime.name} runtime keeps "
                    f"restarting it")
        try:
            lines = [line.text for line in runtime.logs(config, [name], follow=False, tail=20)]
        except Exception as exc:  # noqa: BLE001 - logs are a courtesy; the crash is the news
            lines = [f"(logs unavailable: {exc})"]
        shown = "\n".join(f"    {text}" for text in lines[-20:]) or "    (no output)"
        parts.append(f"{what}\n  last log lines:\n{shown}")
    running = [name for name, doing in others.items() if doing == "running"]
    for name, passes in _quick_probes(config, registry, runtime, running).items():
        if passes:
            others[name] = "healthy"  # Consul has not run its check yet; it passes
    groups: dict[str, list[str]] = {}
    for name, doing in others.items():
        groups.setdefault(doing, []).append(name)
    if others:
        labels = {"healthy": "up and healthy", "running": "running, not healthy yet",
                  "starting": "starting", "not started": "not started"}
        lines = [f"  {labels.get(doing, doing)}: {', '.join(names)}"
                 for doing, names in sorted(groups.items(), key=lambda kv: _ORDER.get(kv[0], 9))]
        parts.append("the other services were left as they are:\n" + "\n".join(lines))
    names = ", ".join(failed)
    return OperationFailed(
        "\n".join(parts),
        hint=f"fix {names} and run `shopctl up` again; `shopctl logs {next(iter(failed))}` "
             "shows more, `shopctl down` stops everything",
    )


_ORDER = {"healthy": 0, "running": 1, "starting": 2, "restarting": 3, "not started": 4}


def _quick_probes(config: ShopConfig, registry, runtime: Runtime, names: list[str]) -> dict:
    """{service: its check passes now}, for what answers within SUMMARY_PROBE_SECONDS."""
    watch = getattr(runtime, "instance", None)
    if not names or watch is None:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="shopctl-probe")
    try:
        futures = {}
        for name in names:
            state = watch(config, name)
            if state is not None:
                futures[name] = pool.submit(_probe_passes, config, registry, state)
        wait(futures.values(), timeout=SUMMARY_PROBE_SECONDS)
        return {name: f.result() for name, f in futures.items() if f.done()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def remove_instances(config: ShopConfig, runtime: Runtime, registry, names: list[str],
                     progress: Progress = no_progress) -> None:
    """Instances beyond their service's replicas: out of Consul first (callers stop
    choosing them), then stopped and removed, all at once."""
    if not names:
        return

    def remove(name: str) -> None:
        registry.deregister(name)
        runtime.stop_service(config, name)
        progress(name, "removed (beyond the service's replicas)")

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="shopctl-rm") as pool:
        for future in [pool.submit(remove, name) for name in names]:
            future.result()


def _probe_passes(config: ShopConfig, registry, state: ServiceState) -> bool:
    try:
        return registry.probe(state, config.services[state.service]).status == "passing"
    except Exception:  # noqa: BLE001 - a probe that cannot run says "not yet"; Consul decides
        return False


def _start_instance(config, runtime, registry, action, spec, progress) -> ServiceState:
    """Start (or restart, or replace) one service's instance; the caller registers it.
    The old instance's entry leaves Consul first: Consul keeps a check's status across a
    registration under the same ID, so the old instance's "passing" would otherwise count
    for the new one before it answers. It leaves while the instance starts: the new one
    is registered only after both."""
    progress(spec.instance, {Action.CREATE: "starting", Action.RECREATE: "replacing",
                             Action.START: "restarting"}[action])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopctl-dereg") as pool:
        leaving = pool.submit(registry.deregister, spec.instance)
        state = runtime.start_service(config, spec, progress)
        leaving.result()
    return state


def unhealthy_error(
    config: ShopConfig, runtime: Runtime, health, names: list[str]
) -> OperationFailed:
    parts = []
    for name in names:
        entry = health.get(name)
        outputs = [f"    {c.name}: {c.status}: {(c.output or '').strip()[:300]}"
                   for c in getattr(entry, "checks", [])] or ["    not registered in Consul"]
        try:
            lines = [line.text for line in runtime.logs(config, [name], follow=False, tail=15)]
        except Exception as exc:  # logs are a courtesy here; the health failure is the news
            lines = [f"(logs unavailable: {exc})"]
        parts.append(
            f"{name} did not become healthy within "
            f"{config.services[split_instance(name)[0]].health.start_period:.0f}s + grace\n"
            "  checks:\n"
            + "\n".join(outputs)
            + "\n  last log lines:\n" + "\n".join(f"    {t}" for t in lines[-15:])
        )
    return OperationFailed(
        "\n".join(parts),
        hint="fix the service and run `shopctl up` again; `shopctl logs SERVICE` shows more",
    )


def provision_databases(config: ShopConfig, infra: InfraStartup,
                        cancel: threading.Event | None = None) -> None:
    """Once the project's PostgreSQL lets shopctl in: the role and database of every
    service that declared one, each role's password the one on file (shopctl.databases).
    Before any service starts, so a `database_url` it is given always works."""
    from shopctl import databases
    from shopctl.infra_names import POSTGRES

    if infra.endpoints.postgres is None or not databases.declaring(config):
        return
    infra.wait(POSTGRES, cancel)
    databases.provision(config, *infra.endpoints.postgres)


LEGACY_SECRET_KEY = "_shared/jwt_secret"  # where shopctl before 0.x kept the token secret


def push_settings(config: ShopConfig, registry, targets: list[str]) -> None:
    """Put the token secret and each service's `config:` block into Consul KV.

    Settings are written only where absent, so what an operator changed at run time
    survives the next `up`; `shopctl config push` is the way to overwrite them. Each
    target gets its ACL token first (shopctl.consul_acl): it registers with it.
    The token secret is a file of each service, never in KV: a secret an earlier shopctl
    stored there is deleted.
    """
    from shopctl import consul_acl

    consul_acl.ensure(config, registry.consul_http, targets)
    present = registry.kv_tree()
    if LEGACY_SECRET_KEY in present:
        registry.delete_kv(LEGACY_SECRET_KEY)
    registry.put_kv_absent({
        f"{name}/{key}": value if isinstance(value, str) else json.dumps(value)
        for name in targets for key, value in config.services[name].config.items()
        if f"{name}/{key}" not in present})
