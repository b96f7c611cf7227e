"""The demo's order saga, declared only in shop.yaml, against the real services, started
as subprocesses on free ports with temp data folders, and a real RabbitMQ (a private
vhost per session).

Consistency is always checked through the services' own state: get_order over RPC,
CheckStock over gRPC, GET /charges over HTTP. The services check service credentials
(SHOP_SERVICE_KEY): the saga engine signs its calls with that key, and so do the
checks here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from shopctl.config import load_config
from shopctl.nameko_rpc import NamekoRpc
from shopctl.saga import log as L
from shopctl.saga.endpoints import Endpoints
from shopctl.saga.engine import CRASH_ENV, snapshot
from shopctl.saga.protos import ProtoSet
from shopctl.saga.session import open_engine
from shopctl.saga.store import LEASE_ENV, open_log
from shopctl.service_auth import HEADER, Credentials

pytestmark = pytest.mark.rabbitmq

REPO = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("SHOP_TEST_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
CONFIG = load_config(REPO / "shop.yaml")
DEFINITION = snapshot(CONFIG, "order")
PROTOS = REPO / "protos"
SKU = "SKU-MUG-001"
# The service key of the services started here; what this module's checks sign with.
SERVICE_KEY = "saga-live-tests-" + uuid.uuid4().hex + uuid.uuid4().hex
CREDENTIALS = Credentials(SERVICE_KEY, "tests")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rabbitmqctl(*args: str) -> bool:
    try:
        return subprocess.run(["rabbitmqctl", *args], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def amqp_uri():
    vhost = f"shopctl-test-saga-{uuid.uuid4().hex[:8]}"
    if not _rabbitmqctl("add_vhost", vhost):
        pytest.skip("rabbitmqctl cannot create a private vhost")
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        parts = urllib.parse.urlsplit(BROKER)
        yield urllib.parse.urlunsplit(parts._replace(path="/" + vhost))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _wait(check, what: str, proc: subprocess.Popen, log: Path, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        assert proc.poll() is None, f"{what} exited:\n{log.read_text()[-3000:]}"
        try:
            if check():
                return
        except Exception:  # not listening yet
            pass
        assert time.monotonic() < deadline, f"{what} never became ready:\n{log.read_text()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def shop(tmp_path_factory, amqp_uri):
    """The four services the saga calls; yields their Endpoints."""
    tmp = tmp_path_factory.mktemp("shop")
    ports = {name: free_port() for name in ("catalog", "inventory", "payments", "orders")}
    procs = {}
    base = {**os.environ, "SHOP_HOST": "127.0.0.1", "SHOP_AMQP_URI": amqp_uri,
            "SHOP_JWT_SECRET": "test-secret-" + uuid.uuid4().hex, "SHOP_PROJECT": "shop",
            "SHOP_SERVICE_KEY": SERVICE_KEY}
    base.pop("CONSUL_HTTP_ADDR", None)
    envs = {}
    for name, port in ports.items():
        env = {**base, "SHOP_SERVICE": name, "SHOP_PORT": str(port),
               "SHOP_DATA_DIR": str(tmp / name)}
        if name == "inventory":
            env["SHOP_METRICS_PORT"] = str(free_port())
        envs[name] = env

    def spawn(name: str) -> None:
        log = tmp / f"{name}.log"
        with open(log, "ab") as out:
            procs[name] = (subprocess.Popen([sys.executable, "main.py"],
                                            cwd=REPO / "services" / name, env=envs[name],
                                            stdout=out, stderr=subprocess.STDOUT), log)

    for name in ports:
        spawn(name)
    endpoints = Endpoints.of(amqp=amqp_uri, **{name: f"127.0.0.1:{port}"
                                                for name, port in ports.items()})

    def restart_exited() -> list[str]:
        """Start again the services whose process exited, as a runtime's supervisor
        does (this fixture has none); returns their names."""
        gone = [name for name, (proc, _) in procs.items() if proc.poll() is not None]
        for name in gone:
            spawn(name)
        return gone

    SUPERVISE[id(endpoints)] = restart_exited
    try:
        for name in ("catalog", "payments", "orders"):
            url = f"http://127.0.0.1:{ports[name]}/health"
            _wait(lambda url=url: httpx.get(url, timeout=2).status_code == 200, name,
                  *procs[name])
        _wait(lambda: stock(endpoints, SKU) is not None, "inventory", *procs["inventory"])
        yield endpoints
    finally:
        SUPERVISE.pop(id(endpoints), None)
        for proc, _ in procs.values():
            proc.kill()
            proc.wait()


# id(Endpoints of a running `shop` fixture) -> restart its exited services
SUPERVISE: dict = {}


# -- the services' own state ---------------------------------------------------------------

def stock(endpoints: Endpoints, sku: str) -> tuple[int, int]:
    """Through the service's own contract in protos/, as the saga reaches it."""
    method = ProtoSet(PROTOS).find("CheckStock", "inventory")
    with grpc.insecure_channel(endpoints.address("inventory")) as channel:
        call = channel.unary_unary(method.full_name,
                                   request_serializer=method.input.SerializeToString,
                                   response_deserializer=method.output.FromString)
        reply = call(method.input(skus=[sku]), timeout=5)
    (level,) = reply.levels
    return level.available, level.reserved


