"""Order-saga benchmark against live services.

Measures, for the order saga of shop.yaml (price -> create_order -> reserve_stock ->
charge -> ship, every call declared in shop.yaml's `actions:`):
  * sagas/s and p50/p99 saga latency at concurrency 1 and 16 (threads, one engine per
    thread: its own RPC client, gRPC channel, HTTP pool and log connection, all on one
    durable saga log, exactly as `shopctl saga run` drives it);
  * orchestration overhead at concurrency 1: saga latency minus the sum of the same five
    step calls made directly through the same participants (shopctl.saga.participants,
    with each step's frozen ActionSpec) with fresh ids, interleaved with the sagas in the
    same run;
  * "nothing lost": every saga ends completed, the saga log holds every one, the
    inventory's own CheckStock shows exactly one unit reserved per completed saga,
    payments shows one charge per order, and each saga's order.completed event was
    published to RabbitMQ (through the log's outbox).

By default it starts catalog, inventory, payments and orders as subprocesses on free
ports with temp data (as tests/integration/test_saga_live.py does), on a private vhost of
the RabbitMQ at 127.0.0.1:5672; the inventory is pre-seeded through its own ledger with
enough stock of the SKU. `--running` uses an already running shop (`shopctl up`),
endpoints from shop.yaml / Consul; mind its stock then (see --sku).
`--prepriced` runs the saga without its price step (the items are quoted once, through
the same catalog.quote call, and given as the input's `lines`): the four steps the saga
had before pricing became a step, for comparisons with older figures.
`--logs sqlite,postgresql` runs the c=16 level once per saga-log backend, in the same
run against the same services (c=1 on the first only): the PostgreSQL log on a server
the bench starts in a temp folder with the server's default, durable settings
(tests/pgserver.py), or the one `--pg-url` names.

    .venv/bin/python bench/saga_bench.py [--n1 100] [--n16 800] [--prepriced]
                                         [--logs sqlite,postgresql] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

import shopctl  # noqa: E402
from shopctl.config import load_config  # noqa: E402
from shopctl.saga import log as L  # noqa: E402
from shopctl.saga.actions import StepCall  # noqa: E402
from shopctl.saga.endpoints import Endpoints, discover  # noqa: E402
from shopctl.saga.engine import COMPLETED_EVENT, event_type, snapshot, steps_of  # noqa: E402
from shopctl.saga.participants import Participants  # noqa: E402
from shopctl.saga.protos import ProtoSet  # noqa: E402
from shopctl.saga.session import open_engine  # noqa: E402
from shopctl.saga.store import open_log  # noqa: E402
from shopctl.service_auth import HEADER, Credentials  # noqa: E402

BROKER = os.environ.get("SHOP_TEST_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
TARGET_RATE = 100.0  # sagas/s at c=16
TARGET_OVERHEAD = 0.20  # at c=1
SAGA = "order"
# The services started here check service credentials with this key; the engine and the
# checks sign with it.
SERVICE_KEY = "bench-service-key-" + uuid.uuid4().hex + uuid.uuid4().hex
CREDENTIALS = Credentials(SERVICE_KEY, "bench")


# -- live services --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=True)


def _seed_inventory(data_dir: Path, sku: str, units: int) -> None:
    """Create the inventory's database through its own StockLedger with `units` of `sku`
    (the service seeds only SKUs the table lacks, so it keeps this level)."""
    inv = REPO / "services" / "inventory"
    spec = importlib.util.spec_from_file_location("_bench_inventory_stock", inv / "stock.py")
    stock = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = stock
    spec.loader.exec_module(stock)
    products = [p._replace(initial_stock=units) if p.sku == sku else p
                for p in stock.PRODUCTS]
    server_src = (inv / "server.py").read_text()
    db_file = "inventory.db" if 'DB_FILE = "inventory.db"' in server_src else None
    assert db_file, "inventory's DB_FILE changed; update the bench"
    stock.StockLedger.open(data_dir / db_file, products).close()


@contextmanager
def started_shop(sku: str, units: int, protos: ProtoSet):
    vhost = f"shopctl-bench-saga-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp = urllib.parse.urlunsplit(urllib.parse.urlsplit(BROKER)._replace(path="/" + vhost))
    procs = []
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        tmp = Path(tmp)
        try:
            ports = {n: _free_port() for n in ("catalog", "inventory", "payments", "orders")}
            base = {**os.environ, "SHOP_HOST": "127.0.0.1", "SHOP_AMQP_URI": amqp,
                    "SHOP_JWT_SECRET": "bench-" + uuid.uuid4().hex, "SHOP_PROJECT": "shop",
                    "SHOP_LOG_LEVEL": "WARNING", "SHOP_SERVICE_KEY": SERVICE_KEY}
            base.pop("CONSUL_HTTP_ADDR", None)
            _seed_inventory(tmp / "inventory", sku, units)
            for name, port in ports.items():
                env = {**base, "SHOP_SERVICE": name, "SHOP_PORT": str(port),
                       "SHOP_DATA_DIR": str(tmp / name)}
                if name == "inventory":
                    env["SHOP_METRICS_PORT"] = str(_free_port())
                out = open(tmp / f"{name}.log", "ab")
                procs.append(subprocess.Popen([sys.executable, "main.py"],
                                              cwd=REPO / "services" / name, env=env,
                                              stdout=out, stderr=subprocess.STDOUT))
            ep = Endpoints.of(amqp=amqp, **{name: f"127.0.0.1:{port}"
                                            for name, port in ports.items()})
            _wait_ready(ep, sku, protos, procs, tmp)
            yield ep
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True,
                           timeout=60)


def _wait_ready(ep: Endpoints, sku: str, protos: ProtoSet, procs, tmp: Path,
                limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    checks = [lambda u=u: httpx.get(u + "/health", timeout=2).status_code == 200
              for u in (ep.base_url("catalog"), ep.base_url("payments"))]
    checks.append(lambda: stock(ep, protos, sku) is not None)
    checks.append(lambda: _orders_ready(ep))
    for check in checks:
        while True:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                logs = "\n".join(p.read_text()[-2000:] for p in tmp.glob("*.log"))
                raise SystemExit(f"a service exited during start-up:\n{logs}")
            try:
                if check():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("services never became ready")
            time.sleep(0.2)


def _orders_ready(ep: Endpoints) -> bool:
    from shopctl.nameko_rpc import NamekoRpc, RemoteError

    with NamekoRpc(ep.amqp, timeout=2, credentials=CREDENTIALS) as rpc:
        try:
            rpc.call("orders", "get_order", -1)
        except RemoteError:
            pass  # OrderNotFound: the service answers
    return True


def stock(ep: Endpoints, protos: ProtoSet, sku: str) -> tuple[int, int]:
    """(available, reserved) of `sku`, through the inventory's own contract in protos/,
    as the saga reaches it."""
    import grpc

    method = protos.find("CheckStock", "inventory")
    with grpc.insecure_channel(ep.address("inventory")) as channel:
        call = channel.unary_unary(method.full_name,
                                   request_serializer=method.input.SerializeToString,
                                   response_deserializer=method.output.FromString)
        reply = call(method.input(skus=[sku]), timeout=5)
    (level,) = reply.levels
    return level.available, level.reserved


# -- measurements ---------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def raw_steps(actions: Participants, steps, input: dict) -> float:
    """The saga's forward steps called directly through the same participants and
    clients, each with its step's frozen spec and the saga data the engine would give it,
    under a fresh id; returns the sum of the step call durations (seconds)."""
    fresh = "raw-" + uuid.uuid4().hex
    context = dict(input)
    results: dict = {}
    total = 0.0
    for step in steps:
        call = StepCall(fresh, step.name, "forward", step.timeout, dict(context),
                        saga=SAGA, input=input, results=dict(results), spec=step.call_spec)
        t0 = time.perf_counter()
        result = actions.run(step.call, call)
        total += time.perf_counter() - t0
        context.update(result or {})  # merged as the engine merges a forward result
        results[step.name] = result or {}
    return total


def run_level(ep, db: Path | str, protos: Path, definition, make_input, concurrency: int, n: int,
              with_raw: bool, synchronous: str | None = None) -> dict:
    """n sagas on `concurrency` threads; with_raw interleaves a direct step run after
    each saga on the same thread (used at c=1 for the overhead)."""
    steps = steps_of(definition)
    latencies: list[float] = []
    raws: list[float] = []
    records: list = []
    errors: list[BaseException] = []
    counter = iter(range(n))
    lock = threading.Lock()
    gate = threading.Barrier(concurrency + 1)

    def worker() -> None:
        try:
            with open_engine(db, ep, protos, synchronous=synchronous,
                             service_key=SERVICE_KEY) as engine:
                actions = Participants(ep, protos, credentials=CREDENTIALS)
                try:
                    for _ in range(2):  # warm the connections of this thread
                        engine.start(SAGA, definition, make_input("u-warm"))
                        if with_raw:
                            raw_steps(actions, steps, make_input("u-warm"))
                    gate.wait()
                    while True:
                        with lock:
                            i = next(counter, None)
                        if i is None:
                            return
                        t0 = time.perf_counter()
                        saga, _ = engine.start(SAGA, definition, make_input(f"u-bench-{i}"))
                        lat = time.perf_counter() - t0
                        raw = None
                        if with_raw:
                            # The outcome event goes out in the background: let it, so it
                            # does not slow the raw calls this saga is compared with.
                            engine.publisher.flush(5.0)
                            raw = raw_steps(actions, steps, make_input(f"u-raw-{i}"))
                        with lock:
                            latencies.append(lat)
                            records.append(saga)
                            if raw is not None:
                                raws.append(raw)
                finally:
                    actions.close()
        except BaseException as exc:
            errors.append(exc)
            try:
                gate.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    gate.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    if errors:
        raise errors[0]
    statuses: dict[str, int] = {}
    for saga in records:
        statuses[saga.status] = statuses.get(saga.status, 0) + 1
    out = {"concurrency": concurrency, "sagas": n, "finished": len(records),
           "statuses": statuses, "wall_s": wall,
           # with_raw: the wall clock includes the raw runs; the rate is the sagas' own
           "sagas_per_s": (n / sum(latencies) * concurrency) if with_raw else n / wall,
           "p50_ms": 1000 * statistics.median(latencies),
           "p99_ms": 1000 * pct(latencies, 99), "mean_ms": 1000 * statistics.fmean(latencies),
           "ids": [s.id for s in records]}
    if with_raw:
        out["raw_p50_ms"] = 1000 * statistics.median(raws)
        out["raw_mean_ms"] = 1000 * statistics.fmean(raws)
        out["overhead_p50"] = statistics.median(latencies) / statistics.median(raws) - 1
        out["overhead_mean"] = statistics.fmean(latencies) / statistics.fmean(raws) - 1
        # per-pair differences, for the absolute cost of orchestration
        out["overhead_abs_p50_ms"] = 1000 * statistics.median(
            [a - b for a, b in zip(latencies, raws, strict=True)])
    return out


def check_nothing_lost(ep, db: Path | str, protos: ProtoSet, sku: str, before: tuple[int, int],
                       expected_units: int, level: dict) -> dict:
    """Every saga completed, logged, with one unit reserved and one charge, seen through
    the services' own state."""
    with open_log(db) as log:
        logged = {s.id: s.status for s in log.list(None, 1_000_000)}
    ids = level["ids"]
    missing = [i for i in ids if i not in logged]
    not_completed = sum(1 for i in ids if logged.get(i) != L.COMPLETED)
    after = stock(ep, protos, sku)
    stock_ok = (after[1] - before[1]) == expected_units and (before[0] - after[0]) == expected_units
    # charges: read every order's payment record
    charges_ok = 0
    with open_log(db) as log, httpx.Client(timeout=10) as http:
        for i in ids:
            oid = next((e.result["order_id"] for e in log.events(i)
                        if e.step == "create_order" and e.state == L.SUCCEEDED), None)
            if oid is None:
                continue
            resp = http.get(f"{ep.base_url('payments')}/charges/{oid}",
                            headers={HEADER: CREDENTIALS.token("payments", "get_charge")})
            body = resp.json() if resp.status_code == 200 else {}
            charge = body.get("charge") or {}
            if charge.get("status") == "SUCCEEDED" and body.get("refund") is None:
                charges_ok += 1
    # Outcome events: each saga's order.completed is in the outbox and was published
    # (the sessions flushed their publishers when they closed).
    completed = event_type(SAGA, COMPLETED_EVENT)
    with open_log(db) as log:
        announced = sum(1 for i in ids
                        if [(e.event_type, e.published_at is not None) for e in log.outbox(i)]
                        == [(completed, True)])
    lost = (bool(missing) or not_completed > 0 or not stock_ok or charges_ok != len(ids)
            or announced != len(ids))
    return {"missing_from_log": len(missing), "not_completed": not_completed,
            "stock_delta_ok": stock_ok, "orders_charged_once": charges_ok,
            "events_published": announced, "lost": lost}


