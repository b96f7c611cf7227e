"""The swarm runtime on the real lab (a 3-node Docker Swarm of docker-in-docker nodes,
tests/lab.py), through the CLI as a user runs it (issue 16, items 1 and 3):

- `up --runtime swarm` brings the demo shop up with payments at 3 replicas spread over
  the nodes, each task registered in Consul by the registrar and passing; the order
  saga completes through the cluster, driven from the host;
- a node's container stopped while sagas run: Consul drops its instances, its tasks come
  back healthy on the others, and every saga ends completed and consistent;
- a code edit, then `up`: a rolling update of that service alone, with 0 failed steps
  among the sagas running through it;
- `scale`, `logs` (each line's instance and node) and `down` (nothing left);
- payments declares `database: postgresql`, so (infra.postgres `auto`) the project's
  PostgreSQL runs on the manager and every payments task holds the same database_url:
  a charge repeated with its idempotency key at another task is the same charge, and
  the sagas through a dead node end with exactly one charge each.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import yaml

from shopctl.config import load_config
from shopctl.saga import log as L
from shopctl.saga.endpoints import discover
from shopctl.saga.engine import snapshot
from shopctl.saga.session import open_engine
from shopctl.service_auth import HEADER, Credentials
from shopctl.state import ProjectState
from shopctl.testing import consul_headers, wait_for
from tests.acceptance.test_shop_roundtrip import make_project, shopctl_in

pytestmark = [pytest.mark.docker]

SCALED = "payments"
SKUS = ("SKU-MUG-001", "SKU-TEE-002")


@pytest.fixture(scope="module")
def shop(swarm_lab, tmp_path_factory):
    lab = swarm_lab
    root, data = make_project(tmp_path_factory.mktemp("swarm"))
    data["services"][SCALED]["replicas"] = 3
    data["infra"]["swarm"] = {"host": lab.manager_host}
    (root / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    started = time.monotonic()
    try:
        up = shopctl_in(root, "up", "--runtime", "swarm", "--json", timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-4000:]
        print(f"\nup --runtime swarm: {time.monotonic() - started:.1f}s")
        yield root, data, lab, json.loads(up.stdout)
    finally:
        down = shopctl_in(root, "down", "--volumes", "--rmi", timeout=300)
        print(down.stdout[-1000:], down.stderr[-2000:])


def consul(root, data, lab, path: str):
    host = lab.manager.address
    port = data["infra"]["consul"]["port"]
    return httpx.get(f"http://{host}:{port}{path}", headers=consul_headers(root),
                     timeout=5).json()


def passing(root, data, lab, service: str) -> list[dict]:
    return [e["Service"] for e in consul(root, data, lab, f"/v1/health/service/{service}?passing")
            if e["Service"].get("Meta", {}).get("project") == data["project"]]


def status_rows(root) -> dict[str, dict]:
    result = shopctl_in(root, "status", "--json")  # the project remembers its runtime
    return {row["name"]: row for row in json.loads(result.stdout)["services"]}


def run_sagas(root, count: int, concurrency: int, during=None, tag: str = "s",
              more=lambda: False, limit: int = 0, pause: float = 0.5):
    """At least `count` order sagas from the host through the cluster, and more while
    `more()` holds, `limit` at most (the demo's stock is finite: 120 mugs, 80 tees),
    each worker pausing `pause` s between two; `during()` runs in this thread once a
    fifth of them are done. Returns (sagas, log path)."""
    config = load_config(root / "shop.yaml")
    endpoints = discover(config)
    definition = snapshot(config, "order")
    key = ProjectState(root).service_key()
    db = root / ".shopctl" / f"swarm-{tag}.db"
    results: list = []
    errors: list[BaseException] = []
    done = threading.Event()
    lock = threading.Lock()
    taken = [0]

    def worker() -> None:
        try:
            with open_engine(db, endpoints, root / "protos", service_key=key) as engine:
                while True:
                    with lock:
                        i = taken[0]
                        if (i >= count and not more()) or (limit and i >= limit):
                            return
                        taken[0] += 1
                    items = [{"sku": SKUS[0] if i % 5 < 3 else SKUS[1], "qty": 1}]
                    saga, _ = engine.start("order", definition,
                                           {"user_id": f"u-{tag}-{i}", "items": items})
                    with lock:
                        results.append(saga)
                        if len(results) == max(1, count // 5):
                            done.set()
                    time.sleep(pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    if during is not None:
        done.wait(300)
        during()
    for thread in threads:
        thread.join(timeout=900)
    assert not errors, errors
    return results, db


def payments_db(root, data, lab):
    """A connection to payments' own database, as payments' role, at the manager's
    published PostgreSQL port (where the host reaches it)."""
    import psycopg

    password = ProjectState(root).database_password(SCALED)
    return psycopg.connect(host=lab.manager.address, port=data["infra"]["postgres"]["port"],
                           user=SCALED, password=password, dbname=SCALED, autocommit=True)


def in_tasks(data, lab, service: str, argv: list[str]) -> dict[str, str]:
    """{task container@node: output} of `argv` run in each running task of `service`,
    as the service's own user, on whichever node it runs."""
    import docker

    out = {}
    label = f"com.docker.swarm.service.name=shopctl-{data['project']}-{service}"
    for node in lab.nodes:
        engine = docker.DockerClient(base_url=f"tcp://{node.address}:2375")
        for container in engine.containers.list(filters={"label": label}):
            done = container.exec_run(argv, user="10001")
            assert done.exit_code == 0, done.output
            out[f"{container.name}@{node.name}"] = done.output.decode().strip()
    return out


def failures(sagas, db, most: int = 5) -> list[str]:
    """What the first failed step attempts of a batch said (for assertion messages)."""
    out = []
    with L.SagaLog(db) as log:
        for saga in sagas:
            out += [f"{e.step}: {(e.error or {}).get('message', e.error)}"
                    for e in log.events(saga.id) if e.state == L.FAILED]
    return out[:most]


def outcome(sagas, db) -> tuple[dict[str, int], int]:
    """({status: count}, failed step attempts) of a batch of sagas."""
    statuses: dict[str, int] = {}
    failed = 0
    with L.SagaLog(db) as log:
        for saga in sagas:
            statuses[saga.status] = statuses.get(saga.status, 0) + 1
            failed += sum(e.state == L.FAILED for e in log.events(saga.id))
    return statuses, failed


def test_up_spreads_payments_over_the_nodes_and_every_task_passes_in_consul(shop):
    root, data, lab, up = shop
    assert up["runtime"] == "swarm"
    entries = passing(root, data, lab, SCALED)
    assert len(entries) == 3
    assert {e["Meta"]["owner"] for e in entries} == {"registrar"}
    assert sorted(e["Meta"]["instance"] for e in entries) == [SCALED, f"{SCALED}.2",
                                                             f"{SCALED}.3"]
    assert len({e["Meta"]["node"] for e in entries}) == 3  # one on each node
    node_addresses = {node.address for node in lab.nodes}
    assert {e["Address"] for e in entries} <= node_addresses
    for name in data["services"]:
        assert passing(root, data, lab, name), name
    rows = status_rows(root)
    assert {row["health"] for row in rows.values()} == {"passing"}
    assert sorted({rows[n]["node"] for n in rows if rows[n]["service"] == SCALED}) == sorted(
        node.name for node in lab.nodes)


def test_every_payments_task_holds_the_same_database_url_and_postgres_runs_on_the_manager(
        shop):
    root, data, lab, _ = shop
    urls = in_tasks(data, lab, SCALED, ["cat", "/run/shop-secrets/database_url"])
    assert len(urls) == 3 and len(set(urls.values())) == 1, urls.keys()
    url = next(iter(urls.values()))
    assert url.startswith(f"postgresql://{SCALED}:") and url.endswith(
        f"@postgres:5432/{SCALED}")
    infra = {row["name"]: row for row in json.loads(
        shopctl_in(root, "status", "--json").stdout)["infra"]}
    assert infra["postgres"]["state"] == "running"
    assert infra["postgres"]["node"] == lab.manager.name
    # The other services declared nothing: no database_url for them.
    listed = in_tasks(data, lab, "users", ["ls", "/run/shop-secrets"])
    assert listed and not any("database_url" in files for files in listed.values())


def test_a_charge_repeated_at_another_task_with_its_key_is_the_same_charge(shop):
    root, data, lab, _ = shop
    tasks = passing(root, data, lab, SCALED)
    first = tasks[0]
    other = next(t for t in tasks if t["Meta"]["node"] != first["Meta"]["node"])
    credentials = Credentials(ProjectState(root).service_key(), "tests")
    order = f"o-idem-{time.time_ns()}"
    answers = []
    for task in (first, other):
        answers.append(httpx.post(
            f"http://{task['Address']}:{task['Port']}/charges",
            json={"order_id": order, "amount_cents": 1234, "currency": "EUR"},
            headers={HEADER: credentials.token(SCALED, "charge"), "Idempotency-Key": order},
            timeout=10))
    assert [a.status_code for a in answers] == [201, 200], [a.text for a in answers]
    assert answers[0].json()["charge_id"] == answers[1].json()["charge_id"]
    with payments_db(root, data, lab) as conn:
        assert conn.execute("SELECT count(*) FROM charges WHERE order_id = %s",
                            (order,)).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM provider_ledger p JOIN charges c "
                            "ON c.token = p.token WHERE c.order_id = %s",
                            (order,)).fetchone()[0] == 1


