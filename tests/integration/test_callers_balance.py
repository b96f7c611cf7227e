"""Callers use healthy instances: a real Consul agent, three real server processes (HTTP,
then gRPC) registered as three instances of one service with real checks, calls through
the saga driver (Participants) and through shopkit (ServiceClient, GrpcCalls), and one
instance SIGKILLed while the calls go on. No call fails, every instance served calls before the
kill, and once Consul marks the dead one critical it is not called any more."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from shopkit.discovery import Discovery, GrpcCalls, ServiceClient

from shopctl import consul_acl
from shopctl.infra.local import consul_argv
from shopctl.registry import Registry
from shopctl.runtime.local import consul_ready, free_port
from shopctl.saga.actions import StepCall, StepFailure
from shopctl.saga.contract import resolve
from shopctl.saga.endpoints import Endpoints, consul_lookup
from shopctl.saga.participants import Participants
from shopctl.saga.protos import ProtoSet
from shopctl.testing import wait_for

pytestmark = pytest.mark.consul

SERVICE = "echo"
CALLERS = 8

SERVER = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1], int(sys.argv[2])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"ok" if self.path == "/health" else json.dumps(
            {"instance": NAME, "key": self.headers.get("Idempotency-Key")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
'''

# A gRPC server of echo.Echo/Ship without generated code: the reply is encoded by hand
# (two short string fields), and the standard health service answers Consul's check.
GRPC_SERVER = r'''
import sys, threading
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NAME, PORT = sys.argv[1], int(sys.argv[2])

def field(number, text):
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data

def ship(request, context):
    key = dict(context.invocation_metadata()).get("idempotency-key", "")
    return field(1, NAME) + field(2, key)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("echo.Echo", {
    "Ship": grpc.unary_unary_rpc_method_handler(ship)})])
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.add_insecure_port(f"127.0.0.1:{PORT}")
server.start()
threading.Event().wait()
'''

PROTO = '''
syntax = "proto3";
package echo;
message SagaCall { string saga_id = 1; string idempotency_key = 2; }
message Reply { string instance = 1; string key = 2; }
service Echo { rpc Ship(SagaCall) returns (Reply); }
'''


@dataclass
class Instance:
    name: str
    port: int
    process: subprocess.Popen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def project(consul_http) -> Iterator[Registry]:
    registry = Registry(consul_http, f"t{uuid.uuid4().hex[:8]}")
    yield registry
    registry.deregister_project()


def _start(tmp_path, project: Registry, kind: str) -> list[Instance]:
    """Three server processes of `kind`, registered as instances of SERVICE (IDs
    PROJECT-echo, PROJECT-echo.2, PROJECT-echo.3), each with its own check every 200 ms."""
    script = tmp_path / f"{kind}_server.py"
    script.write_text(SERVER if kind == "http" else GRPC_SERVER)
    started = []
    for n in (1, 2, 3):
        port = free_port()
        process = subprocess.Popen([sys.executable, str(script), f"i{n}", str(port)])
        started.append(Instance(f"i{n}", port, process))
    try:
        for n, inst in enumerate(started, 1):
            check = ({"HTTP": f"http://{inst.address}/health"} if kind == "http"
                     else {"GRPC": inst.address, "GRPCUseTLS": False})
            project._client.agent.service.register(
                SERVICE, service_id=f"{project.project}-{SERVICE}" + (f".{n}" if n > 1 else ""),
                address="127.0.0.1", port=inst.port, meta={"project": project.project},
                check={**check, "Interval": "200ms", "Timeout": "500ms"})
        wait_for(lambda: len(project.passing(SERVICE)[1]) == 3, 20, "3 passing instances")
    except BaseException:
        _stop(started)
        raise
    return started


def _stop(started: list[Instance]) -> None:
    for inst in started:
        inst.process.kill()
        inst.process.wait()


@pytest.fixture
def instances(tmp_path, project) -> Iterator[list[Instance]]:
    started = _start(tmp_path, project, "http")
    yield started
    _stop(started)


@pytest.fixture
def grpc_instances(tmp_path, project) -> Iterator[list[Instance]]:
    started = _start(tmp_path, project, "grpc")
    yield started
    _stop(started)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Run:
    """What the callers saw: the instance that served each call, failures, and every
    address handed out for a call, with the time."""

    served: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    picks: list[tuple[float, str]] = field(default_factory=list)
    suspects: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def served_between(self, start: float, end: float) -> Counter:
        return Counter(name for t, name in self.served if start <= t < end)


def _watch_picks(balancer, run: Run) -> None:
    """Record every address the (real) resolver hands out, and every one that failed."""
    pick, suspect = balancer.pick, balancer.suspect

    def recorded(service, avoid=()):
        found = pick(service, avoid)
        with run.lock:
            run.picks.append((time.monotonic(), found))
        return found

    def suspected(service, address):
        with run.lock:
            run.suspects.append((time.monotonic(), address))
        suspect(service, address)

    balancer.pick = recorded
    balancer.suspect = suspected


def _drive(call: Callable[[int], str], run: Run, instances: list[Instance],
           project: Registry) -> dict[str, float]:
    """CALLERS threads calling without pause; the victim is SIGKILLed after 1.5 s, calls
    go on until 2 s after Consul stopped listing it. Returns the moments."""
    stop = threading.Event()
    victim = instances[0]
    moments: dict[str, float] = {}

    def caller(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                name = call(n * 1_000_000 + i)
            except Exception as exc:  # noqa: BLE001 -- every failure is the finding
                with run.lock:
                    run.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with run.lock:
                run.served.append((time.monotonic(), name))

    with ThreadPoolExecutor(CALLERS) as pool:
        for n in range(CALLERS):
            pool.submit(caller, n)
        try:
            moments["start"] = time.monotonic()
            time.sleep(1.5)
            moments["kill"] = time.monotonic()
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            moments["killed"] = time.monotonic()
            wait_for(lambda: victim.port not in {i.port for i in project.passing(SERVICE)[1]},
                     15, "Consul marks the dead instance critical")
            moments["critical"] = time.monotonic()
            time.sleep(2.0)
            moments["end"] = time.monotonic()
        finally:
            stop.set()
    return moments


def _assert_healthy_spread(run: Run, moments: dict[str, float], instances: list[Instance],
                           ttl: float) -> None:
    victim = instances[0]
    before = run.served_between(moments["start"], moments["killed"])
    after = run.served_between(moments["killed"], moments["end"])
    # After Consul's next answer (one TTL), the dead address is never handed out again.
    settled = moments["critical"] + ttl + 0.1
    late_picks = Counter(a for t, a in run.picks if t >= settled)
    # Calls the dead instance failed after the kill: each went on to another at once.
    to_the_dead = sum(1 for t, a in run.suspects if t >= moments["kill"]
                      and a == victim.address)
    print(f"served before the kill {dict(before)}, after {dict(after)}; "
          f"kill -> critical {moments['critical'] - moments['killed']:.2f}s; "
          f"calls the dead instance failed, then served elsewhere: {to_the_dead}; "
          f"{len(run.served) / (moments['end'] - moments['start']):.0f} calls/s")

    assert run.failures == []
    assert set(before) == {"i1", "i2", "i3"} and min(before.values()) > 10, before
    assert victim.name not in run.served_between(moments["killed"] + 0.05, moments["end"])
    assert set(after) >= {"i2", "i3"}
    assert late_picks and victim.address not in late_picks, late_picks
    assert to_the_dead >= 1  # the failover was exercised, not just Consul's view


def test_saga_calls_spread_over_passing_instances_and_survive_one_killed(project, instances):
    declared = {SERVICE: ["127.0.0.1:1"]}  # shop.yaml's port: never used while Consul answers
    endpoints = Endpoints(declared, None, consul_lookup(project))
    resolver = endpoints.resolver
    run = Run()
    _watch_picks(resolver, run)
    spec = resolve(SERVICE, "fastapi", "ship", None)
    participants = Participants(endpoints, lookup=lambda call: spec)

    def call(n: int) -> str:
        step = StepCall(saga_id=f"s{n}", step="ship", phase="forward", timeout=5.0)
        try:
            result = participants.run(f"{SERVICE}.ship", step)
        except StepFailure as exc:
            raise AssertionError(f"{exc.code}: {exc}") from exc
        assert result["key"] == step.key
        return result["instance"]

    try:
        moments = _drive(call, run, instances, project)
    finally:
        participants.close()
    _assert_healthy_spread(run, moments, instances, resolver.ttl)


def test_shopkit_client_spreads_calls_and_survives_one_killed(project, instances):
    discovery = Discovery(project.consul_http, project.project)
    run = Run()
    _watch_picks(discovery, run)

    with ServiceClient(discovery, timeout=5.0) as http:
        def call(n: int) -> str:
            response = http.post(SERVICE, "/saga/ship", json={"n": n},
                                 idempotency_key=f"k{n}")
            assert response.status_code == 200, response.text
            return response.json()["instance"]

        moments = _drive(call, run, instances, project)
    _assert_healthy_spread(run, moments, instances, discovery.ttl)


def test_saga_grpc_calls_spread_and_survive_one_killed(tmp_path, project, grpc_instances):
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "echo.proto").write_text(PROTO)
    declared = {SERVICE: ["127.0.0.1:1"]}
    endpoints = Endpoints(declared, None, consul_lookup(project))
    resolver = endpoints.resolver
    run = Run()
    _watch_picks(resolver, run)
    spec = resolve(SERVICE, "grpc", "ship", None)
    participants = Participants(endpoints, tmp_path / "protos", lookup=lambda call: spec)

    def call(n: int) -> str:
        step = StepCall(saga_id=f"s{n}", step="ship", phase="forward", timeout=5.0)
        try:
            result = participants.run(f"{SERVICE}.ship", step)
        except StepFailure as exc:
            raise AssertionError(f"{exc.code}: {exc}") from exc
        assert result["key"] == step.key
        return result["instance"]

    try:
        moments = _drive(call, run, grpc_instances, project)
    finally:
        participants.close()
    _assert_healthy_spread(run, moments, grpc_instances, resolver.ttl)


def test_shopkit_grpc_calls_spread_and_survive_one_killed(tmp_path, project, grpc_instances):
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "echo.proto").write_text(PROTO)
    method = ProtoSet(tmp_path / "protos").find("Ship", SERVICE)
    discovery = Discovery(project.consul_http, project.project)
    run = Run()
    _watch_picks(discovery, run)
    calls = GrpcCalls(discovery)

    def call(n: int) -> str:
        def ship(channel):
            stub = channel.unary_unary(method.full_name,
                                       request_serializer=method.input.SerializeToString,
                                       response_deserializer=method.output.FromString)
            return stub(method.input(saga_id=str(n)), timeout=5.0,
                        metadata=[("idempotency-key", f"k{n}")])

        reply = calls.call(SERVICE, ship)
        assert reply.key == f"k{n}"
        return reply.instance

    try:
        moments = _drive(call, run, grpc_instances, project)
    finally:
        calls.close()
    _assert_healthy_spread(run, moments, grpc_instances, discovery.ttl)


@pytest.fixture(scope="module")
def acl_consul(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A private Consul agent with shopctl's ACL config (default deny); yields its HTTP
    address and the management token."""
    binary = shutil.which("consul")
    if binary is None:
        pytest.skip("consul binary not installed (make system)")
    data = tmp_path_factory.mktemp("consul-acl")
    management = str(uuid.uuid4())
    (data / "acl.json").write_text(consul_acl.agent_config(management))
    port = free_port()
    argv = [*consul_argv(binary, f"acl-{port}", port, data, free_port(), free_port()),
            "-config-file", str(data / "acl.json")]
    with open(data / "agent.log", "wb") as log:
        agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: consul_ready(port), 30, "consul leader")
        yield f"http://127.0.0.1:{port}", management
    finally:
        agent.terminate()
        agent.wait(10)


