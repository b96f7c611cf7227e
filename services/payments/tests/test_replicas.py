"""Replicas of payments (main.py as real processes) on ONE PostgreSQL database, as a swarm
runs them: each has its own data folder, and a retry, a refund or a race may reach any
of them. Also: start-ups against an existing schema, several at once on a new one, and
a PostgreSQL restart under a running service."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from shopkit.testing import ServiceProcess, service_starter

SERVICE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def database_url(pg_server) -> str:
    return pg_server.new_database()


@pytest.fixture
def start(tmp_path, service_key, database_url):
    """start(name, **env) -> a healthy payments process named `name` (its own data
    folder) on the test's database; SHOP_DATABASE_URL in `env` gives another."""
    starter = service_starter(tmp_path, SERVICE_DIR)
    start_service = next(starter)

    def start_replica(name: str, **env: str) -> ServiceProcess:
        env = {"SHOP_SERVICE_KEY": service_key, "SHOP_DATABASE_URL": database_url,
               "SHOP_DATA_DIR": str(tmp_path / name), **env}
        return start_service(**env)

    yield start_replica
    next(starter, None)


class Replica:
    """A payments process as a client sees it."""

    def __init__(self, service: ServiceProcess, credential):
        self.service = service
        self._headers = credential()

    def charge(self, order_id: str, amount_cents: int = 2400, key: str | None = None):
        return self._post("/charges", {"order_id": order_id, "amount_cents": amount_cents},
                          key)

    def refund(self, order_id: str, key: str | None = None):
        return self._post("/refunds", {"order_id": order_id}, key)

    def faults(self, **knobs: object) -> None:
        httpx.put(f"{self.service.url}/admin/faults", json=knobs, headers=self._headers,
                  timeout=10).raise_for_status()

    def provider_calls(self, operation: str) -> float:
        """shop_payments_provider_calls_total of `operation`, every outcome."""
        text = httpx.get(f"{self.service.url}/metrics", timeout=10).text
        prefix = "shop_payments_provider_calls_total{"
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix) and f'operation="{operation}"' in line)

    def _post(self, path: str, body: dict, key: str | None) -> httpx.Response:
        headers = {**self._headers, **({"Idempotency-Key": key} if key else {})}
        return httpx.post(f"{self.service.url}{path}", json=body, headers=headers, timeout=30)


@pytest.fixture
def replicas(start, credential) -> tuple[Replica, Replica]:
    return Replica(start("a"), credential), Replica(start("b"), credential)


