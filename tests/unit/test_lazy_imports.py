"""What start-up does not load: `shopctl --help` stays on typer alone, and a no-op
docker `up` (everything running and unchanged) never imports the slow clients that
only some paths need: httpx (probes, metrics), grpc (gRPC probes), kombu (a broker
login). Each import here is a fresh interpreter, so nothing loaded by other tests
counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLOW = ("httpx", "grpc", "kombu")


def loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    probe = (f"{code}\nimport sys\n"
             f"print('loaded:', *(n for n in {names!r} if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return out.stdout.splitlines()[-1].split()[1:]  # after whatever the code printed


def test_help_loads_no_engine_client_no_config_model_and_no_rich():
    code = ("from shopctl.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    heavy = ("docker", "requests", "httpx", "pydantic", "yaml", "rich", "kombu", "grpc",
             "consul", "jinja2")
    assert loaded_after(code, heavy) == []


def test_the_modules_of_a_no_op_docker_up_load_no_slow_client():
    code = ("import shopctl.cli.app, shopctl.cli.render, shopctl.cli.live, shopctl.shop, "
            "shopctl.orchestrate, shopctl.runtime.docker, shopctl.consul_acl, "
            "shopctl.registry, shopctl.prom.docker, shopctl.saga.worker, shopctl.status")
    assert loaded_after(code, SLOW) == []


def test_psycopg_is_loaded_only_for_a_postgresql_saga_log():
    code = ("import os, tempfile\n"
            "import shopctl.saga.engine, shopctl.saga.session, shopctl.saga.worker\n"
            "from shopctl.saga.store import open_log\n"
            "open_log(os.path.join(tempfile.mkdtemp(), 'saga.db')).close()")
    assert loaded_after(code, ("psycopg",)) == []
