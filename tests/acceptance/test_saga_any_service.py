"""A saga declared only in shop.yaml across four freshly scaffolded services, one of each
kind, with no mapping at all (each kind's convention), brought up by `shopctl up` on the
local runtime with a real Consul and RabbitMQ, and driven through the CLI.

Every outcome is checked through each service's own state: GET /saga/holds/KEY (HTTP),
get_hold over Nameko RPC, GetHold over gRPC through the service's own proto, each with
a service credential signed with the project's key, as the saga driver's calls are;
without one, each kind refuses.
"""

from __future__ import annotations

import json
import shutil

import grpc
import httpx
import pytest

from shopctl.config import load_config
from shopctl.nameko_rpc import NamekoRpc, RemoteError
from shopctl.saga.endpoints import discover
from shopctl.saga.engine import CRASH_ENV
from shopctl.saga.protos import ProtoSet
from shopctl.service_auth import HEADER, METADATA_KEY, Credentials
from shopctl.testing import free_ports
from tests.acceptance.conftest import REPO
from tests.acceptance.test_shop_roundtrip import make_project, shopctl_in

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]

# One service of each kind, in saga order; names with hyphens on purpose.
SERVICES = {"gift-wrap": "fastapi", "stamps": "nameko", "crate-store": "grpc",
            "label-desk": "flask"}
