"""Test helpers for shop services: run a service's main.py as a real process, keep
each service's flat modules (app.py, store.py, ...) apart when many services' tests share
one interpreter, and fuzz a running HTTP service against its OpenAPI document.

Imported by tests only; it needs pytest and httpx (and schemathesis for fuzz_openapi),
which services do not.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import pytest


def load_own_modules(service_dir: Path, names: tuple[str, ...]) -> dict[str, ModuleType]:
    """Import a service's top-level modules by name, from its folder only.

    Every service has an app.py or store.py, and `import app` in one interpreter can mean
    one file only. A service's conftest imports its modules once with this, then puts
    them back into sys.modules before each of its test modules is collected (in its
    pytest_pycollect_makemodule hook).
    """
    for name in names:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(service_dir))
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(service_dir))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A service's main.py running as a real process on a free local port."""

    def __init__(self, service_dir: Path, workdir: Path, extra_env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{service_dir.name}-{self.port}.log"
        # No Consul in tests: the service must run on the environment alone.
        env = {k: v for k, v in os.environ.items() if k != "CONSUL_HTTP_ADDR"}
        env.update(SHOP_HOST="127.0.0.1", SHOP_DATA_DIR=str(workdir / service_dir.name))
        env.update(extra_env, SHOP_PORT=str(self.port))
        self.data_dir = Path(env["SHOP_DATA_DIR"])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "main.py"],
                cwd=service_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> httpx.Response:
        """Poll GET /health until it answers 200; fail with the logs if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"service exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                resp = httpx.get(f"{self.url}/health", timeout=2.0)
                if resp.status_code == 200:
                    return resp
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"service not healthy after {timeout}s:\n{self.logs()}")

    def terminate(self, timeout: float = 15.0) -> int:
        """Send SIGTERM and return the exit code (killing it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"no exit within {timeout}s of SIGTERM:\n{self.logs()}")


def service_starter(workdir: Path, default_dir: Path) -> Iterator:
    """Body of a `start_service` fixture: yields start(service_dir=default_dir, **env)
    -> a healthy ServiceProcess, and kills whatever is still running afterwards."""
    started: list[ServiceProcess] = []

    def start(service_dir: Path = default_dir, **env: str) -> ServiceProcess:
        service = ServiceProcess(service_dir, workdir, env)
        started.append(service)
        service.wait_healthy()
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()


def post_json_bytes(url: str, raw: bytes, chunked: bool = False,
                    content_type: str = "application/json",
                    headers: dict[str, str] | None = None) -> httpx.Response:
    """POST `raw` as it is: with a Content-Length, or `chunked` in 64 KiB pieces with
    none (how a body limit that trusts Content-Length alone is got round). `headers`:
    more to send (a service credential, say)."""
    content = iter([raw[i:i + 65536] for i in range(0, len(raw), 65536)]) if chunked else raw
    return httpx.post(url, content=content, timeout=30,
                      headers={"Content-Type": content_type, **(headers or {})})


@contextmanager
def running_service(workdir: Path, service_dir: Path, **env: str) -> Iterator[ServiceProcess]:
    """One healthy service process for the with-block (a module-scoped fixture's, say):
    cheaper than a process a test when the tests do not disturb each other."""
    starter = service_starter(workdir, service_dir)
    start = next(starter)
    try:
        yield start(**env)
    finally:
        next(starter, None)


# schemathesis' own list of answers that accept a schema-valid request (5xx included:
# its not_a_server_error check reports those).
POSITIVE_ANSWERS = ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx")


@dataclass
class FuzzReport:
    """What `fuzz_openapi` did: cases sent, and each distinct failure (operation,
    schemathesis code and title) with the first response that showed it."""

    operations: int = 0
    examples: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.examples} cases on {self.operations} operations in "
                 f"{self.seconds:.1f} s, {len(self.failures)} distinct failures"]
        lines += [f"\n== {key}\n{detail}" for key, detail in self.failures.items()]
        return "\n".join(lines)


