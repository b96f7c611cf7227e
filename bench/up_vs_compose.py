"""Benchmark for issues 4 and 14: `shopctl up` (warm, cold and no-op) against
docker-compose 1.29 starting the same images with equivalent healthchecks.

One run does, N times (default 3), on a private copy of the demo shop (unique project
name, free host ports, health interval 1s):

  cold     remove the project's service images (label io.shopctl.project=<name>; the
           base images shopctl/python, shopctl/consul, shopctl/rabbitmq are KEPT, and so
           is shopctl's build cache under ~/.cache/shopctl), then time `shopctl up`
           until it exits 0 (= every service passing in Consul); `shopctl down --volumes`.
  warm     images built: time `shopctl up` the same way; read the containers' image
           tags and environment with `docker inspect`, copy out their secret files.
  noop     everything running and unchanged: time `shopctl up` --noop times (default
           10); then `shopctl down --volumes`.
  compose  generate a docker-compose file (in a temp dir) with those same images plus
           consul and rabbitmq, healthchecks equivalent to shopctl's checks and
           `depends_on: condition: service_healthy`; time `docker-compose up -d` plus
           polling `docker inspect` until every container is healthy;
           then time `docker-compose up -d` --noop times on the running project
           (compose-noop); `docker-compose down -v`.

Every duration is time.perf_counter() around the CLI subprocess (plus, for compose,
the health polling that follows it). Prints a table (median per mode, the ratios
warm/compose, target <= 0.5, and noop/compose-noop; the no-op's target is a median under
1 s) or JSON with --json.

The no-op runs on both sides start SETTLE seconds after the stack came up: a broker and
services that just booted still use the CPU for a few seconds on a 2-core box, which
is not what a later `up` meets.

Run:  .venv/bin/python bench/up_vs_compose.py [-n 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shopctl.testing import copy_demo_shop  # noqa: E402

# The demo shop's services, as its shop.yaml declares them.
SERVICES = tuple(yaml.safe_load((REPO / "shop.yaml").read_text())["services"])

LABEL_PROJECT = "io.shopctl.project"
TARGET = 0.5  # warm / compose (issue 14)
NOOP_TARGET = 1.0  # seconds, median of the no-op `shopctl up`
NOOP_RUNS = 10
SETTLE = 5.0  # seconds between a stack up and its no-op runs
DEFAULT_INTERVAL = "5s"  # a service's check interval when shop.yaml gives none
SECRETS_DIR = "/run/shop-secrets"  # where shopctl gives a service its secret files
# How shopctl's RabbitMQ image gets the project's user at boot (shopctl.runtime.docker):
# the compose broker gets the same, or the services' credentials would not let them in.
RABBITMQ_DIR = "/run/shopctl"
RABBITMQ_DEFINITIONS = f"{RABBITMQ_DIR}/rabbitmq-definitions.json"
POLL = 0.5  # seconds between health polls, as shopctl's own wait loop
HEALTH_TIMEOUT = 300.0
SHOPCTL_TIMEOUT = 900.0


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}s" if values else "-"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- subprocess helpers --------------------------------------------------------------------


def run(
    cmd: list[str],
    cwd: Path | None = None,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


# shopctl's modules compiled once, as an installed shopctl has them (pip writes .pyc at
# install; docker-compose's Debian package has them too). A checkout installed editable
# under PYTHONDONTWRITEBYTECODE=1 (these machines' sessions) would compile ~60 modules
# in every run; the cache goes to a temp folder, never into the checkout.
PYCACHE = Path(tempfile.gettempdir()) / f"shopctl-bench-pycache-{os.getuid()}"


def shopctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def shopctl(
    project: Path, *args: str, timeout: float = SHOPCTL_TIMEOUT
) -> subprocess.CompletedProcess:
    return run(
        [sys.executable, "-m", "shopctl", *args], cwd=project, timeout=timeout, env=shopctl_env()
    )


def timed_shopctl_up(project: Path) -> float:
    start = time.perf_counter()
    shopctl(project, "up")
    return time.perf_counter() - start


def project_images(name: str) -> list[str]:
    out = run(
        [
            "docker",
            "images",
            "--filter",
            f"label={LABEL_PROJECT}={name}",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]
    ).stdout
    return [line for line in out.split() if line and "<none>" not in line]


def remove_project_images(name: str) -> None:
    ids = run(
        ["docker", "images", "-q", "--filter", f"label={LABEL_PROJECT}={name}"]
    ).stdout.split()
    if ids:
        run(["docker", "rmi", "-f", *sorted(set(ids))], check=False)


def inspect_services(name: str) -> dict[str, dict]:
    """{service: {image, env, user}} of the running shopctl containers."""
    containers = [f"shopctl-{name}-{svc}" for svc in SERVICES]
    attrs = json.loads(run(["docker", "inspect", *containers]).stdout)
    return {
        svc: {"image": a["Config"]["Image"], "env": a["Config"]["Env"], "user": a["Config"]["User"]}
        for svc, a in zip(SERVICES, attrs, strict=True)
    }


def copy_secrets(name: str, services: dict[str, dict], dest: Path) -> None:
    """Each running shopctl container's secret files (token secret, service key, Consul
    token) into dest/<service>, owned by the user the container runs as, 0400 in a 0500
    folder, as shopctl gives them: the compose containers mount them read-only."""
    dest.mkdir(parents=True, exist_ok=True)
    for svc, seen in services.items():
        folder = dest / svc
        run(["docker", "cp", f"shopctl-{name}-{svc}:{SECRETS_DIR}", str(folder)])
        uid, _, gid = seen["user"].partition(":")
        for path in [*folder.iterdir(), folder]:
            try:
                os.chown(path, int(uid), int(gid or uid))
                path.chmod(0o500 if path.is_dir() else 0o400)
            except (PermissionError, ValueError):  # not root: readable by any user instead
                path.chmod(0o555 if path.is_dir() else 0o444)


def write_broker_files(project_dir: Path, dest: Path) -> None:
    """The project's RabbitMQ user as shopctl's broker imports it at boot, into dest/
    (mounted at RABBITMQ_DIR): the definitions and the config file that loads them."""
    from shopctl.broker import definitions
    from shopctl.config import load_config

    dest.mkdir(parents=True)
    (dest / "rabbitmq-definitions.json").write_text(
        definitions(load_config(project_dir / "shop.yaml")) + "\n"
    )
    (dest / "rabbitmq.conf").write_text(f"load_definitions = {RABBITMQ_DEFINITIONS}\n")
    for path in [dest, *dest.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the broker runs as its own user


# ---- compose ----------------------------------------------------------------------------------


def http_check(port: int, path: str) -> list[str]:
    code = (
        f"import urllib.request; urllib.request.urlopen("
        f"'http://127.0.0.1:{port}{path}', timeout=2)"
    )  # non-2xx raises -> exit 1
    return ["CMD", "python3", "-c", code]


def grpc_check(port: int) -> list[str]:
    code = (
        "import grpc, sys; from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g; "
        f"ch = grpc.insecure_channel('127.0.0.1:{port}'); "
        "r = g.HealthStub(ch).Check(p.HealthCheckRequest(service=''), timeout=2); "
        "sys.exit(0 if r.status == p.HealthCheckResponse.SERVING else 1)"
    )
    return ["CMD", "python3", "-c", code]


# Consul: a leader elected (shopctl waits for /v1/status/leader to be non-empty).
CONSUL_CHECK = [
    "CMD",
    "python3",
    "-c",
    "import urllib.request, sys; "
    "sys.exit(0 if len(urllib.request.urlopen('http://127.0.0.1:8500/v1/status/leader',"
    " timeout=2).read().strip()) > 2 else 1)",
]
# RabbitMQ: the AMQP 0-9-1 protocol header answered by a Connection.Start method frame
# (shopctl goes one step further and logs in as guest).
RABBIT_CHECK = [
    "CMD",
    "python3",
    "-c",
    "import socket, sys; s = socket.create_connection(('127.0.0.1', 5672), timeout=2); "
    "s.sendall(b'AMQP\\x00\\x00\\x09\\x01'); sys.exit(0 if s.recv(1) == b'\\x01' else 1)",
]


def duration(value: object) -> str:
    return f"{value}s" if isinstance(value, int | float) else str(value)


def healthcheck(
    test: list[str], interval: object = "1s", timeout: object = "2s", start_period: object = "30s"
) -> dict:
    return {
        "test": test,
        "interval": duration(interval),
        "timeout": duration(timeout),
        "retries": 3,
        "start_period": duration(start_period),
    }


def compose_file(data: dict, services: dict[str, dict], files: Path, lean: bool = False) -> dict:
    """`files`: the folder holding secrets/<service>/ and rabbitmq/ (see copy_secrets,
    write_broker_files). Every service waits for consul and rabbitmq to be healthy (the
    file of issue 4), or with `lean` only the Nameko ones, the only ones that use the
    broker, wait for rabbitmq (what a compose user would write)."""
    name = data["project"]
    infra = data["infra"]
    doc: dict = {"version": "2.4", "services": {}, "volumes": {}}
    doc["services"]["consul"] = {
        "image": infra["consul"]["image"],
        "hostname": "consul",
        "ports": [f"127.0.0.1:{infra['consul']['port']}:8500"],
        "restart": "on-failure",
        "healthcheck": healthcheck(CONSUL_CHECK),
    }
    doc["services"]["rabbitmq"] = {
        "image": infra["rabbitmq"]["image"],
        "hostname": "rabbitmq",
        "ports": [f"127.0.0.1:{infra['rabbitmq']['port']}:5672"],
        "volumes": ["rabbitmq-data:/var/lib/rabbitmq", f"{files / 'rabbitmq'}:{RABBITMQ_DIR}:ro"],
        "environment": [f"RABBITMQ_CONFIG_FILES={RABBITMQ_DIR}/*.conf"],
        "restart": "on-failure",
        "healthcheck": healthcheck(RABBIT_CHECK),
    }
    doc["volumes"]["rabbitmq-data"] = {}
    for svc in SERVICES:
        cfg = data["services"][svc]
        port = cfg["port"]
        health = cfg.get("health", {})
        # The services reach infra by its shopctl container name; here it is the service name.
        env = [
            e.replace(f"shopctl-{name}-consul", "consul").replace(
                f"shopctl-{name}-rabbitmq", "rabbitmq"
            )
            for e in services[svc]["env"]
        ]
        env = [e.replace("$", "$$") for e in env]  # compose interpolates $
        ports = [f"127.0.0.1:{port}:{port}"]
        if cfg.get("metrics_port"):
            ports.append(f"127.0.0.1:{cfg['metrics_port']}:{cfg['metrics_port']}")
        test = (
            grpc_check(port)
            if cfg["kind"] == "grpc"
            else http_check(port, health.get("path", "/health"))
        )
        depends = {"consul": {"condition": "service_healthy"}}
        if not lean or cfg["kind"] == "nameko":
            depends["rabbitmq"] = {"condition": "service_healthy"}
        for dep in cfg.get("depends_on", []):
            depends[dep] = {"condition": "service_healthy"}
        doc["services"][svc] = {
            "image": services[svc]["image"],
            "hostname": svc,
            "environment": env,
            "ports": ports,
            "volumes": [f"{svc}-data:/data", f"{files / 'secrets' / svc}:{SECRETS_DIR}:ro"],
            "restart": "on-failure",
            "depends_on": depends,
            "healthcheck": healthcheck(
                test,
                health.get("interval", DEFAULT_INTERVAL),
                health.get("timeout", "2s"),
                health.get("start_period", "30s"),
            ),
        }
        doc["volumes"][f"{svc}-data"] = {}
    return doc


def compose_health(project: str) -> dict[str, str]:
    ids = run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]
    ).stdout.split()
    if not ids:
        return {}
    attrs = json.loads(run(["docker", "inspect", *ids]).stdout)
    return {
        a["Config"]["Labels"].get("com.docker.compose.service", a["Name"]): (
            (a["State"].get("Health") or {}).get("Status") or a["State"]["Status"]
        )
        for a in attrs
    }


def timed_compose_up(workdir: Path, project: str) -> float:
    base = ["docker-compose", "-p", project, "-f", str(workdir / "docker-compose.yml")]
    expected = {"consul", "rabbitmq", *SERVICES}
    start = time.perf_counter()
    run([*base, "up", "-d"], timeout=SHOPCTL_TIMEOUT)
    while True:
        health = compose_health(project)
        if set(health) == expected and all(v == "healthy" for v in health.values()):
            return time.perf_counter() - start
        if time.perf_counter() - start > HEALTH_TIMEOUT:
            raise RuntimeError(f"compose services not healthy in {HEALTH_TIMEOUT:.0f}s: {health}")
        time.sleep(POLL)


def timed_compose_noop(workdir: Path, project: str) -> float:
    """`docker-compose up -d` on the running project, and one look that every container
    is healthy (shopctl's no-op ends with Consul's word that every check passes)."""
    base = ["docker-compose", "-p", project, "-f", str(workdir / "docker-compose.yml")]
    start = time.perf_counter()
    run([*base, "up", "-d"], timeout=SHOPCTL_TIMEOUT)
    health = compose_health(project)
    elapsed = time.perf_counter() - start
    if not all(v == "healthy" for v in health.values()):
        raise RuntimeError(f"compose no-op left services unhealthy: {health}")
    return elapsed


def compose_down(workdir: Path, project: str) -> None:
    run(
        [
            "docker-compose",
            "-p",
            project,
            "-f",
            str(workdir / "docker-compose.yml"),
            "down",
            "-v",
            "--remove-orphans",
        ],
        check=False,
        timeout=300,
    )


# ---- main -------------------------------------------------------------------------------------


def check_tools() -> None:
    if shutil.which("docker") is None:
        sys.exit("docker CLI not found")
    if shutil.which("docker-compose") is None:
        sys.exit(
            "docker-compose not found; install docker-compose 1.29 (Debian: "
            "`sudo apt-get install -y docker-compose`)"
        )
    version = run(["docker-compose", "version", "--short"], check=False).stdout.strip()
    if not version.startswith("1.29"):
        log(f"warning: docker-compose {version or '?'} found, the benchmark targets 1.29")


MODES = ("cold", "warm", "compose", "compose-lean", "noop", "compose-noop")


def summarize(samples: dict[str, list[float]]) -> dict:
    med = {mode: statistics.median(v) if v else None for mode, v in samples.items()}
    ratio = lambda a, b: round(med[a] / med[b], 3) if med[a] and med[b] else None  # noqa: E731
    return {
        "runs": {mode: [round(x, 2) for x in v] for mode, v in samples.items()},
        "median_s": {mode: round(m, 2) if m is not None else None for mode, m in med.items()},
        "ratio_warm_over_compose": ratio("warm", "compose"),
        "ratio_warm_over_compose_lean": ratio("warm", "compose-lean"),
        "ratio_cold_over_compose": ratio("cold", "compose"),
        "ratio_noop_over_compose_noop": ratio("noop", "compose-noop"),
        "target_warm_ratio": TARGET,
        "target_met": (ratio("warm", "compose") or 99) <= TARGET,
        "target_noop_s": NOOP_TARGET,
        "noop_target_met": (med["noop"] or 99) < NOOP_TARGET,
    }


def table(result: dict) -> str:
    lines = [f"{'mode':<13}{'median s':>9}  runs"]
    for mode in MODES:
        med = result["median_s"][mode]
        runs = ", ".join(f"{x:.2f}" for x in result["runs"][mode])
        lines.append(f"{mode:<13}{(f'{med:.2f}' if med is not None else '-'):>9}  {runs}")
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines.append(
        f"warm/compose = {result['ratio_warm_over_compose']} "
        f"(target <= {TARGET}: {met(result['target_met'])})"
    )
    lines.append(f"warm/compose-lean = {result['ratio_warm_over_compose_lean']}")
    lines.append(f"cold/compose = {result['ratio_cold_over_compose']}")
    lines.append(
        f"noop median {result['median_s']['noop']} s (target < {NOOP_TARGET} s: "
        f"{met(result['noop_target_met'])}); noop/compose-noop = "
        f"{result['ratio_noop_over_compose_noop']}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n", "--repeat", type=int, default=3, help="repetitions per mode (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--shop-intervals",
        action="store_true",
        help="check the services as often as shop.yaml says (the demo: every 5 s, the "
        "default) instead of every 1 s, on both sides",
    )
    parser.add_argument(
        "--keep-images", action="store_true", help="keep the project's images afterwards"
    )
    parser.add_argument(
        "--noop",
        type=int,
        default=NOOP_RUNS,
        help=f"no-op `up`s timed per repetition, each side (default {NOOP_RUNS})",
    )
    args = parser.parse_args()
    check_tools()

    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    tmp = Path(tempfile.mkdtemp(prefix="shopctl-bench-"))
    project_dir = tmp / "project"
    project_dir.mkdir()
    compose_dir = tmp / "compose"
    compose_dir.mkdir()
    # Unique project name, free host ports, 1s health intervals (as the acceptance tests).
    data = copy_demo_shop(REPO, project_dir, prefix="b")
    if args.shop_intervals:  # back to shop.yaml's own intervals
        shipped = yaml.safe_load((REPO / "shop.yaml").read_text())["services"]
        for svc, cfg in data["services"].items():
            cfg["health"].pop("interval")
            if "interval" in (shipped[svc].get("health") or {}):
                cfg["health"]["interval"] = shipped[svc]["health"]["interval"]
        (project_dir / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    name = data["project"]
    compose_project = f"{name}c"
    log(f"project {name} in {project_dir}; compose project {compose_project}")
    error = None
    try:
        for i in range(1, args.repeat + 1):
            remove_project_images(name)
            t = timed_shopctl_up(project_dir)
            samples["cold"].append(t)
            log(f"run {i}: cold shopctl up {t:.2f}s")
            shopctl(project_dir, "down", "--volumes", timeout=300)

            t = timed_shopctl_up(project_dir)
            samples["warm"].append(t)
            log(f"run {i}: warm shopctl up {t:.2f}s")
            time.sleep(SETTLE)
            noop = [timed_shopctl_up(project_dir) for _ in range(args.noop)]
            samples["noop"] += noop
            log(f"run {i}: no-op shopctl up, median {median(noop)}")
            services = inspect_services(name)
            if i == 1:  # the same project state every time
                copy_secrets(name, services, compose_dir / "secrets")
                write_broker_files(project_dir, compose_dir / "rabbitmq")
            shopctl(project_dir, "down", "--volumes", timeout=300)

            (compose_dir / "docker-compose.yml").write_text(
                yaml.safe_dump(compose_file(data, services, compose_dir), sort_keys=False)
            )
            try:
                t = timed_compose_up(compose_dir, compose_project)
                log(f"run {i}: docker-compose up {t:.2f}s")
                time.sleep(SETTLE)
                noop = [timed_compose_noop(compose_dir, compose_project) for _ in range(args.noop)]
            finally:
                compose_down(compose_dir, compose_project)
            samples["compose"].append(t)
            samples["compose-noop"] += noop
            log(f"run {i}: no-op docker-compose up -d, median {median(noop)}")

            (compose_dir / "docker-compose.yml").write_text(
                yaml.safe_dump(
                    compose_file(data, services, compose_dir, lean=True), sort_keys=False
                )
            )
            try:
                t = timed_compose_up(compose_dir, compose_project)
            finally:
                compose_down(compose_dir, compose_project)
            samples["compose-lean"].append(t)
            log(f"run {i}: docker-compose up, only nameko services waiting for rabbitmq {t:.2f}s")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
        log(f"stopped early: {error}")
    finally:
        run(
            [sys.executable, "-m", "shopctl", "down", "--volumes"],
            cwd=project_dir,
            check=False,
            timeout=300,
            env=shopctl_env(),
        )
        compose_down(compose_dir, compose_project)
        if not args.keep_images:
            remove_project_images(name)
        shutil.rmtree(tmp, ignore_errors=True)

    result = summarize(samples)
    result.update(
        project=name,
        repeat=args.repeat,
        check_intervals="shop.yaml's" if args.shop_intervals else "1s",
        error=error,
        compose_version=run(["docker-compose", "version", "--short"], check=False).stdout.strip(),
        noop_runs_per_repeat=args.noop,
        note="cold = service images removed, base images and ~/.cache/shopctl kept",
    )
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
