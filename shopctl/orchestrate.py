"""`up` and `down`: plan, then apply, across a runtime and the Consul registry.

Nothing here prints. Progress goes through a callback; failures are raised as
ShopctlError subclasses carrying what the user needs (the failing service, its last
log lines, the failing check's output).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from shopctl.config import ShopConfig
from shopctl.consul_acl import service_token
from shopctl.errors import Cancelled, OperationFailed
from shopctl.launch import launch_spec
from shopctl.plan import Action, Plan, make_plan
from shopctl.ports import PortNeed, is_port_free, port_holder
from shopctl.runtime.base import Runtime
from shopctl.units import InfraEndpoints, LaunchSpec, Progress, ServiceState, no_progress

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
    return {name: launch_spec(config, name, infra, secret, runtime.name) for name in targets}


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
    for step in plan.changes:
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
    """Start each planned service as soon as what it needs is there, register it, and
    wait until every planned service's Consul checks pass (and all infra answers).

    A service starts once every service it depends_on is healthy; services independent
    of each other start in parallel, whatever their level. RabbitMQ may still be
    booting: a Nameko service waits for its broker itself (shopkit.amqp), and cannot
    pass its check before it connects. "Healthy" for this gate means the service's check
    passes, in Consul or when shopctl performs the same check itself (`registry.probe`),
    whichever comes first: Consul runs a new check after a random pause of up to one
    interval. The result is still Consul's: this returns only when every planned
    service passes there. `before_start` runs once Consul answers, before any service
    starts (Shop.up writes the KV settings the services read when they start).

    Each instance is registered with its check at most FIRST_CHECK_INTERVAL apart until
    Consul passes it, then again with its own interval. An instance kept as it was
    (a no-op step) needs no start: it counts as started at once, and the loop looks at
    Consul again without sleeping whenever it made progress (so a no-op `up` never
    waits out a poll).

    While it waits, the gate also watches each instance in the runtime (when the runtime
    has `instance`): one that exits for good, or crashes a second time, fails `up` at
    once (`start_failure_error`: its exit code, its last log lines, and what the other
    services were left doing) instead of waiting out its start period. An instance is
    registered in Consul once the runtime gives it an address (a container that crashed
    before its first look has none), and again when that address changes.

    `cancel` (a threading.Event, set by the CLI on Ctrl+C or SIGTERM) is looked at
    between every two units of work: once set, nothing more is built, started or
    registered; builds under way are stopped (see runtime.prepare), starts under way get
    CANCEL_WAIT seconds to return, and Cancelled is raised. What was started runs on.
    """
    changed = [step.service for step in plan.changes]
    if changed:
        runtime.prepare(config, changed, progress, cancel=cancel)
    _check(cancel)
    if infra is not None:
        infra.wait("consul", cancel)
    _check(cancel)
    if before_start is not None:
        before_start()
    steps = {step.service: step for step in plan.steps}
    needs = {name: [d for d in config.services[name].depends_on if d in steps] for name in steps}
    awaited = {dep for deps in needs.values() for dep in deps}  # others wait for these
    pending = dict(steps)  # not started yet
    starting: dict[str, Future] = {}
    started: dict[str, ServiceState] = {}
    registered: dict[str, str] = {}  # service -> the address Consul has for it
    first_checks: set[str] = set()  # registered with FIRST_CHECK_INTERVAL, not passing yet
    probes: dict[str, Future] = {}
    answered: set[str] = set()  # passed shopctl's own probe of their check
    deadlines: dict[str, float] = {}
    reported: dict[str, str] = {}
    watch = getattr(runtime, "instance", None)
    crash_watch = CrashWatch(clock)
    kept: dict[str, ServiceState] = {}  # no-op steps: their instances, as observed
    for name, step in steps.items():
        current = observed.get(name)
        if step.action is Action.NOOP and current is not None:
            crash_watch.baseline[name] = current.crashes  # old crashes are not this up's
            kept[name] = current

    def report(name: str, message: str) -> None:
        if reported.get(name) != message:
            reported[name] = message
            progress(name, message)

    def register(name: str, state: ServiceState, passes: bool = False) -> None:
        """In Consul, if the runtime gave it an address Consul does not have yet; with a
        short first interval unless Consul `passes` it already."""
        if state.address and registered.get(name) != state.address:
            send_registration(name, state, first=not passes)
            registered[name] = state.address
            report(name, "registered, waiting for checks")

    def send_registration(name: str, state: ServiceState, first: bool) -> None:
        svc = config.services[name]
        if first and svc.health.interval > FIRST_CHECK_INTERVAL:
            svc = svc.model_copy(update={"health": svc.health.model_copy(
                update={"interval": FIRST_CHECK_INTERVAL})})
            first_checks.add(name)
        else:
            first_checks.discard(name)
        registry.register(svc, state, runtime.name, token=service_token(config, name))

    def take_started(name: str, state: ServiceState, passes: bool = False) -> None:
        started[name] = state
        register(name, state, passes)
        report(name, "registered, waiting for checks" if name in registered
               else f"{state.state}, not registered yet (no address)")

    pool = ThreadPoolExecutor(max_workers=max(1, len(steps) + len(awaited)),
                              thread_name_prefix="shopctl-up")
    try:
        while True:
            if cancel is not None and cancel.is_set():
                wait(starting.values(), timeout=CANCEL_WAIT)
                raise Cancelled("up cancelled")
            infra_ready = infra is None or infra.all_ready()  # raises an infra failure
            progressed = False  # something changed that the next look may build on
            passing: set[str] = set()
            health: Mapping[str, object] = {}
            if started or kept:
                health = registry.health()
            looked = set(started)  # what this look at Consul saw started
            for name in started:
                status = getattr(health.get(name), "status", "critical")
                if status != "passing" and name in crash_watch.down:
                    report(name, crash_watch.down[name])
                else:
                    report(name, "healthy" if status == "passing" else f"check {status}")
                if status == "passing":
                    passing.add(name)
                    if name in first_checks:  # Consul passed it: its own interval now
                        send_registration(name, started[name], first=False)
            for name in list(pending):
                blockers = [d for d in needs[name] if d not in passing and d not in answered]
                if blockers:
                    report(name, f"waiting for {', '.join(blockers)}")
                    continue
                step = pending.pop(name)
                grace = config.services[name].health.start_period + timeout_extra
                deadlines[name] = clock() + grace
                if name in kept:  # nothing to start: it runs as it is
                    passes = getattr(health.get(name), "status", None) == "passing"
                    take_started(name, _apply_step(config, runtime, step.action, specs[name],
                                                   kept[name], progress), passes)
                    progressed = True
                    continue
                starting[name] = pool.submit(_replace_step, config, runtime, registry,
                                             step.action, specs[name], observed.get(name),
                                             progress)
            for name, future in list(starting.items()):
                if future.done():
                    del starting[name]
                    take_started(name, future.result())  # a failed start raises here
            if watch is not None:
                for name in [n for n in started if n not in passing]:
                    state = watch(config, name) or _gone(started[name])
                    started[name] = state
                    crash_watch.look(name, state)
                    if state.state == "running":
                        register(name, state)
                failed = crash_watch.failed()
                if failed:
                    raise start_failure_error(
                        config, runtime, registry, {n: started[n] for n in failed}, crash_watch,
                        _others(steps, failed, starting, started, passing | answered),
                    )
            # Probed once Consul was seen not passing them (a kept instance usually passes).
            for name in (awaited & looked) - passing - answered:
                future = probes.pop(name, None)
                if future is None:
                    probes[name] = pool.submit(_probe_passes, config, registry, started[name])
                elif not future.done():
                    probes[name] = future
                elif future.result():
                    answered.add(name)
                    progressed = True  # its dependents may start now
            if infra_ready and not pending and not starting and passing >= steps.keys():
                return dict(health)
            late = [name for name in started if name not in passing and clock() > deadlines[name]]
            if late:
                raise unhealthy_error(config, runtime, health, late)
            if not progressed:
                sleep(POLL_SECONDS)
    finally:
        # A cancelled up does not wait for a start stuck in the runtime.
        pool.shutdown(wait=not (cancel is not None and cancel.is_set()), cancel_futures=True)


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


def _others(
    steps: Mapping[str, object],
    failed: list[str],
    starting: Mapping[str, Future],
    started: Mapping[str, ServiceState],
    healthy: set[str],
) -> dict[str, str]:
    """What each other planned service was doing when `up` gave up: "healthy", "running"
    (not healthy yet), "starting" or "not started"."""
    out = {}
    for name in steps:
        if name in failed:
            continue
        if name in healthy:
            out[name] = "healthy"
        elif name in started:
            out[name] = "running" if started[name].state == "running" else started[name].state
        elif name in starting:
            out[name] = "starting"
        else:
            out[name] = "not started"
    return out


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


def _probe_passes(config: ShopConfig, registry, state: ServiceState) -> bool:
    try:
        return registry.probe(state, config.services[state.service]).status == "passing"
    except Exception:  # noqa: BLE001 - a probe that cannot run says "not yet"; Consul decides
        return False


def _replace_step(config, runtime, registry, action, spec, current, progress) -> ServiceState:
    """A start of a new instance: the old one's entry leaves Consul first. Consul keeps a
    check's status across a registration under the same ID, so the old instance's
    "passing" would otherwise count for the new one before it answers."""
    registry.deregister(spec.service)
    return _apply_step(config, runtime, action, spec, current, progress)


def _apply_step(config, runtime, action, spec, current, progress) -> ServiceState:
    """Start (or keep) one service's instance; the caller registers it in Consul."""
    name = spec.service
    if action is Action.NOOP and current is not None:
        progress(name, "unchanged")
        return current
    progress(name, {Action.CREATE: "starting", Action.RECREATE: "replacing",
                    Action.START: "restarting"}[action])
    return runtime.start_service(config, spec, progress)


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
            f"{config.services[name].health.start_period:.0f}s + grace\n  checks:\n"
            + "\n".join(outputs)
            + "\n  last log lines:\n" + "\n".join(f"    {t}" for t in lines[-15:])
        )
    return OperationFailed(
        "\n".join(parts),
        hint="fix the service and run `shopctl up` again; `shopctl logs SERVICE` shows more",
    )


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
    for name in targets:
        for key, value in config.services[name].config.items():
            path = f"{name}/{key}"
            if path not in present:
                registry.put_kv(path, value if isinstance(value, str) else json.dumps(value))
