"""shopctl installed from a wheel into a fresh venv (`pip install .`, not editable) runs a
saga of a shop that is not the demo, from a folder outside this checkout: the contract
comes from that shop's shop.yaml and protos/, nothing from shopctl's own source tree.

The shop (tests/acceptance/wheel_shop) has an HTTP service on the stdlib following the
convention and a gRPC service whose contract is its own .proto; consistency is read
from each service's own state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from shopctl.saga.protos import ProtoSet
from shopctl.testing import free_ports, wait_for

REPO = Path(__file__).resolve().parents[2]
SHOP = Path(__file__).with_name("wheel_shop")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The wheel test's shop, copied outside the checkout, its two services running."""
    root = tmp_path_factory.mktemp("parcels")
    shutil.copytree(SHOP / "protos", root / "protos")
    shutil.copytree(SHOP / "services", root / "services")
    shipping, labels, metrics = free_ports(3)
    text = (SHOP / "shop.yaml.in").read_text()
    for name, port in (("SHIPPING", shipping), ("LABELS", labels), ("METRICS", metrics)):
        text = text.replace(f"@{name}@", str(port))
    (root / "shop.yaml").write_text(text)
    procs = [subprocess.Popen([sys.executable, "server.py", str(port)],
                              cwd=root / "services" / name, stdout=subprocess.DEVNULL)
             for name, port in (("shipping", shipping), ("labels", labels))]
    try:
        wait_for(lambda: _up(shipping), 30, "the shipping service")
        wait_for(lambda: _label_state(root, labels, "none") is not None, 30, "labels")
        yield root, shipping, labels
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _label_state(root: Path, port: int, key: str) -> str | None:
    method = ProtoSet(root / "protos").find("Get", "labels")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method.full_name, method.input.SerializeToString,
                                   method.output.FromString)
        try:
            return call(method.input(key=key), timeout=2).state
        except grpc.RpcError:
            return None


def shopctl(venv: Path, root: Path, *args: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHOPCTL_FILE")}
    done = subprocess.run([str(venv / "bin" / "shopctl"), *args, "--json"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def keys(run: dict) -> dict[str, str]:
    return {e["step"]: f"saga-{run['id']}-{e['step']}" for e in run["events"]}


def test_the_installed_shopctl_is_not_this_checkout(wheel_venv):
    where = subprocess.run([str(wheel_venv / "bin" / "python"), "-c",
                            "import shopctl; print(shopctl.__file__)"], cwd="/",
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(wheel_venv)) and not where.startswith(str(REPO))


def test_a_saga_of_another_shop_completes_from_the_wheel(wheel_venv, shop):
    root, shipping, labels = shop
    code, run = shopctl(wheel_venv, root, "saga", "run", "delivery", "-i", "parcel=p-1")
    assert (code, run["status"]) == (0, "completed"), run.get("error")
    assert run["input"] == {"parcel": "p-1"}
    book, label = keys(run)["book"], keys(run)["label"]
    assert httpx.get(f"http://127.0.0.1:{shipping}/").json()[book] == "booked"
    assert _label_state(root, labels, label) == "printed"
    results = {e["step"]: e["result"] for e in run["events"] if e["state"] == "succeeded"}
    assert results["book"] == {"slot": book[-6:], "parcel": "p-1"}
    assert results["label"] == {"label_id": "L-" + label[-8:]}


def test_a_refusal_from_the_grpc_service_compensates_the_http_step(wheel_venv, shop):
    root, shipping, labels = shop
    code, run = shopctl(wheel_venv, root, "saga", "run", "delivery", "-i", "parcel=unprintable")
    assert (code, run["status"]) == (1, "compensated")
    assert "INVALID_ARGUMENT" in run["error"]
    book, label = keys(run)["book"], keys(run)["label"]
    assert httpx.get(f"http://127.0.0.1:{shipping}/").json()[book] == "freed"
    assert _label_state(root, labels, label) == ""  # refused: nothing printed, nothing voided


def test_check_from_the_wheel_resolves_both_services(wheel_venv, shop):
    root, _, labels = shop
    code, report = shopctl(wheel_venv, root, "saga", "check", "delivery")
    assert code == 0 and report["ok"], report
    targets = {c["call"]: c["target"] for c in report["calls"]}
    assert targets["labels.print"] == f"parcels.labels.v1.Labels/Print at 127.0.0.1:{labels}"


def test_check_names_what_is_missing_and_exits_1(wheel_venv, shop):
    root, shipping, _ = shop
    (closed,) = free_ports(1)
    text = (root / "shop.yaml").read_text()
    broken = text.replace(f"port: {shipping}", f"port: {closed}").replace(
        "call: labels.print", "call: labels.stamp")
    (root / "broken.yaml").write_text(broken)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(wheel_venv / "bin" / "shopctl"), "-f", "broken.yaml", "saga",
                           "check", "delivery"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert "shipping.book_slot (unreachable" in done.stderr
    assert "labels.stamp (" in done.stderr and "no gRPC method 'Stamp'" in done.stderr
    assert "labels.void" not in done.stderr  # what is there is not named as missing