def test_a_services_own_token_finds_what_it_depends_on_and_nothing_else(acl_consul):
    """With default-deny ACLs, discovery reads the health API with the service's own
    token: the policy shopctl makes lets it find its depends_on, and no other service."""
    consul_http, management = acl_consul
    project = f"t{uuid.uuid4().hex[:8]}"
    tokens = {name: str(uuid.uuid4()) for name in ("caller", "loner", "callee")}
    with consul_acl.Acl(consul_http, management) as acl:
        acl.wait_ready()
        for name, calls in (("caller", ["callee"]), ("loner", []), ("callee", [])):
            acl.ensure_token(name, tokens[name],
                             consul_acl.service_rules(project, name, calls), project)
    registry = Registry(consul_http, project, token=management)
    for n, port in ((1, 4001), (2, 4002)):  # checkless: passing as registered
        registry._client.agent.service.register(
            "callee", service_id=f"{project}-callee" + (f".{n}" if n > 1 else ""),
            address="127.0.0.1", port=port, meta={"project": project},
            token=tokens["callee"])
    try:
        wait_for(lambda: len(registry.passing("callee")[1]) == 2, 10, "2 instances")
        caller = Discovery(consul_http, project, token=tokens["caller"])
        loner = Discovery(consul_http, project, token=tokens["loner"])
        anonymous = Discovery(consul_http, project)

        assert caller.instances("callee") == ("127.0.0.1:4001", "127.0.0.1:4002")
        assert loner.instances("callee") == ()
        assert anonymous.instances("callee") == ()
    finally:
        registry.deregister_project()