def fuzz_openapi(base_url: str, *, max_examples: int = 50,
                 headers: dict[str, str] | None = None,
                 fits: Callable[[object], bool] | None = None,
                 accepted: tuple[int, ...] = ()) -> FuzzReport:
    """Schema-based fuzzing of a running HTTP service with schemathesis: for every
    operation of its /openapi.json, up to `max_examples` requests that fit the schema
    and up to as many that do not, each response run through all of schemathesis'
    checks (no 5xx, status codes, content types, headers and bodies as documented,
    schema-valid requests accepted, schema-invalid ones refused).

    Deterministic (a fixed seed, no example database); `headers` go with every request
    (a valid bearer token, say). Operations are fuzzed in the schema's order. `fits`,
    for rules JSON Schema cannot express (each SKU at most once in a list): a
    schema-valid case for which fits(case) is false is not sent. `accepted`: more
    statuses that answer a schema-valid request as the API intends (schemathesis takes
    2xx, 3xx, 401, 403, 404, 409 and 429; payments adds 402, a declined card).
    """
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, reject, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.core.failures import Failure

    started = time.monotonic()
    report = FuzzReport()
    accepting = [*POSITIVE_ANSWERS, *(str(status) for status in accepted)]
    # An explicit configuration: none is looked up in the working directory.
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": accepting}}})
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)

    def record(label: str, error: BaseException, case, response) -> None:
        found = error.exceptions if isinstance(error, BaseExceptionGroup) else (error,)
        sent = case.as_curl_command(headers=headers)
        answer = "no response" if response is None else (
            f"{response.status_code} {response.text[:500]}")
        for failure in found:
            if isinstance(failure, Failure):
                key = f"{label}: {failure.code} {failure.title}"
            else:
                key = f"{label}: {type(failure).__name__} {failure}"
            report.failures.setdefault(key, f"{sent}\n-> {answer}")

    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            label = f"{operation.label} ({mode.value})"

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=max_examples, deadline=None, database=None,
                      derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def probe(case):
                if mode.is_positive and fits is not None and not fits(case):  # noqa: B023
                    reject()
                report.examples += 1
                response = None
                try:
                    response = case.call(base_url=base_url, headers=headers)
                    # The checks that send more requests (unsupported_method, ignored_auth,
                    # ...) send them where this one went.
                    case.validate_response(response, headers=headers, transport_kwargs={
                        "base_url": base_url, "headers": dict(headers or {})})
                except (AssertionError, BaseExceptionGroup, OSError) as error:
                    record(label, error, case, response)  # noqa: B023 (runs in this iteration)

            try:
                probe()
            except Unsatisfiable:  # nothing of this mode fits, e.g. negative for GET /health
                pass
    report.seconds = time.monotonic() - started
    return report


# What a forged, stolen or misdirected credential gets: 401 / UNAUTHENTICATED /
# Unauthenticated, or 403 / PERMISSION_DENIED / PermissionDenied (shopkit.service_auth).
UNAUTHENTICATED, DENIED = "unauthenticated", "denied"


def credential_probes(key: str, service: str, scope: str,
                      user_secret: str = "the-users-token-secret-of-this-shop-0123456789"
                      ) -> dict[str, tuple[str | None, str]]:
    """Credentials a protected operation of `service` needing `scope` must refuse, by
    name: (token or None for none at all, UNAUTHENTICATED or DENIED). `key` is the
    service key the service checks with; `user_secret` the users' token secret."""
    import jwt

    from shopkit.service_auth import ADMIN, MAX_TTL, TOKEN_TYPE, mint

    now = time.time()
    access = {"sub": "1", "type": "access", "iat": int(now), "exp": int(now) + 300}
    claims = {"type": TOKEN_TYPE, "iss": "probe", "aud": service, "scope": [scope],
              "iat": int(now), "exp": int(now) + 60}
    other_scope = "some_other_action" if scope == ADMIN else ADMIN
    return {
        "none": (None, UNAUTHENTICATED),
        "garbage": ("not-a-jwt", UNAUTHENTICATED),
        "expired": (mint(key, "probe", service, scope, 60, now=now - 120), UNAUTHENTICATED),
        "another key": (mint("another-key-" + key, "probe", service, scope), UNAUTHENTICATED),
        "a user's access token": (jwt.encode(access, user_secret, "HS256"), UNAUTHENTICATED),
        "an access token on the service key": (jwt.encode(access, key, "HS256"),
                                               UNAUTHENTICATED),
        "alg none": (jwt.encode(claims, None, "none"), UNAUTHENTICATED),
        "no expiry": (jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key,
                                 "HS256"), UNAUTHENTICATED),
        "lifetime over the maximum": (mint(key, "probe", service, scope, MAX_TTL + 60),
                                      UNAUTHENTICATED),
        "another audience": (mint(key, "probe", service + "-other", scope), DENIED),
        "another scope": (mint(key, "probe", service, other_scope), DENIED),
    }