def test_the_order_saga_completes_through_the_cluster_from_the_host(shop):
    root, *_ = shop
    result = shopctl_in(root, "saga", "run", "order", "-i", "user_id=u-swarm",
                        "-i", f'items=[{{"sku": "{SKUS[0]}", "qty": 1}}]', timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_a_dead_node_moves_its_tasks_and_consul_drops_its_instances(shop):
    import docker

    root, data, lab, _ = shop
    victim = next(e for e in passing(root, data, lab, SCALED)
                  if e["Meta"]["node"] != lab.manager.name)["Meta"]["node"]
    host = docker.from_env()
    container = host.containers.get(next(n.container for n in lab.nodes if n.name == victim))
    moments = {}
    gone = threading.Event()

    def stop_node() -> None:
        """While sagas run: stop the node, then wait until Consul lists none of its
        instances and three payments pass again (on the other two nodes)."""
        try:
            moments["stopped"] = time.monotonic()
            container.stop(timeout=1)
            wait_for(lambda: all(e["ServiceMeta"]["node"] != victim for e in consul(
                root, data, lab, f"/v1/catalog/service/{SCALED}")) or None, 60,
                "the dead node's entries gone")
            moments["dropped"] = time.monotonic()
            wait_for(lambda: len(passing(root, data, lab, SCALED)) == 3, 120,
                     "three passing payments again")
            moments["back"] = time.monotonic()
        finally:
            gone.set()

    try:
        sagas, db = run_sagas(root, 40, 4, during=stop_node, tag="node",
                              more=lambda: not gone.is_set(), limit=110)
        assert "back" in moments, moments
        print(f"\nnode {victim} stopped: its entries gone from Consul after "
              f"{moments['dropped'] - moments['stopped']:.1f}s, 3 passing again after "
              f"{moments['back'] - moments['stopped']:.1f}s")
        statuses, failed = outcome(sagas, db)
        print(f"{len(sagas)} sagas while a node died: {statuses}, "
              f"{failed} failed step attempts (retried)")
        assert statuses == {L.COMPLETED: len(sagas)}, statuses
        assert victim not in {e["Meta"]["node"] for e in passing(root, data, lab, SCALED)}
        # Exactly one charge per saga, whichever tasks its attempts reached: the
        # tasks share payments' database.
        with L.SagaLog(db) as log:
            orders = [str(next(e.result["order_id"] for e in log.events(saga.id)
                               if e.step == "create_order" and e.state == L.SUCCEEDED))
                      for saga in sagas]
        with payments_db(root, data, lab) as conn:
            charged = conn.execute(
                "SELECT c.order_id, c.status, count(p.token) FROM charges c LEFT JOIN "
                "provider_ledger p ON p.token = c.token AND p.status = 'captured' "
                "WHERE c.order_id = ANY(%s) GROUP BY c.order_id, c.status",
                (orders,)).fetchall()
        assert sorted(charged) == sorted((order, "SUCCEEDED", 1) for order in orders)
    finally:
        container.start()
        from shopctl.lab import lab_up

        lab_up(nodes=len(lab.nodes), name=lab.name)


def test_a_code_edit_then_up_rolls_that_service_with_no_failed_saga_step(shop):
    root, data, lab, _ = shop
    source = root / "services" / SCALED / "app.py"
    source.write_text(source.read_text() + "\n# a change that rolls the service\n")
    result: dict = {}

    def roll() -> None:
        started = time.monotonic()
        result["up"] = shopctl_in(root, "up", "--json", timeout=600)
        result["seconds"] = time.monotonic() - started

    roller = threading.Thread(target=roll)
    # sagas keep going until the update is over, so every task replaced had traffic
    sagas, db = run_sagas(root, 20, 2, during=roller.start, tag="roll",
                          more=lambda: "up" not in result, limit=80)
    roller.join(600)
    up = result["up"]
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
    plan = {(s["instance"], s["action"]) for s in json.loads(up.stdout)["plan"]}
    assert {a for (i, a) in plan if i.split(".")[0] == SCALED} == {"recreate"}
    assert {a for (i, a) in plan if i.split(".")[0] != SCALED} == {"noop"}
    print(f"\nrolling update of {SCALED} (3 replicas): up took {result['seconds']:.1f}s")
    statuses, failed = outcome(sagas, db)
    assert statuses == {L.COMPLETED: len(sagas)}, statuses
    assert failed == 0, failures(sagas, db)
    hashes = {e["Meta"]["config_hash"] for e in passing(root, data, lab, SCALED)}
    assert len(hashes) == 1 and len(passing(root, data, lab, SCALED)) == 3


def test_a_change_that_crashes_at_start_is_rolled_back_and_up_fails_saying_so(shop):
    root, data, lab, _ = shop
    source = root / "services" / SCALED / "app.py"
    good = source.read_text()
    before = {e["ID"] for e in passing(root, data, lab, SCALED)}
    source.write_text(good + '\nraise SystemExit("broken on purpose")\n')
    try:
        up = shopctl_in(root, "up", timeout=600)
        assert up.returncode == 1, up.stdout[-2000:]
        assert f"the swarm rolled {SCALED}'s update back" in up.stderr, up.stderr[-2000:]
        # the old version served throughout (start-first) and still does
        assert {e["ID"] for e in passing(root, data, lab, SCALED)} == before
    finally:
        source.write_text(good)
    wait_for(lambda: shopctl_in(root, "up", timeout=600).returncode == 0, 300,
             "up with the good code again")


def test_scale_logs_and_down(shop):
    root, data, lab, _ = shop
    scaled = shopctl_in(root, "scale", f"{SCALED}=2", "--json", timeout=300)
    assert scaled.returncode == 0, scaled.stderr[-3000:]
    wait_for(lambda: len(passing(root, data, lab, SCALED)) == 2, 30, "two passing")
    logs = shopctl_in(root, "logs", SCALED, "--tail", "5", timeout=60)
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert f"{SCALED}@" in logs.stdout or f"{SCALED}.2@" in logs.stdout, logs.stdout[-1000:]
    down = shopctl_in(root, "down", timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    import docker

    manager = docker.DockerClient(base_url=lab.manager_host)
    assert manager.services.list(filters={"label": f"io.shopctl.project={data['project']}"}) \
        == []
