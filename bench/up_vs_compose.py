"""Benchmark for issue 4: `shopctl up` (warm and cold) against docker-compose 1.29
starting the same images with equivalent healthchecks.

One run does, N times (default 3), on a private copy of the demo shop (unique project
name, free host ports, health interval 1s):

  cold     remove the project's service images (label io.shopctl.project=<name>; the
           base images shopctl/python, shopctl/consul, shopctl/rabbitmq are KEPT, and so
           is shopctl's build cache under ~/.cache/shopctl), then time `shopctl up`
           until it exits 0 (= every service passing in Consul); `shopctl down --volumes`.
  warm     images built: time `shopctl up` the same way; read the containers' image
           tags and environment with `docker inspect`; `shopctl down --volumes`.
  compose  generate a docker-compose file (in a temp dir) with those same images plus
           consul and rabbitmq, healthchecks equivalent to shopctl's checks and
           `depends_on: condition: service_healthy`; time `docker-compose up -d` plus
           polling `docker inspect` until every container is healthy;
           `docker-compose down -v`.

Every duration is time.perf_counter() around the CLI subprocess (plus, for compose,
the health polling that follows it). Prints a table (median per mode, and the ratio
warm/compose, target <= 0.7) or JSON with --json.

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
TARGET = 0.7
POLL = 0.5  # seconds between health polls, as shopctl's own wait loop
HEALTH_TIMEOUT = 300.0
SHOPCTL_TIMEOUT = 900.0


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


def shopctl_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k not in ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR")
    }


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
    """{service: {image, env}} of the running shopctl containers."""
    containers = [f"shopctl-{name}-{svc}" for svc in SERVICES]
    attrs = json.loads(run(["docker", "inspect", *containers]).stdout)
    return {
        svc: {"image": a["Config"]["Image"], "env": a["Config"]["Env"]}
        for svc, a in zip(SERVICES, attrs, strict=True)
    }


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


def compose_file(data: dict, services: dict[str, dict]) -> dict:
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
        "volumes": ["rabbitmq-data:/var/lib/rabbitmq"],
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
        depends = {
            "consul": {"condition": "service_healthy"},
            "rabbitmq": {"condition": "service_healthy"},
        }
        for dep in cfg.get("depends_on", []):
            depends[dep] = {"condition": "service_healthy"}
        doc["services"][svc] = {
            "image": services[svc]["image"],
            "hostname": svc,
            "environment": env,
            "ports": ports,
            "volumes": [f"{svc}-data:/data"],
            "restart": "on-failure",
            "depends_on": depends,
            "healthcheck": healthcheck(
                test,
                health.get("interval", "1s"),
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


def summarize(samples: dict[str, list[float]]) -> dict:
    med = {mode: statistics.median(v) if v else None for mode, v in samples.items()}
    ratio = lambda a, b: round(med[a] / med[b], 3) if med[a] and med[b] else None  # noqa: E731
    return {
        "runs": {mode: [round(x, 2) for x in v] for mode, v in samples.items()},
        "median_s": {mode: round(m, 2) if m is not None else None for mode, m in med.items()},
        "ratio_warm_over_compose": ratio("warm", "compose"),
        "ratio_cold_over_compose": ratio("cold", "compose"),
        "target_warm_ratio": TARGET,
        "target_met": (ratio("warm", "compose") or 99) <= TARGET,
    }


def table(result: dict) -> str:
    lines = [f"{'mode':<10}{'median s':>10}  runs"]
    for mode in ("cold", "warm", "compose"):
        med = result["median_s"][mode]
        runs = ", ".join(f"{x:.2f}" for x in result["runs"][mode])
        lines.append(f"{mode:<10}{(f'{med:.2f}' if med is not None else '-'):>10}  {runs}")
    lines.append(
        f"warm/compose = {result['ratio_warm_over_compose']} (target <= {TARGET}: "
        f"{'met' if result['target_met'] else 'NOT met'})"
    )
    lines.append(f"cold/compose = {result['ratio_cold_over_compose']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n", "--repeat", type=int, default=3, help="repetitions per mode (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--keep-images", action="store_true", help="keep the project's images afterwards"
    )
    args = parser.parse_args()
    check_tools()

    samples: dict[str, list[float]] = {"cold": [], "warm": [], "compose": []}
    tmp = Path(tempfile.mkdtemp(prefix="shopctl-bench-"))
    project_dir = tmp / "project"
    project_dir.mkdir()
    compose_dir = tmp / "compose"
    compose_dir.mkdir()
    # Unique project name, free host ports, 1s health intervals (as the acceptance tests).
    data = copy_demo_shop(REPO, project_dir, prefix="b")
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
            services = inspect_services(name)
            shopctl(project_dir, "down", "--volumes", timeout=300)

            (compose_dir / "docker-compose.yml").write_text(
                yaml.safe_dump(compose_file(data, services), sort_keys=False)
            )
            try:
                t = timed_compose_up(compose_dir, compose_project)
            finally:
                compose_down(compose_dir, compose_project)
            samples["compose"].append(t)
            log(f"run {i}: docker-compose up {t:.2f}s")
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
        error=error,
        compose_version=run(["docker-compose", "version", "--short"], check=False).stdout.strip(),
        note="cold = service images removed, base images and ~/.cache/shopctl kept",
    )
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