def order(endpoints: Endpoints, order_id: int, credentials: Credentials = CREDENTIALS) -> dict:
    with NamekoRpc(endpoints.amqp, timeout=10, credentials=credentials) as rpc:
        return rpc.call("orders", "get_order", order_id)


def payment(endpoints: Endpoints, order_id,
            credentials: Credentials = CREDENTIALS) -> dict | None:
    resp = httpx.get(f"{endpoints.base_url('payments')}/charges/{order_id}", timeout=5,
                     headers={HEADER: credentials.token("payments", "get_charge")})
    return None if resp.status_code == 404 else resp.json()


def as_admin() -> dict[str, str]:
    """Headers of a call to payments' admin knobs."""
    return {HEADER: CREDENTIALS.token("payments", "admin")}


def charge_probe(endpoints: Endpoints) -> httpx.Response:
    """A charge of a fresh order, to learn the state of payments' breaker."""
    return httpx.post(f"{endpoints.base_url('payments')}/charges", timeout=5,
                      json={"order_id": f"probe-{uuid.uuid4().hex}", "amount_cents": 100},
                      headers={HEADER: CREDENTIALS.token("payments", "charge")})


def order_id_of(log: L.SagaLog, saga_id: str) -> int | None:
    for event in log.events(saga_id):
        if event.step == "create_order" and event.state == "succeeded":
            return event.result["order_id"]
    return None


def net_charged(pay: dict | None) -> int:
    if not pay or not pay.get("charge") or pay["charge"].get("status") != "SUCCEEDED":
        return 0
    refunded = (pay.get("refund") or {}).get("amount_cents") or 0
    return pay["charge"]["amount_cents"] - refunded


# -- running sagas -------------------------------------------------------------------------

@pytest.fixture
def db(saga_log_location, monkeypatch):
    """The saga log of each backend (SQLite, PostgreSQL): every test taking it runs on
    both. A short lease, so a killed driver's saga is free soon on PostgreSQL."""
    monkeypatch.setenv(LEASE_ENV, "1")
    return saga_log_location


@pytest.fixture
def sqlite_db(tmp_path) -> Path:
    return tmp_path / "saga.db"