STEPS = [f"hold_{name.replace('-', '_')}" for name in SERVICES]
SAGA = "\n".join(["  tour:", "    steps:", *(
    f"      - {{name: {step}, call: {name}.hold, compensate: {name}.release}}"
    for step, name in zip(STEPS, SERVICES, strict=True))]) + "\n"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root, _ = make_project(tmp_path_factory.mktemp("any-service"))
    shutil.copytree(REPO / "templates", root / "templates",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for (name, kind), port in zip(SERVICES.items(), free_ports(len(SERVICES)), strict=True):
        made = shopctl_in(root, "scaffold", "new-service", name, "--kind", kind,
                          "--port", str(port))
        assert made.returncode == 0, made.stderr
    with open(root / "shop.yaml", "a") as shop_yaml:  # sagas: is the file's last section
        shop_yaml.write(SAGA)
    try:
        up = shopctl_in(root, "up", *SERVICES, "--runtime", "local")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield root, discover(load_config(root / "shop.yaml"))
    finally:
        down = shopctl_in(root, "down", "--volumes", "--runtime", "local", timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]


def hold_state(root, endpoints, service: str, key: str) -> str | None:
    """What the service itself says of the hold under `key`: held, released or None."""
    kind = SERVICES[service]
    signer = Credentials.for_project(root, "tests")
    if kind in ("flask", "fastapi"):
        resp = httpx.get(f"{endpoints.base_url(service)}/saga/holds/{key}", timeout=5,
                         headers={HEADER: signer.token(service, "get_hold")})
        return None if resp.status_code == 404 else resp.json()["state"]
    if kind == "nameko":
        with NamekoRpc(endpoints.amqp, timeout=10, credentials=signer) as rpc:
            found = rpc.call(service, "get_hold", key)
        return None if found is None else found["state"]
    method = ProtoSet(root / "protos").find("GetHold", service)
    with grpc.insecure_channel(endpoints.address(service)) as channel:
        call = channel.unary_unary(method.full_name, method.input.SerializeToString,
                                   method.output.FromString)
        metadata = [(METADATA_KEY, signer.token(service, "get_hold"))]
        try:
            return call(method.input(key=key), timeout=5, metadata=metadata).state
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return None


def states(root, endpoints, saga_id: str) -> list[str | None]:
    return [hold_state(root, endpoints, name, f"saga-{saga_id}-{step}")
            for name, step in zip(SERVICES, STEPS, strict=True)]


def saga(root, *args: str, env: dict | None = None) -> tuple[int, dict | None]:
    from tests.acceptance.conftest import run_shopctl

    done = run_shopctl("saga", *args, "--json", cwd=root, env=env, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


def refusal(root, endpoints, service: str) -> str:
    """What the service answers a hold without a service credential."""
    kind = SERVICES[service]
    if kind in ("flask", "fastapi"):
        return str(httpx.post(f"{endpoints.base_url(service)}/saga/hold", timeout=5,
                              json={"key": "k-anonymous"}).status_code)
    if kind == "nameko":
        with NamekoRpc(endpoints.amqp, timeout=10) as rpc:
            try:
                rpc.call(service, "hold", {"key": "k-anonymous"})
            except RemoteError as exc:
                return exc.exc_type
        return "accepted"
    method = ProtoSet(root / "protos").find("Hold", service)
    with grpc.insecure_channel(endpoints.address(service)) as channel:
        call = channel.unary_unary(method.full_name, method.input.SerializeToString,
                                   method.output.FromString)
        try:
            call(method.input(key="k-anonymous"), timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name
    return "accepted"


def test_each_scaffolded_kind_refuses_a_call_without_a_credential(shop):
    root, endpoints = shop
    answers = {name: refusal(root, endpoints, name) for name in SERVICES}
    assert answers == {"gift-wrap": "401", "stamps": "Unauthenticated",
                       "crate-store": "UNAUTHENTICATED", "label-desk": "401"}
    assert all(hold_state(root, endpoints, name, "k-anonymous") is None for name in SERVICES)


def test_check_resolves_every_kind_by_its_convention(shop):
    root, _ = shop
    code, report = saga(root, "check", "tour")
    assert code == 0 and report["ok"], report
    assert {c["kind"] for c in report["calls"]} == set(SERVICES.values())
    assert not any(c["declared"] for c in report["calls"])


def test_the_saga_completes_across_the_four_kinds(shop):
    root, endpoints = shop
    code, run = saga(root, "run", "tour", "-i", "note=first")
    assert (code, run["status"]) == (0, "completed"), run.get("error")
    assert states(root, endpoints, run["id"]) == ["held"] * 4
    context = [e["result"] for e in run["events"] if e["state"] == "succeeded"]
    merged = {k: v for result in context for k, v in result.items()}
    for name in SERVICES:  # each service's result under its own keys, none overwritten
        assert merged[f"{name.replace('-', '_')}_hold_state"] == "held"
    code, shown = saga(root, "show", run["id"])
    assert [e["event_type"] for e in shown["outcome_events"]] == ["tour.completed"]


@pytest.mark.parametrize("index", range(len(STEPS)))
def test_fail_at_each_step_compensates_exactly_the_steps_that_ran(shop, index):
    root, endpoints = shop
    code, run = saga(root, "run", "tour", "--fail-at", STEPS[index])
    assert (code, run["status"]) == (1, "compensated")
    assert states(root, endpoints, run["id"]) == ["released"] * index + [None] * (4 - index)


@pytest.mark.parametrize("refusing", list(SERVICES))
def test_a_real_refusal_of_any_kind_is_not_retried_and_compensates(shop, refusing):
    root, endpoints = shop
    code, run = saga(root, "run", "tour", "-i", f"refuse={refusing}")
    assert (code, run["status"]) == (1, "compensated"), run.get("error")
    index = list(SERVICES).index(refusing)
    assert states(root, endpoints, run["id"]) == ["released"] * index + [None] * (4 - index)
    attempts = [e for e in run["events"] if e["step"] == STEPS[index] and e["state"] == "started"]
    assert len(attempts) == 1  # refused for good: no retries


@pytest.mark.parametrize("boundary", [
    f"{STEPS[0]}:started", f"{STEPS[1]}:succeeded", f"{STEPS[2]}:started",
    f"{STEPS[3]}:started", f"{STEPS[3]}:succeeded",
])
def test_sigkill_of_the_driver_then_resume_all_ends_consistent(shop, boundary):
    root, endpoints = shop
    code, _ = saga(root, "run", "tour", "-i", "note=crash", env={CRASH_ENV: boundary})
    assert code == -9
    _, listed = saga(root, "list", "--status", "running")
    (crashed,) = listed
    code, resumed = saga(root, "resume", "--all")
    assert code == 0 and [s["id"] for s in resumed] == [crashed["id"]]
    assert resumed[0]["status"] == "completed"  # no failure: forward from where it stopped
    assert states(root, endpoints, crashed["id"]) == ["held"] * 4


def test_sigkill_while_compensating_then_resume_all_ends_consistent(shop):
    root, endpoints = shop
    boundary = f"{STEPS[1]}:compensated"
    code, _ = saga(root, "run", "tour", "--fail-at", STEPS[3], env={CRASH_ENV: boundary})
    assert code == -9
    _, listed = saga(root, "list", "--status", "compensating")
    (crashed,) = listed
    code, resumed = saga(root, "resume", "--all")
    assert (code, resumed[0]["status"]) == (1, "compensated")
    assert states(root, endpoints, crashed["id"]) == ["released"] * 3 + [None]


def test_the_worker_finishes_a_saga_whose_driver_died_without_being_asked(shop):
    root, endpoints = shop
    code, _ = saga(root, "run", "tour", "-i", "note=worker", env={CRASH_ENV: f"{STEPS[2]}:started"})
    assert code == -9
    _, (crashed,) = saga(root, "list", "--status", "running")
    from tests.acceptance.conftest import run_shopctl

    done = run_shopctl("saga", "worker", "--once", "--json", cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [json.loads(x) for x in done.stdout.splitlines() if x.strip().startswith("{")]
    assert (line["action"], line["id"], line["status"]) == ("resumed", crashed["id"],
                                                            "completed")
    assert states(root, endpoints, crashed["id"]) == ["held"] * 4


# -- the saga worker run by `up` (last in this module: it enables the worker) ------------

def cli(root, *args: str, env: dict | None = None):
    from tests.acceptance.conftest import run_shopctl

    return run_shopctl(*args, cwd=root, env=env, timeout=300)


def shopctl_json(root, *args: str) -> tuple[int, dict]:
    done = cli(root, *args, "--json")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def set_worker(root, settings: str) -> None:
    """Replace (or add) the top-level saga_worker section of shop.yaml."""
    text = (root / "shop.yaml").read_text()
    text = text.split("\nsaga_worker:")[0].rstrip("\n") + "\n"
    (root / "shop.yaml").write_text(text + f"saga_worker: {settings}\n")


def wait_for(predicate, seconds: float = 30.0):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds}s")


def pid_runs(pid: int) -> bool:
    from shopctl.saga import owner

    return owner._state(pid) not in (None, "Z", "X")


def test_up_runs_the_worker_which_finishes_orphans_and_status_shows_it(shop):
    root, endpoints = shop
    set_worker(root, "{enabled: true, interval: 500ms, retry_stuck_after: 2s}")
    code, up = shopctl_json(root, "up", *SERVICES, "--runtime", "local")
    assert code == 0 and up["saga_worker"]["action"] == "started", up["saga_worker"]
    pid = up["saga_worker"]["pid"]
    assert pid_runs(pid)
    # the worker's settings do not touch the services
    assert {step["action"] for step in up["plan"]} == {"noop"}

    before = {s["id"] for s in saga(root, "list")[1]}
    code, _ = saga(root, "run", "tour", "-i", "note=unit", env={CRASH_ENV: f"{STEPS[1]}:started"})
    assert code == -9
    (crashed,) = [s for s in saga(root, "list")[1] if s["id"] not in before]
    # Nobody types a command: the worker takes the orphan over and finishes it.
    wait_for(lambda: saga(root, "show", crashed["id"])[1]["status"] == "completed")
    assert states(root, endpoints, crashed["id"]) == ["held"] * 4

    code, status = shopctl_json(root, "status", "--runtime", "local")
    worker = status["saga_worker"]
    # (status exits 1 here for the project's other services, which this module never starts)
    assert (worker["state"], worker["pid"], worker["managed"]) == ("running", pid, True)
    assert worker["resumed"] >= 1 and worker["last_pass_ago"] < 5
    shown = cli(root, "status", "--runtime", "local", env={"COLUMNS": "80"})
    assert f"saga worker: running (pid {pid}" in shown.stdout

    code, again = shopctl_json(root, "up", *SERVICES, "--runtime", "local")
    assert (again["saga_worker"]["action"], again["saga_worker"]["pid"]) == ("kept", pid)


def test_a_dead_worker_shows_in_status_and_up_brings_it_back(shop):
    import os
    import signal

    root, _ = shop
    _, status = shopctl_json(root, "status", "--runtime", "local")
    pid = status["saga_worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_runs(pid), 10)
    code, status = shopctl_json(root, "status", "--runtime", "local")
    assert status["saga_worker"]["state"] == "stopped" and status["saga_worker"]["enabled"]
    shown = cli(root, "status", "--runtime", "local")
    assert "saga worker: stopped" in shown.stdout
    assert "`shopctl up` starts it" in shown.stdout

    code, up = shopctl_json(root, "up", *SERVICES, "--runtime", "local")
    assert code == 0 and up["saga_worker"]["action"] == "started"
    assert up["saga_worker"]["pid"] != pid and pid_runs(up["saga_worker"]["pid"])


def test_changed_settings_restart_the_worker_and_disabling_stops_it(shop):
    root, _ = shop
    _, status = shopctl_json(root, "status", "--runtime", "local")
    old = status["saga_worker"]["pid"]
    set_worker(root, "{enabled: true, interval: 700ms}")
    code, up = shopctl_json(root, "up", *SERVICES, "--runtime", "local")
    assert (code, up["saga_worker"]["action"]) == (0, "restarted")
    new = up["saga_worker"]["pid"]
    assert new != old and not pid_runs(old) and pid_runs(new)

    set_worker(root, "{enabled: false}")
    code, up = shopctl_json(root, "up", *SERVICES, "--runtime", "local")
    assert (code, up["saga_worker"]["action"], up["saga_worker"]["state"]) == (0, "stopped",
                                                                             "stopped")
    assert not pid_runs(new)
    code, status = shopctl_json(root, "status", "--runtime", "local")
    assert status["saga_worker"]["state"] == "stopped" and not status["saga_worker"]["enabled"]
    assert "saga worker" not in cli(root, "status", "--runtime", "local").stdout


def test_down_stops_the_worker_with_the_shop(shop):
    root, _ = shop
    set_worker(root, "{enabled: true, interval: 1s}")
    code, up = shopctl_json(root, "up", *SERVICES, "--runtime", "local")
    pid = up["saga_worker"]["pid"]
    assert code == 0 and pid_runs(pid)
    down = cli(root, "down", "--runtime", "local")
    assert down.returncode == 0, down.stderr[-2000:]
    assert "saga-worker" in down.stderr and not pid_runs(pid)
    assert not (root / ".shopctl" / "saga-worker.json").exists()