def _inputs(ep: Endpoints, protos: Path, definition: dict, sku: str, prepriced: bool):
    """user -> the saga's input: one unit of `sku`; with `prepriced`, also the price
    step's result (quoted once, through the same catalog.quote call the step makes)."""
    items = [{"sku": sku, "qty": 1}]
    quoted: dict = {}
    if prepriced:
        (price,) = [s for s in steps_of(definition) if s.name == "price"]
        actions = Participants(ep, protos, credentials=CREDENTIALS)
        try:
            base = {"user_id": "u-quote", "items": items}
            quoted = actions.run(price.call, StepCall(
                "quote-" + uuid.uuid4().hex, price.name, "forward", price.timeout, dict(base),
                saga=SAGA, input=base, spec=price.call_spec))
        finally:
            actions.close()
    return lambda user: {"user_id": user, "items": items, **quoted}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=100, help="sagas at concurrency 1")
    ap.add_argument("--n16", type=int, default=800, help="sagas at concurrency 16")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sku", default="SKU-MUG-001")
    ap.add_argument("--running", action="store_true",
                    help="use the running shop (endpoints from shop.yaml/Consul)")
    ap.add_argument("--config", default=str(REPO / "shop.yaml"))
    ap.add_argument("--prepriced", action="store_true",
                    help="drop the price step: quote once, pass the lines in the input")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--logs", default="sqlite",
                    help="saga-log backends, comma-separated: sqlite, postgresql; c=N runs "
                         "on each in turn (c=1 on the first)")
    ap.add_argument("--pg-url", help="the PostgreSQL server for --logs postgresql (default: "
                                     "one started here, in a temp folder)")
    ap.add_argument("--synchronous", choices=L.SYNC_MODES, type=str.upper,
                    help=f"the saga log's SQLite synchronous setting (default: "
                         f"${L.SYNC_ENV} or NORMAL)")
    args = ap.parse_args(argv)
    synchronous = args.synchronous or os.environ.get(L.SYNC_ENV, "NORMAL").upper()
    backends = [b.strip() for b in args.logs.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgresql"}:
        ap.error("--logs: sqlite and/or postgresql")

    config = load_config(Path(args.config))
    protos_dir = config.root / "protos"
    protos = ProtoSet(protos_dir)  # for CheckStock; the engines compile their own
    definition = snapshot(config, SAGA)
    warm = 2 * (1 + args.concurrency) * 2  # warm-up sagas and raw runs
    units = 10 * (2 * args.n1 + len(backends) * args.n16 + warm) + 1000

    @contextmanager
    def shop():
        if args.running:
            # The running shop's services check credentials with the project's key.
            global SERVICE_KEY, CREDENTIALS
            from shopctl.state import ProjectState

            SERVICE_KEY = ProjectState(config.root).service_key()
            CREDENTIALS = Credentials(SERVICE_KEY, "bench")
            yield discover(config)
        else:
            with started_shop(args.sku, units, protos) as ep:
                yield ep

    @contextmanager
    def postgresql():
        if args.pg_url or "postgresql" not in backends:
            yield args.pg_url
            return
        from tests.pgserver import PgServer

        with PgServer(durable=True) as server:
            yield server.new_database()

    results = {}
    with shop() as ep, tempfile.TemporaryDirectory(prefix="saga-bench-log-") as logdir, \
            postgresql() as pg_url:
        where = {"sqlite": Path(logdir) / "saga.db", "postgresql": pg_url}
        make_input = _inputs(ep, protos_dir, definition, args.sku, args.prepriced)
        if args.prepriced:
            definition = {**definition,
                          "steps": [s for s in definition["steps"] if s["name"] != "price"]}
        runs = [(backends[0], 1, args.n1, True)] + [(b, args.concurrency, args.n16, False)
                                                    for b in backends]
        for backend, c, n, raw in runs:
            db = where[backend]
            before = stock(ep, protos, args.sku)
            level = run_level(ep, db, protos_dir, definition, make_input, c, n, with_raw=raw,
                              synchronous=synchronous)
            warm_units = 2 * c * (2 if raw else 1)
            raw_units = n if raw else 0
            check = check_nothing_lost(ep, db, protos, args.sku, before,
                                       n + warm_units + raw_units, level)
            level.pop("ids")
            key = f"c{c}" if backend == backends[0] else f"c{c}_{backend}"
            results[key] = {**level, **check, "log": backend}

    c1, cN = results["c1"], results[f"c{args.concurrency}"]
    verdict = {
        "rate_target": f">= {TARGET_RATE:.0f} sagas/s at c={args.concurrency}, nothing lost",
        "rate_met": cN["sagas_per_s"] >= TARGET_RATE and not cN["lost"],
        "overhead_target": f"<= {TARGET_OVERHEAD:.0%} at c=1",
        "overhead_met": c1["overhead_p50"] <= TARGET_OVERHEAD,
    }
    steps = [s["name"] for s in definition["steps"]]
    report = {"levels": results, "targets": verdict, "cpus": os.cpu_count(),
              "synchronous": synchronous, "steps": steps, "shopctl": shopctl.__file__}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"saga log: synchronous={synchronous}; steps: {' -> '.join(steps)}; "
          f"shopctl from {Path(shopctl.__file__).parent}")
    print(f"{'log':>10} {'c':>3} {'sagas':>6} {'sagas/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'completed':>9} {'lost':>5}")
    for r in results.values():
        print(f"{r['log']:>10} {r['concurrency']:>3} {r['sagas']:>6} {r['sagas_per_s']:>8.1f} "
              f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['statuses'].get('completed', 0):>9} {str(r['lost']):>5}")
    print(f"c=1 raw step calls: p50 {c1['raw_p50_ms']:.1f} ms; saga p50 {c1['p50_ms']:.1f} ms; "
          f"overhead p50 {c1['overhead_p50']:.1%} (mean {c1['overhead_mean']:.1%}, "
          f"{c1['overhead_abs_p50_ms']:.1f} ms per saga)")
    print(f"target {verdict['rate_target']}: {'MET' if verdict['rate_met'] else 'NOT MET'}")
    print(f"target overhead {verdict['overhead_target']}: "
          f"{'MET' if verdict['overhead_met'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