def resume_when_free(engine, saga_id: str, within: float = 15.0) -> L.SagaRecord:
    """engine.resume, once the saga's dead driver lets go of it (PostgreSQL: once its
    lease ran out; SQLite: at once)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return engine.resume(saga_id)
        except L.SagaBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def order_input(user: str = "u-test", qty: int = 1, sku: str = SKU) -> dict:
    return {"user_id": user, "items": [{"sku": sku, "qty": qty}]}


def run_saga(endpoints, db, qty=1, sku=SKU, service_key=SERVICE_KEY,
             **options) -> L.SagaRecord:
    with open_engine(db, endpoints, PROTOS, service_key=service_key) as engine:
        saga, _ = engine.start("order", DEFINITION, order_input(qty=qty, sku=sku), **options)
        return saga


def test_happy_path(shop, db):
    before = stock(shop, SKU)
    saga = run_saga(shop, db, qty=2)
    assert saga.status == L.COMPLETED, saga.error
    with open_log(db) as log:
        oid = order_id_of(log, saga.id)
    assert order(shop, oid)["status"] == "SHIPPED"
    assert stock(shop, SKU) == (before[0] - 2, before[1] + 2)
    pay = payment(shop, oid)
    assert pay["charge"]["status"] == "SUCCEEDED" and pay["refund"] is None
    assert net_charged(pay) == 2 * 1450


@pytest.mark.parametrize("fail_at", ["price", "create_order", "reserve_stock", "charge"])
def test_failure_at_each_step_compensates_the_completed_steps(shop, db, fail_at):
    before = stock(shop, SKU)
    saga = run_saga(shop, db, fail_at=fail_at)
    assert saga.status == L.COMPENSATED
    with open_log(db) as log:
        oid = order_id_of(log, saga.id)
    assert stock(shop, SKU) == before
    if fail_at in ("price", "create_order"):
        assert oid is None
        return
    assert order(shop, oid)["status"] == "CANCELLED"
    assert net_charged(payment(shop, oid)) == 0


def test_failure_after_the_pivot_is_stuck_and_never_refunded(shop, db):
    saga = run_saga(shop, db, fail_at="ship")
    assert saga.status == L.STUCK
    with open_log(db) as log:
        oid = order_id_of(log, saga.id)
    assert order(shop, oid)["status"] == "PENDING"
    assert net_charged(payment(shop, oid)) == 1450


def test_out_of_stock_compensates_without_retries(shop, db):
    saga = run_saga(shop, db, qty=10_000)
    assert saga.status == L.COMPENSATED and "FAILED_PRECONDITION" in saga.error
    with open_log(db) as log:
        reserves = [e for e in log.events(saga.id)
                    if e.step == "reserve_stock" and e.state == "started"]
        oid = order_id_of(log, saga.id)
    assert len(reserves) == 1
    assert order(shop, oid)["status"] == "CANCELLED"


# One step of the order saga each, with the context it needs given as input.
ALONE = {
    "create_order": {"user_id": "u-alone", "lines": [{"sku": SKU, "qty": 1,
                                                      "unit_price_cents": 1450}]},
    "reserve_stock": {"order_id": "o-alone", "lines": [{"sku": SKU, "qty": 1}]},
    "charge": {"order_id": "o-alone", "total_cents": 1450},
}


@pytest.mark.parametrize("step", list(ALONE))
@pytest.mark.parametrize(("key", "why"), [
    (None, "missing service credential"),
    ("another-projects-service-key-" + uuid.uuid4().hex, "invalid service credential"),
], ids=["no credential", "another key"])
def test_a_call_without_the_shops_credential_is_refused_not_retried(shop, db, step, key, why):
    """Each kind of participant (nameko, gRPC, HTTP) refuses a saga driver that cannot
    sign for this shop; the refusal compensates at once and nothing changed."""
    alone = {**DEFINITION, "steps": [s for s in DEFINITION["steps"] if s["name"] == step]}
    before = stock(shop, SKU)
    with open_engine(db, shop, PROTOS, service_key=key) as engine:
        refused, _ = engine.start("order", alone, ALONE[step])

    assert refused.status == L.COMPENSATED and why in refused.error, refused.error
    with open_log(db) as log:
        attempts = [e for e in log.events(refused.id) if e.state == "started"]
    assert len(attempts) == 1  # refused for good: no retries
    assert stock(shop, SKU) == before
    assert payment(shop, "o-alone") is None
    with open_engine(db, shop, PROTOS, service_key=SERVICE_KEY) as engine:
        accepted, _ = engine.start("order", alone, {**ALONE[step],
                                                    "order_id": f"o-{uuid.uuid4().hex[:8]}"})
    assert accepted.status == L.COMPLETED, accepted.error


def test_open_breaker_fails_fast_and_compensates(shop, db):
    faults = f"{shop.base_url('payments')}/admin/faults"
    httpx.put(faults, json={"failure_rate": 1.0}, timeout=5, headers=as_admin()
              ).raise_for_status()
    try:
        for _ in range(50):
            resp = charge_probe(shop)
            if resp.status_code == 503 and resp.json().get("breaker") == "open":
                break
        else:
            pytest.fail("the breaker never opened")
        before = stock(shop, SKU)
        started = time.monotonic()
        saga = run_saga(shop, db)
        elapsed = time.monotonic() - started
    finally:
        httpx.put(faults, json={"failure_rate": 0.0}, timeout=5, headers=as_admin())
        _wait_breaker_closed(shop)
    assert saga.status == L.COMPENSATED and "UNAVAILABLE" in saga.error
    # Fails fast: no provider timeouts, only short backoffs within the charge's 3 s
    # deadline, then as long again to learn whether it applied before refunding.
    assert elapsed < 10
    with open_log(db) as log:
        oid = order_id_of(log, saga.id)
    assert stock(shop, SKU) == before
    assert order(shop, oid)["status"] == "CANCELLED"
    assert net_charged(payment(shop, oid)) == 0


def _wait_breaker_closed(shop, limit: float = 30.0) -> None:
    """Let the breaker reset (half-open, then a passing probe closes it) so the next
    tests see a working payments service."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        resp = charge_probe(shop)
        if resp.status_code in (200, 201):
            return
        time.sleep(0.5)
    pytest.fail("the payments breaker did not close again")


