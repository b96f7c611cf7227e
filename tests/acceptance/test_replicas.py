"""Replicas through the CLI on both runtimes (issue 15): a service at `replicas: 3` runs
three instances, each passing in Consul under its own ID at its own address; one is
killed (docker kill / kill -9) while 200 order sagas run at concurrency 8, and none of
them fails, sticks or ends inconsistent because of it (checked through the services'
own state); `up` brings the third back; `scale` goes down to one without touching the
other services; `down` leaves none.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time

import docker
import httpx
import pytest

from shopctl.config import load_config
from shopctl.nameko_rpc import NamekoRpc, RpcTimeout
from shopctl.saga import log as L
from shopctl.saga.endpoints import discover
from shopctl.saga.engine import snapshot
from shopctl.saga.protos import ProtoSet
from shopctl.saga.session import open_engine
from shopctl.service_auth import HEADER, Credentials
from shopctl.state import ProjectState
from shopctl.testing import consul_headers, wait_for
from tests.acceptance.test_shop_roundtrip import make_project, shopctl_in

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]

SCALED = "payments"  # the demo's service these tests run several times
SAGAS = 200
CONCURRENCY = 8
KILL_AFTER = 40  # sagas done before one instance is killed
# initial stock 120 and 80 (shopkit/seed.py): 200 sagas of one unit, 3 in 5 mugs, fit
SKUS = ("SKU-MUG-001", "SKU-TEE-002")


def sku_of(i: int) -> str:
    return SKUS[0] if i % 5 < 3 else SKUS[1]


def set_replicas(root, service: str, count: int) -> None:
    text = (root / "shop.yaml").read_text()
    marker = f"\n  {service}:\n"
    assert marker in text
    (root / "shop.yaml").write_text(text.replace(marker, f"{marker}    replicas: {count}\n", 1))


@pytest.fixture(scope="module", params=["docker", "local"])
def shop(request, tmp_path_factory):
    root, data = make_project(tmp_path_factory.mktemp(f"replicas-{request.param}"))
    set_replicas(root, SCALED, 3)
    runtime = request.param
    try:
        up = shopctl_in(root, "up", "--runtime", runtime, "--json")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield root, data, runtime, json.loads(up.stdout)
    finally:
        shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", runtime, timeout=180)


def consul_instances(root, data, service: str, passing: bool = True) -> list[dict]:
    port = data["infra"]["consul"]["port"]
    url = f"http://127.0.0.1:{port}/v1/health/service/{service}" + ("?passing" if passing else "")
    entries = httpx.get(url, headers=consul_headers(root), timeout=5).json()
    return [e["Service"] for e in entries
            if e["Service"].get("Meta", {}).get("project") == data["project"]]


def status_rows(root, runtime) -> dict[str, dict]:
    result = shopctl_in(root, "status", "--runtime", runtime, "--json")
    return {row["name"]: row for row in json.loads(result.stdout)["services"]}


def test_each_replica_is_its_own_instance_in_consul_and_in_status(shop):
    root, data, runtime, up = shop
    instances = [f"{SCALED}", f"{SCALED}.2", f"{SCALED}.3"]
    assert [s["instance"] for s in up["plan"] if s["service"] == SCALED] == instances
    found = consul_instances(root, data, SCALED)
    assert sorted(s["ID"] for s in found) == [f"{data['project']}-{i}" for i in instances]
    assert len({(s["Address"], s["Port"]) for s in found}) == 3  # each at its own address
    rows = status_rows(root, runtime)
    assert [name for name in rows if rows[name]["service"] == SCALED] == instances
    assert {rows[name]["health"] for name in instances} == {"passing"}
    host_ports = [rows[name]["host_port"] for name in instances]
    # the first on the port shop.yaml declares, the others on free ones
    assert host_ports[0] == data["services"][SCALED]["port"]
    assert len(set(host_ports)) == 3 and all(host_ports)
    for port in host_ports:  # each answers on its own host port
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    # every other service runs once
    assert {row["service"] for row in rows.values() if row["service"] != SCALED} == (
        set(data["services"]) - {SCALED})
    assert sum(row["service"] != SCALED for row in rows.values()) == len(data["services"]) - 1


def kill_instance(root, data, runtime, instance: str) -> None:
    if runtime == "docker":
        docker.from_env().containers.get(f"shopctl-{data['project']}-{instance}").kill()
    else:  # the instance's process, not its supervisor
        os.kill(int(status_rows(root, runtime)[instance]["instance_id"]), signal.SIGKILL)


def run_sagas(root, done_hook) -> list[L.SagaRecord]:
    config = load_config(root / "shop.yaml")
    endpoints = discover(config)
    definition = snapshot(config, "order")
    key = ProjectState(root).service_key()
    db = root / ".shopctl" / "replicas-test-sagas.db"
    jobs: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(SAGAS):
        jobs.put(i)
    results: list = [None] * SAGAS
    errors: list[BaseException] = []
    finished = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal finished
        try:
            with open_engine(db, endpoints, root / "protos", service_key=key) as engine:
                while True:
                    try:
                        i = jobs.get_nowait()
                    except queue.Empty:
                        return
                    items = [{"sku": sku_of(i), "qty": 1}]
                    saga, _ = engine.start("order", definition,
                                           {"user_id": f"u-rep-{i}", "items": items})
                    results[i] = saga
                    with lock:
                        finished += 1
                        if finished == KILL_AFTER:
                            done_hook()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not errors, errors
    assert all(r is not None for r in results)
    return results, db, endpoints, key


def stock_levels(endpoints, root) -> dict[str, tuple[int, int]]:
    import grpc

    method = ProtoSet(root / "protos").find("CheckStock", "inventory")
    with grpc.insecure_channel(endpoints.address("inventory")) as channel:
        call = channel.unary_unary(method.full_name,
                                   request_serializer=method.input.SerializeToString,
                                   response_deserializer=method.output.FromString)
        reply = call(method.input(skus=list(SKUS)), timeout=5)
    return {level.sku: (level.available, level.reserved) for level in reply.levels}


def test_killing_a_replica_while_sagas_run_fails_none_and_up_brings_it_back(shop):
    root, data, runtime, _ = shop
    config = load_config(root / "shop.yaml")
    before = stock_levels(discover(config), root)
    killed = f"{SCALED}.2"
    sagas, db, endpoints, key = run_sagas(root, lambda: kill_instance(root, data, runtime,
                                                                      killed))
    statuses = {}
    for saga in sagas:
        statuses.setdefault(saga.status, []).append(saga)
    assert set(statuses) == {L.COMPLETED}, {
        status: [s.error for s in found][:3] for status, found in statuses.items()}
    # consistent, through the services' own state: one unit held a saga, one charge each
    credentials = Credentials(key, "tests")
    after = stock_levels(endpoints, root)
    for sku in SKUS:
        sold = sum(sku_of(i) == sku for i in range(SAGAS))
        assert after[sku] == (before[sku][0] - sold, before[sku][1] + sold), sku
    with L.SagaLog(db) as log, NamekoRpc(endpoints.amqp, timeout=10,
                                        credentials=credentials) as rpc:
        for saga in sagas:
            order_id = next(e.result["order_id"] for e in log.events(saga.id)
                            if e.step == "create_order" and e.state == "succeeded")
            for _ in range(20):
                try:
                    assert rpc.call("orders", "get_order", order_id)["status"] == "SHIPPED"
                    break
                except RpcTimeout:
                    time.sleep(0.5)
            charge = httpx.get(f"{endpoints.base_url(SCALED)}/charges/{order_id}", timeout=5,
                               headers={HEADER: credentials.token(SCALED, "get_charge")}).json()
            assert charge["charge"]["status"] == "SUCCEEDED" and not charge.get("refund")
    # the killed instance is down or restarted by its runtime; `up` makes all three pass
    up = shopctl_in(root, "up", "--runtime", runtime, "--json")
    assert up.returncode == 0, up.stderr[-3000:]
    wait_for(lambda: len(consul_instances(root, data, SCALED)) == 3, 30,
             "three passing instances after up")


def test_scale_down_to_one_touches_no_other_service_and_down_leaves_none(shop):
    root, data, runtime, _ = shop
    others = {name: row["instance_id"] for name, row in status_rows(root, runtime).items()
              if row["service"] != SCALED}
    text_before = (root / "shop.yaml").read_text()
    result = shopctl_in(root, "scale", f"{SCALED}=1", "--runtime", runtime, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["scaled"] == [{"service": SCALED, "replicas_before": 3, "replicas": 1}]
    assert {(s["instance"], s["action"]) for s in out["plan"]} == {
        (SCALED, "noop"), (f"{SCALED}.2", "remove"), (f"{SCALED}.3", "remove")}
    # shop.yaml says so, changed in that one line
    assert (root / "shop.yaml").read_text() == text_before.replace(
        f"  {SCALED}:\n    replicas: 3\n", f"  {SCALED}:\n    replicas: 1\n")
    assert [s["ID"] for s in consul_instances(root, data, SCALED, passing=False)] == [
        f"{data['project']}-{SCALED}"]
    rows = status_rows(root, runtime)
    assert [name for name in rows if rows[name]["service"] == SCALED] == [SCALED]
    assert {name: row["instance_id"] for name, row in rows.items()
            if row["service"] != SCALED} == others  # nothing else was restarted
    down = shopctl_in(root, "down", "--runtime", runtime, timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    rows = status_rows(root, runtime)
    assert {row["state"] for row in rows.values()} == {"missing"}
