"""Saga throughput at 1 and at 2 replicas of payments and inventory, same run.

A copy of the demo shop (unique project name, free ports) is brought up by `shopctl up`
on the local runtime, its inventory seeded first through the service's own ledger with
enough stock. Then rounds alternate: `shopctl scale payments=R inventory=R` for R in
1, 2, 1, 2, ... and N order sagas at concurrency C through the saga engine (one engine
a thread, endpoints from Consul as `shopctl saga run` resolves them). Each round
reports sagas/s and p50/p99 latency; the summary gives the median rate at each replica
count and their ratio (2 replicas / 1). Every saga must complete.

    .venv/bin/python bench/replicas_bench.py [--rounds 3] [--n 300] [--concurrency 16] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shopctl.config import load_config  # noqa: E402
from shopctl.saga.endpoints import discover  # noqa: E402
from shopctl.saga.engine import snapshot  # noqa: E402
from shopctl.state import ProjectState  # noqa: E402
from shopctl.testing import copy_demo_shop  # noqa: E402

SCALED = ("payments", "inventory")  # the demo services the saga calls over HTTP and gRPC
SKU = "SKU-MUG-001"


def _saga_bench():
    spec = importlib.util.spec_from_file_location("_replicas_saga_bench",
                                                  REPO / "bench" / "saga_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shopctl(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "shopctl", *args], cwd=root,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"shopctl {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks


def processes(root: Path) -> dict[str, list[int]]:
    """The shop's processes by what they are: each service (all its instances), the
    broker and Consul, and this driver."""
    rows = json.loads(shopctl(root, "status", "--json"))["services"]
    found: dict[str, list[int]] = {"saga driver (this process)": [os.getpid()]}
    for row in rows:
        if row.get("instance_id"):
            found.setdefault(row["service"], []).append(int(row["instance_id"]))
    for unit in ("consul", "rabbitmq"):
        record = ProjectState(root).run_file(f"_{unit}")
        if record.exists():
            pid = json.loads(record.read_text()).get("child_pid")
            if pid:
                found[unit] = [int(pid)]
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds at each replica count")
    ap.add_argument("--n", type=int, default=300, help="sagas a round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--replicas", type=int, default=2, help="the count compared with 1")
    ap.add_argument("--runtime", default="local", choices=["local"],
                    help="local: the inventory is seeded in its data folder before up")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sb = _saga_bench()
    results: dict[int, list[dict]] = {1: [], args.replicas: []}
    with tempfile.TemporaryDirectory(prefix="replicas-bench-") as tmp:
        root = Path(tmp)
        copy_demo_shop(REPO, root, prefix="rb")
        units = 2 * args.rounds * (args.n + 4 * args.concurrency) + 1000
        state = ProjectState(root)
        sb._seed_inventory(state.ensure(state.data_dir("inventory")), SKU, units)
        try:
            shopctl(root, "up", "--runtime", args.runtime)
            config = load_config(root / "shop.yaml")
            definition = snapshot(config, sb.SAGA)
            sb.SERVICE_KEY = state.service_key()
            sb.CREDENTIALS = sb.Credentials(sb.SERVICE_KEY, "bench")
            db = root / ".shopctl" / "bench-sagas.db"
            order = [count for _ in range(args.rounds) for count in (1, args.replicas)]
            for count in order:
                shopctl(root, "scale", *[f"{name}={count}" for name in SCALED])
                time.sleep(1.0)  # Consul's view of the new instances settles
                ep = discover(config)

                def make_input(user: str) -> dict:
                    return {"user_id": user, "items": [{"sku": SKU, "qty": 1}]}

                procs = processes(root)
                before = {what: sum(map(cpu_seconds, pids)) for what, pids in procs.items()}
                level = sb.run_level(ep, db, root / "protos", definition, make_input,
                                     args.concurrency, args.n, with_raw=False)
                level.pop("ids")
                level["cpu_s"] = {what: round(sum(map(cpu_seconds, pids)) - before[what], 2)
                                  for what, pids in procs.items()}
                results[count].append(level)
                if not args.json:
                    print(f"replicas {count}: {level['sagas_per_s']:6.1f} sagas/s  "
                          f"p50 {level['p50_ms']:6.1f} ms  p99 {level['p99_ms']:6.1f} ms  "
                          f"{level['statuses']}", flush=True)
                    busiest = sorted(level["cpu_s"].items(), key=lambda kv: -kv[1])
                    print("   cpu s: " + ", ".join(f"{k} {v}" for k, v in busiest), flush=True)
        finally:
            subprocess.run([sys.executable, "-m", "shopctl", "down", "--volumes"], cwd=root,
                           capture_output=True, timeout=300)
    rate = {count: statistics.median(r["sagas_per_s"] for r in rounds)
            for count, rounds in results.items()}
    lost = [r["statuses"] for rounds in results.values() for r in rounds
            if set(r["statuses"]) != {"completed"}]
    report = {"concurrency": args.concurrency, "sagas_per_round": args.n, "cpus": os.cpu_count(),
              "runtime": args.runtime, "rounds": results,
              "median_sagas_per_s": rate, "ratio": rate[args.replicas] / rate[1],
              "all_completed": not lost}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"median: 1 replica {rate[1]:.1f} sagas/s, {args.replicas} replicas "
              f"{rate[args.replicas]:.1f} sagas/s, ratio {report['ratio']:.2f} "
              f"({os.cpu_count()} CPUs); all completed: {not lost}")
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