def test_same_idempotency_key_twice_makes_one_order(shop, db):
    key = f"k-{uuid.uuid4().hex}"
    first = run_saga(shop, db, idempotency_key=key)
    second = run_saga(shop, db, idempotency_key=key)
    assert first.id == second.id and second.status == L.COMPLETED
    with open_log(db) as log:
        assert len(log.list()) == 1


CRASH_SCRIPT = """
import json, sys
from shopctl.saga.endpoints import Endpoints
from shopctl.saga.session import open_engine
args = json.loads(sys.argv[1])
with open_engine(args["db"], Endpoints(**args["endpoints"]), args["protos"],
                 service_key=args["service_key"]) as engine:
    engine.start("order", args["definition"], args["input"])
"""


@pytest.mark.parametrize("boundary", [
    "price:started", "price:succeeded", "create_order:started", "create_order:succeeded",
    "reserve_stock:started", "reserve_stock:succeeded", "charge:started", "charge:succeeded",
    "ship:started",
])
def test_sigkill_at_a_step_boundary_then_resume_is_consistent(shop, db, boundary):
    before = stock(shop, SKU)
    args = {"db": str(db), "endpoints": shop.to_dict(), "protos": str(PROTOS),
            "service_key": SERVICE_KEY, "definition": DEFINITION,
            "input": order_input("u-crash")}
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, json.dumps(args)],
                          env={**os.environ, CRASH_ENV: boundary}, timeout=60)
    assert done.returncode == -signal.SIGKILL
    with open_log(db) as log:
        (saga,) = log.list()
        assert saga.status == L.RUNNING
    with open_engine(db, shop, PROTOS, service_key=SERVICE_KEY) as engine:
        saga = resume_when_free(engine, saga.id)
    assert saga.status in (L.COMPLETED, L.COMPENSATED), saga.error
    with open_log(db) as log:
        oid = order_id_of(log, saga.id)
    pay = payment(shop, oid)
    if saga.status == L.COMPLETED:
        assert order(shop, oid)["status"] == "SHIPPED"
        assert stock(shop, SKU) == (before[0] - 1, before[1] + 1)
        assert net_charged(pay) == 1450
    else:
        assert stock(shop, SKU) == before
        assert oid is None or order(shop, oid)["status"] == "CANCELLED"
        assert net_charged(pay) == 0


