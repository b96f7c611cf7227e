"""`shopctl dev`: the inner loop. Watch the services' sources and serve each change.

What is watched, per service: its folder, the project's own shopkit (every service
imports it) and `protos/` (gRPC services and services with a protogen.py). The rules of
shopctl.ignore decide what is source, as they do for the code hash and the image.

A batch of changes (debounced) is sorted per service:
- source files: the runtime copies them into the running instance and restarts its
  process in place (docker: put_archive + restart of the same container; local: a new
  process on the project's own files). No build, no new container.
- requirements.txt, the kit's pyproject.toml, a .proto, or protogen.py: what is built
  from them changed (dependency layer, stubs), so the service goes through `up`, which
  rebuilds and replaces it.
Either way the reload ends when the instance passes its check (the same check Consul
runs) and Consul passes it (a Consul that saw the restart is asked to check it every
second until it passes, not once an interval); a crash at start or a failing check
ends it as failed, with the end of the service's log. Other services are never
touched. The next good save recovers a broken service.

A container that holds synced code keeps the label hash of its image's code, so the
next `shopctl up` sees the code changed and rebuilds and replaces it: image and code
agree again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shopctl.bundle import kit_for
from shopctl.ignore import ignored

DEBOUNCE_MS = 200
LOG_TAIL = 12
CONSUL_GRACE = 15.0  # seconds Consul gets to pass a service its own probe passes
REBUILD_FILES = frozenset({"requirements.txt", "protogen.py", "pyproject.toml"})


@dataclass(frozen=True)
class Root:
    """A watched folder: `label` names its files for Runtime.reload_service (app,
    shopkit) or says what they are (protos); `services` are those it feeds."""

    path: Path
    label: str
    services: tuple[str, ...]


@dataclass
class Pending:
    """What one service must take from a batch of changes."""

    files: dict[str, Path | None] = field(default_factory=dict)  # name -> file (None: gone)
    shown: list[str] = field(default_factory=list)  # as the user knows them
    rebuild: bool = False


@dataclass(frozen=True)
class Reload:
    service: str
    files: tuple[str, ...]
    how: str  # restarted | rebuilt
    seconds: float
    ok: bool
    error: str | None = None
    log_tail: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"service": self.service, "files": list(self.files), "how": self.how,
                "seconds": round(self.seconds, 2), "ok": self.ok, "error": self.error,
                "log_tail": list(self.log_tail)}


def watch_roots(config, services: list[str]) -> list[Root]:
    roots = [Root((config.root / config.services[name].path).resolve(), "app", (name,))
             for name in services]
    kit = kit_for(config.root)
    if kit.source == "project" and kit.package.is_dir():  # the shipped kit is not edited
        roots.append(Root(kit.root.resolve(), "kit", tuple(services)))
    protos = (config.root / "protos").resolve()
    uses_protos = tuple(name for name in services if config.services[name].kind == "grpc"
                        or (config.root / config.services[name].path / "protogen.py").is_file())
    if uses_protos and protos.is_dir():
        roots.append(Root(protos, "protos", uses_protos))
    return roots


def sort_changes(roots: list[Root], paths: list[tuple[Path, bool]]) -> dict[str, Pending]:
    """(path, exists) changes -> what each service must take. Paths outside every root,
    and those shopctl.ignore rules out, are dropped."""
    pending: dict[str, Pending] = {}
    for path, exists in paths:
        for root in roots:
            if path != root.path and root.path not in path.parents:
                continue
            relative = path.relative_to(root.path) if path != root.path else Path(path.name)
            if ignored(relative) or (exists and not path.is_file()):
                break
            if root.label == "kit":  # the package is code; its pyproject.toml builds
                if relative.parts[0] != "shopkit" and relative.name != "pyproject.toml":
                    break  # the kit's tests, README: nothing a service runs
                name = relative.as_posix()
            else:
                name = f"{root.label}/{relative.as_posix()}"
            rebuild = (root.label == "protos" or relative.name in REBUILD_FILES
                       or relative.suffix == ".proto")
            for service in root.services:
                todo = pending.setdefault(service, Pending())
                todo.shown.append(relative.as_posix() if root.label == "app" else name)
                if rebuild:
                    todo.rebuild = True
                else:
                    todo.files[name] = path if exists else None
            break
    return pending


class DevLoop:
    """Serves changes to the services of one shop until `stop` is set; each finished
    reload goes to `on_reload` (called from worker threads)."""

    def __init__(self, shop, services: list[str], on_reload: Callable[[Reload], None]):
        self.shop = shop
        self.config = shop.config
        self.services = services
        self.on_reload = on_reload
        self.roots = watch_roots(self.config, services)
        self._locks = {name: threading.Lock() for name in services}

    def run(self, stop: threading.Event, ready: Callable[[], None] = lambda: None) -> None:
        from watchfiles import Change, watch

        paths = [root.path for root in self.roots if root.path.exists()]
        with ThreadPoolExecutor(max_workers=max(1, len(self.services)),
                                thread_name_prefix="shopctl-dev") as pool:
            ready()
            for batch in watch(*paths, debounce=DEBOUNCE_MS, step=50, stop_event=stop,
                               recursive=True, raise_interrupt=False, yield_on_timeout=False):
                kinds: dict[str, set] = {}
                for change, path in batch:
                    kinds.setdefault(path, set()).add(change)
                # A file made and removed within the batch (an editor's or sed's temp
                # file) is no change; otherwise a file's state now is what counts.
                changes = [(Path(p), Path(p).exists()) for p, seen in kinds.items()
                           if Path(p).exists() or Change.added not in seen]
                for service, todo in sort_changes(self.roots, changes).items():
                    pool.submit(self._serve, service, todo)

    def _serve(self, service: str, todo: Pending) -> None:
        with self._locks[service]:  # one reload of a service at a time, in order
            try:
                result = self.reload(service, todo)
            except Exception as exc:  # noqa: BLE001 - reported on the service's line
                result = Reload(service, tuple(todo.shown), "failed", 0.0, False,
                                f"{type(exc).__name__}: {exc}", self._tail(service))
            self.on_reload(result)

    def reload(self, service: str, todo: Pending) -> Reload:
        started = time.monotonic()
        shown = tuple(dict.fromkeys(todo.shown))
        if todo.rebuild:
            from shopctl.errors import ShopctlError

            try:
                self.shop.up([service])
            except ShopctlError as exc:
                return Reload(service, shown, "rebuilt", time.monotonic() - started, False,
                              exc.message, self._tail(service))
            return Reload(service, shown, "rebuilt", time.monotonic() - started, True)
        # One instance at a time, each healthy again before the next: the others serve
        # meanwhile, and a bad save stops at the first.
        ok, error = True, None
        for spec in self.shop.launch_specs([service]).values():
            state = self.shop.runtime.reload_service(self.config, spec, list(todo.files.items()))
            ok, error = self._await_healthy(spec.instance, state)
            if not ok:
                break
        return Reload(service, shown, "restarted", time.monotonic() - started, ok, error,
                      () if ok else self._tail(service))

    def _await_healthy(self, instance: str, state) -> tuple[bool, str | None]:
        from shopctl.registry import probe

        svc = self.config.services[state.service]
        runtime = self.shop.runtime
        within = max(svc.health.start_period, 10.0)
        deadline = time.monotonic() + within
        while True:
            now = runtime.instance(self.config, instance)
            if now is None or now.state == "exited":
                code = "" if now is None or now.exit_code is None else f" (exit {now.exit_code})"
                return False, f"stopped at start{code}"
            if now.restarts > state.restarts or now.state == "restarting":
                code = "" if now.exit_code is None else f" (exit code {now.exit_code})"
                return False, f"crashed at start{code}"
            if now.state == "running" and probe(now, svc).status == "passing":
                break
            if time.monotonic() > deadline:
                return False, f"its check did not pass within {within:.0f}s"
            time.sleep(0.05)
        if not self.config.infra.consul.enabled:
            return True, None
        return self._await_consul(instance, state, now)

    def _await_consul(self, instance: str, state, now) -> tuple[bool, str | None]:
        """Until Consul passes the instance, which answers its check (`now`; `state`:
        as the reload left it). Consul runs its check on its own schedule: one that
        caught the process down while it restarted would pass it again only a whole
        interval later (5 s by default), so the instance is checked at most
        FIRST_CHECK_INTERVAL apart until Consul passes it, then at its own interval
        again, as `up` does for a new instance."""
        from shopctl import consul_acl
        from shopctl.orchestrate import register_instance

        svc = self.config.services[state.service]
        registry = consul_acl.registry(self.config)
        runtime = self.shop.runtime.name
        moved = now.address != state.address or now.port != state.port
        passed = self._consul_passes(registry, instance)
        short = False
        if moved or not passed:
            short = register_instance(self.config, registry, runtime, now, first=not passed)
        limit = time.monotonic() + CONSUL_GRACE + svc.health.interval
        while not passed and time.monotonic() < limit:
            time.sleep(0.1)
            passed = self._consul_passes(registry, instance)
        if short:
            register_instance(self.config, registry, runtime, now, first=False)
        return (True, None) if passed else (False, "it answers, but Consul does not pass it")

    @staticmethod
    def _consul_passes(registry, instance: str) -> bool:
        health = registry.health().get(instance)
        return health is not None and health.status == "passing"

    def _tail(self, service: str) -> tuple[str, ...]:
        try:
            lines = self.shop.runtime.logs(self.config, [service], False, LOG_TAIL)
            return tuple(line.text for line in lines)
        except Exception:  # noqa: BLE001 - the log is a courtesy on a failure line
            return ()