def provider_ledger(database_url: str) -> list[tuple[str, str]]:
    """The simulated provider's entries, (token, status), read straight from the database."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT token, status FROM provider_ledger ORDER BY token").fetchall()


def test_a_retry_on_the_other_replica_returns_the_first_charge(replicas, database_url):
    a, b = replicas

    first = a.charge("order-1", key="saga-1:charge")
    retry = b.charge("order-1", key="saga-1:charge")

    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert b.provider_calls("charge") == b.provider_calls("find") == 0
    assert [status for _, status in provider_ledger(database_url)] == ["captured"]


def test_a_refund_on_the_other_replica_finds_the_charge(replicas, database_url):
    a, b = replicas
    charge = a.charge("order-2", 3100)

    refund = b.refund("order-2", key="saga-2:refund")
    again = a.refund("order-2", key="saga-2:refund")

    assert charge.status_code == 201
    assert refund.status_code == 200
    assert refund.json()["status"] == "REFUNDED"
    assert refund.json()["amount_cents"] == 3100
    assert again.json() == refund.json()
    assert [status for _, status in provider_ledger(database_url)] == ["refunded"]


def test_concurrent_charges_of_one_order_on_both_replicas_charge_once(replicas, database_url):
    a, b = replicas
    for replica in replicas:
        replica.faults(latency_ms=150)  # each provider call holds its order for a while
    orders = [f"order-race-{i}" for i in range(4)]
    attempts = [(replica, order) for order in orders for replica in (a, b, a, b)]

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        answers = list(pool.map(lambda job: job[0].charge(job[1], key=f"{job[1]}:charge"),
                                attempts))

    by_order: dict[str, set[str]] = {}
    for (_, order), resp in zip(attempts, answers, strict=True):
        assert resp.status_code in (200, 201), resp.text
        assert resp.json()["status"] == "SUCCEEDED"
        by_order.setdefault(order, set()).add(resp.json()["charge_id"])
    assert all(len(ids) == 1 for ids in by_order.values()), by_order
    assert sorted(resp.status_code for resp in answers).count(201) == len(orders)
    # Each order reached the provider once: the others waited for it, none was in doubt.
    assert a.provider_calls("charge") + b.provider_calls("charge") == len(orders)
    assert a.provider_calls("find") + b.provider_calls("find") == 0
    assert [status for _, status in provider_ledger(database_url)] == ["captured"] * len(orders)


def test_more_orders_at_once_than_the_pool_has_connections_all_charge(replicas,
                                                                     database_url):
    a, _ = replicas
    # Each request holds its order's connection while its provider call takes 100 ms
    # (calls go one at a time through the breaker: 3.2 s for the last one).
    a.faults(latency_ms=100)
    orders = [f"order-many-{i}" for i in range(32)]  # pgdb: 24 order sessions a process

    with ThreadPoolExecutor(max_workers=len(orders)) as pool:
        answers = list(pool.map(a.charge, orders))

    # The provider's transactions have connections of their own: none timed out
    # waiting for one while the requests held theirs.
    assert [resp.status_code for resp in answers] == [201] * len(orders), \
        {resp.text for resp in answers}
    assert len(provider_ledger(database_url)) == len(orders)


def test_a_refund_waits_for_the_charge_under_way_on_the_other_replica(replicas, database_url):
    a, b = replicas
    a.faults(latency_ms=1000)
    charging = ThreadPoolExecutor(max_workers=1).submit(a.charge, "order-3", 1800)
    time.sleep(0.3)  # A's charge is PENDING, its provider call under way

    refund = b.refund("order-3")

    assert charging.result().status_code == 201
    assert refund.status_code == 200
    assert refund.json()["status"] == "REFUNDED"
    assert refund.json()["amount_cents"] == 1800
    # B found the charge settled: it never had to ask the provider what A had done.
    assert b.provider_calls("find") == 0
    assert [status for _, status in provider_ledger(database_url)] == ["refunded"]


def test_a_refund_before_the_charge_on_one_replica_blocks_it_on_the_other(replicas,
                                                                          database_url):
    a, b = replicas

    tombstone = a.refund("order-4", key="saga-4:refund")
    late_charge = b.charge("order-4", key="saga-4:charge")

    assert tombstone.json()["status"] == "NOTHING_TO_REFUND"
    assert late_charge.status_code == 409
    assert late_charge.json()["status"] == "CONFLICT"
    assert provider_ledger(database_url) == []


def test_a_restart_finds_the_schema_and_the_charges(start, credential):
    first = Replica(start("a"), credential)
    charge = first.charge("order-5", key="k-5")
    assert first.service.terminate() == 0

    again = Replica(start("a"), credential)
    repeat = again.charge("order-5", key="k-5")

    assert repeat.status_code == 200
    assert repeat.json() == charge.json()
    assert "Traceback" not in again.service.logs()


def test_replicas_starting_at_once_on_a_new_database_all_come_up(tmp_path, service_key,
                                                                 database_url):
    env = {"SHOP_SERVICE_KEY": service_key, "SHOP_DATABASE_URL": database_url}
    folders = [tmp_path / f"r{i}" for i in range(3)]
    for folder in folders:
        folder.mkdir()
    services = [ServiceProcess(SERVICE_DIR, folder, env) for folder in folders]
    try:
        for service in services:
            assert service.wait_healthy().json()["database"] == "postgresql"
        assert all("Traceback" not in service.logs() for service in services)
    finally:
        for service in services:
            service.proc.kill()
            service.proc.wait()


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's alone: it gets restarted."""
    from tests.pgserver import PgServer

    with PgServer(durable=False) as server:
        yield server


def test_postgresql_restarted_under_the_service(start, own_pg, credential):
    replica = Replica(start("a", SHOP_DATABASE_URL=own_pg.new_database()), credential)
    before = replica.charge("order-6", key="k-6")

    own_pg.halt()
    own_pg.resume()
    # The pool's connections died with the server: the first request replaces them.
    after_restart = replica.charge("order-7", key="k-7")
    own_pg.halt()
    during = replica.charge("order-8", key="k-8")
    health = httpx.get(f"{replica.service.url}/health", timeout=10)
    own_pg.resume()
    after_outage = replica.charge("order-8", key="k-8")

    assert before.status_code == 201
    assert after_restart.status_code == 201, after_restart.text
    assert during.status_code == 503
    assert during.json()["reason"] == "database_unavailable"
    assert during.json()["retryable"] is True
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "service": "payments",
                             "database": "postgresql"}
    assert after_outage.status_code == 201, after_outage.text
    assert replica.charge("order-6", key="k-6").json() == before.json()
    assert httpx.get(f"{replica.service.url}/health", timeout=10).status_code == 200
    assert "Traceback" not in replica.service.logs()