def test_after_a_reboot_lost_records_never_lead_to_a_blind_compensation(shop, sqlite_db):
    """The machine goes down after the charge; the unsynced end of the log (every record
    after the creation, as synchronous=NORMAL allows) is lost. Recovery meets a broken
    inventory: compensating from the short log would cancel the order and release the
    stock but keep the charge it does not know about. Instead it waits, and `retry`
    goes forward to the one consistent end. (SQLite: the host's reboot; the PostgreSQL
    log's counterpart, a server restart, is in tests/unit/test_saga_engine.py.)"""
    import dataclasses

    from shopctl.saga import owner

    before = stock(shop, SKU)
    args = {"db": str(sqlite_db), "endpoints": shop.to_dict(), "protos": str(PROTOS),
            "service_key": SERVICE_KEY, "definition": DEFINITION,
            "input": order_input("u-reboot")}
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, json.dumps(args)],
                          env={**os.environ, CRASH_ENV: "ship:started"}, timeout=60)
    assert done.returncode == -signal.SIGKILL
    with L.SagaLog(sqlite_db) as log:
        (saga,) = log.list()
        oid = order_id_of(log, saga.id)
        host, pid, start, _ = owner.token().split("/")
        log._conn.execute("DELETE FROM step_events WHERE saga_id = ? AND seq > 1", (saga.id,))
        log._conn.execute("UPDATE sagas SET owner = ? WHERE id = ?",
                          (f"{host}/{pid}/{start}/0123456789ab", saga.id))
    assert net_charged(payment(shop, oid)) == 1450  # the world is ahead of the log

    broken = dataclasses.replace(
        shop, addresses={**shop.addresses, "inventory": [f"127.0.0.1:{free_port()}"]})
    with L.SagaLog(sqlite_db) as log:  # inventory stays down: do not wait out 60 s
        log._conn.execute("UPDATE sagas SET definition = ? WHERE id = ?", (json.dumps({
            **DEFINITION, "steps": [{**s, "deadline": 2} for s in DEFINITION["steps"]]}),
            saga.id))
    with open_engine(sqlite_db, broken, PROTOS, service_key=SERVICE_KEY) as engine:
        stuck = engine.resume(saga.id)
    assert stuck.status == L.STUCK and stuck.after_reboot and "reboot" in stuck.error
    assert order(shop, oid)["status"] != "CANCELLED"
    assert stock(shop, SKU) == (before[0] - 1, before[1] + 1)

    with open_engine(sqlite_db, shop, PROTOS, service_key=SERVICE_KEY) as engine:
        saga = engine.retry(saga.id)
    assert saga.status == L.COMPLETED, saga.error
    assert order(shop, oid)["status"] == "SHIPPED"
    assert stock(shop, SKU) == (before[0] - 1, before[1] + 1)
    assert net_charged(payment(shop, oid)) == 1450


# -- outcome events on the real broker -------------------------------------------------------

