"""main.py as the runtimes start it: a real process, reached over the network."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SERVICE_DIR = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(new_store, service_key):
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "CONSUL_HTTP_ADDR"}
    env.update({"SHOP_SERVICE": "payments", "SHOP_HOST": "127.0.0.1", "SHOP_PORT": str(port),
                "SHOP_SERVICE_KEY": service_key, **new_store()})
    proc = subprocess.Popen([sys.executable, "main.py"], cwd=SERVICE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"payments did not become healthy:\n{proc.communicate()[0]}")
        time.sleep(0.1)
    yield proc, base, Path(env["SHOP_DATA_DIR"])
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_process_serves_and_exits_cleanly_on_sigterm(server, backend, credential):
    proc, base, data_dir = server

    health = httpx.get(f"{base}/health").json()
    charge = httpx.post(f"{base}/charges", json={"order_id": "o-1", "amount_cents": 1450},
                        headers=credential("charge"))
    metrics = httpx.get(f"{base}/metrics").text
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    output = proc.stdout.read()

    assert health == {"status": "ok", "service": "payments", "database": backend,
                      "breaker": "closed"}
    assert charge.status_code == 201
    assert 'shop_breaker_state{breaker="provider",service="payments"} 0.0' in metrics
    request_sample = ('shop_requests_total{endpoint="/charges",method="POST",'
                      'service="payments",status="201"}')
    assert request_sample in metrics
    assert code == 0
    # The state is where the backend keeps it: nothing in the data folder on PostgreSQL.
    assert (data_dir / "payments.db").exists() == (backend == "sqlite")
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["service"] == "payments" for line in lines)