class SagaEvents:
    """A queue of our own bound to every event on saga.events."""

    def __init__(self, amqp_uri: str):
        import kombu

        self.conn = kombu.Connection(amqp_uri)
        exchange = kombu.Exchange("saga.events", type="topic", durable=True)
        queue = kombu.Queue(f"test-saga-events-{uuid.uuid4().hex}", exchange=exchange,
                            routing_key="#", exclusive=True)
        self.seen: list[tuple[str, dict]] = []
        self.consumer = kombu.Consumer(self.conn.channel(), queues=[queue], accept=["json"],
                                       no_ack=True, callbacks=[self._on_message])
        self.consumer.consume()

    def _on_message(self, body, message) -> None:
        self.seen.append((message.delivery_info["routing_key"], body))

    def wait_for(self, saga_id: str, limit: float = 15.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + limit
        while not any(body.get("saga_id") == saga_id for _, body in self.seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no event of saga {saga_id} arrived; got {self.seen}"
            try:
                self.conn.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                pass
        return [(kind, body) for kind, body in self.seen if body.get("saga_id") == saga_id]


@pytest.fixture
def saga_events(shop):
    tap = SagaEvents(shop.amqp)
    yield tap
    tap.conn.release()


def test_outcome_events_reach_the_broker_with_a_stable_event_id(shop, db, saga_events):
    completed = run_saga(shop, db)
    failed = run_saga(shop, db, fail_at="reserve_stock")
    ((kind, body),) = saga_events.wait_for(completed.id)
    assert kind == "order.completed" and body["context"]["order_id"]
    assert body["saga"] == "order" and body["outcome"] == "completed"
    ((kind_failed, body_failed),) = saga_events.wait_for(failed.id)
    assert kind_failed == "order.compensated" and "injected" in body_failed["reason"]
    with open_log(db) as log:
        (event,) = log.outbox(completed.id)
        assert event.published_at is not None and body["event_id"] == event.event_id
        assert log.unpublished() == 0


def test_an_event_the_broker_missed_is_sent_by_the_next_session(shop, db, saga_events):
    from shopctl.saga.engine import Engine
    from shopctl.saga.outbox import OutboxPublisher
    from shopctl.saga.participants import Participants

    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # no broker listens there
    dead = NamekoRpc(nobody, timeout=2)  # connects on first use, and fails then
    with open_log(db) as log:
        publisher = OutboxPublisher(
            log, lambda kind, message: dead.publish_event("saga", kind, message)).start()
        actions = Participants(shop, PROTOS, credentials=CREDENTIALS)
        try:
            saga, _ = Engine(log, actions, publisher=publisher).start(
                "order", DEFINITION, order_input("u-outage"))
        finally:
            actions.close()
        assert saga.status == L.COMPLETED  # the outage never touches the saga itself
        assert publisher.close(timeout=5) == 1 and publisher.last_error
    assert saga_events.seen == []
    # Any later saga command publishes what is left.
    with open_engine(db, shop, PROTOS, service_key=SERVICE_KEY):
        ((kind, body),) = saga_events.wait_for(saga.id)
    assert kind == "order.completed"
    with open_log(db) as log:
        (event,) = log.outbox(saga.id)
        assert event.published_at is not None and event.attempts == 2


def test_abort_of_a_stuck_saga_undoes_every_step_its_log_records(shop, db):
    """Stuck after the pivot (shipping can never pass): the operator aborts, and the
    charge is refunded, the stock released and the order cancelled, in reverse."""
    before = stock(shop, SKU)
    saga = run_saga(shop, db, fail_at="ship")
    assert saga.status == L.STUCK
    with open_engine(db, shop, PROTOS, service_key=SERVICE_KEY) as engine:
        aborted = engine.abort(saga.id)
    assert aborted.status == L.COMPENSATED and "aborted by an operator" in aborted.error
    with open_log(db) as log:
        oid = order_id_of(log, saga.id)
        undone = [e.step for e in log.events(saga.id) if e.state == L.COMPENSATED_STEP]
    assert undone == ["charge", "reserve_stock", "create_order"]
    assert order(shop, oid)["status"] == "CANCELLED"
    assert stock(shop, SKU) == before
    assert net_charged(payment(shop, oid)) == 0
