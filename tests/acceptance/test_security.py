"""Consul with ACLs, secrets out of KV and the environment, RabbitMQ without guest
(issue 13).

An attacker here is anyone with a shell on the host: 127.0.0.1 does not separate users.
Each test tries an attack against the real parts (the demo shop up on both runtimes,
its own Consul with ACLs) and checks that it is refused, and that the owner's paths
(`config set/get`, `status`, registration) still work.
"""

from __future__ import annotations

import json
import os
import stat

import docker
import httpx
import pytest

from shopctl.config import load_config
from shopctl.state import ProjectState
from shopctl.testing import consul_headers
from tests.acceptance.test_shop_roundtrip import make_project, shopctl_in

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]


@pytest.fixture(scope="module", params=["docker", "local"])
def shop(request, tmp_path_factory):
    root, data = make_project(tmp_path_factory.mktemp(f"acl-{request.param}"))
    runtime = request.param
    try:
        up = shopctl_in(root, "up", "--runtime", runtime)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield root, data, runtime
    finally:
        shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", runtime, timeout=180)


def consul(data) -> str:
    return f"http://127.0.0.1:{data['infra']['consul']['port']}"


def kv(data, key: str = "") -> str:
    return f"{consul(data)}/v1/kv/shopctl/{data['project']}/{key}"


def secret(root, name: str) -> str:
    return (ProjectState(root).secrets_dir / name).read_text().strip()


def test_anonymous_reads_and_writes_of_consul_are_refused(shop):
    root, data, _ = shop
    # A listing hides what the token may not read (404: nothing there for it); a key
    # asked for by name is refused.
    assert httpx.get(kv(data), params={"recurse": "true"}, timeout=5).status_code == 404
    assert httpx.get(kv(data, "payments/failure_rate"), params={"raw": "1"},
                     timeout=5).status_code == 403
    # The attack of the issue: a fault knob set by anyone broke payments.
    put = httpx.put(kv(data, "payments/failure_rate"), content=b"1", timeout=5)
    assert put.status_code == 403
    stored = httpx.get(kv(data, "payments/failure_rate"), params={"raw": "1"},
                       headers=consul_headers(root), timeout=5)
    assert stored.text != "1"
    # Nor can anyone list the shop or register a service of their own in it.
    assert httpx.get(f"{consul(data)}/v1/agent/services", timeout=5).json() == {}
    fake = {"Name": "payments", "ID": "evil-payments", "Port": 1}
    assert httpx.put(f"{consul(data)}/v1/agent/service/register", json=fake,
                     timeout=5).status_code == 403


def test_the_token_secret_is_nowhere_in_consul(shop):
    root, data, _ = shop
    entries = httpx.get(kv(data), params={"recurse": "true"}, headers=consul_headers(root),
                        timeout=5).json()
    jwt = secret(root, "jwt_secret")
    import base64

    values = [base64.b64decode(e["Value"]).decode() for e in entries if e.get("Value")]
    assert values and jwt not in values  # settings are there, the secret is not
    assert not any(e["Key"].endswith("jwt_secret") for e in entries)


def test_a_service_token_reads_its_own_settings_only(shop):
    root, data, _ = shop
    token = {"X-Consul-Token": secret(root, "consul/payments")}
    own = httpx.get(kv(data, "payments/failure_rate"), params={"raw": "1"}, headers=token,
                    timeout=5)
    assert own.status_code == 200
    assert httpx.put(kv(data, "users/secret_note"), content=b"x", headers=consul_headers(root),
                     timeout=5).json() is True
    other = httpx.get(kv(data, "users/secret_note"), headers=token, timeout=5)
    assert other.status_code == 403
    listing = httpx.get(kv(data), params={"recurse": "true"}, headers=token, timeout=5).json()
    assert {e["Key"].split("/")[2] for e in listing} == {"payments"}
    write = httpx.put(kv(data, "payments/failure_rate"), content=b"1", headers=token, timeout=5)
    assert write.status_code == 403
    as_other = {"Name": "users", "ID": "evil-users", "Port": 1}
    assert httpx.put(f"{consul(data)}/v1/agent/service/register", json=as_other,
                     headers=token, timeout=5).status_code == 403


def test_each_service_is_registered_under_its_own_token(shop):
    root, data, _ = shop
    services = httpx.get(f"{consul(data)}/v1/agent/services", headers=consul_headers(root),
                         timeout=5).json()
    ours = {e["Service"] for e in services.values()
            if e.get("Meta", {}).get("project") == data["project"]}
    assert ours == set(data["services"])
    config = load_config(root / "shop.yaml")
    for name in ours:  # a token sees the service it registers and those it calls, no other
        token = {"X-Consul-Token": secret(root, f"consul/{name}")}
        seen = httpx.get(f"{consul(data)}/v1/agent/services", headers=token, timeout=5).json()
        assert {e["Service"] for e in seen.values()} == {name, *config.service(name).depends_on}


def test_the_owner_still_sets_and_reads_settings_and_sees_status(shop):
    root, _, runtime = shop
    done = shopctl_in(root, "config", "set", "payments.latency_ms", "7")
    assert done.returncode == 0, done.stderr
    got = shopctl_in(root, "config", "get", "payments.latency_ms", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["value"] == "7"
    status = shopctl_in(root, "status", "--runtime", runtime, "--json")
    rows = json.loads(status.stdout)["services"]
    assert status.returncode == 0 and {r["health"] for r in rows} == {"passing"}


def test_secrets_are_files_of_the_service_not_its_environment(shop):
    root, data, runtime = shop
    config = load_config(root / "shop.yaml")
    values = [secret(root, "jwt_secret"), secret(root, "consul/management")]
    for name in data["services"]:
        own_token = secret(root, f"consul/{name}")
        if runtime == "docker":
            container = docker.from_env().containers.get(f"shopctl-{config.project}-{name}")
            env = "\n".join(container.attrs["Config"]["Env"])
            found = container.exec_run(["stat", "-c", "%u %a", "/run/shop-secrets/jwt_secret",
                                        "/run/shop-secrets/consul_token", "/run/shop-secrets"])
            assert found.exit_code == 0, found.output
            owners = found.output.decode().split("\n")[:3]
            assert owners == ["10001 400", "10001 400", "10001 500"]
        else:
            record = json.loads(ProjectState(root).run_file(name).read_text())
            with open(f"/proc/{record['child_pid']}/environ", "rb") as environ:
                env = environ.read().decode(errors="replace")
            folder = ProjectState(root).service_secrets_dir(name)
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            for file in folder.iterdir():
                assert stat.S_IMODE(file.stat().st_mode) == 0o600
            assert (folder / "consul_token").read_text().strip() == own_token
        for value in (*values, own_token):
            assert value not in env, f"a secret is in the environment of {name}"
    assert stat.S_IMODE(os.stat(ProjectState(root).secrets_dir / "consul").st_mode) == 0o700


def test_a_secret_an_older_shopctl_left_in_kv_is_removed_by_up(shop):
    root, data, runtime = shop
    headers = consul_headers(root)
    legacy = kv(data, "_shared/jwt_secret")
    assert httpx.put(legacy, content=secret(root, "jwt_secret").encode(), headers=headers,
                     timeout=5).json() is True
    up = shopctl_in(root, "up", "--runtime", runtime)
    assert up.returncode == 0, up.stderr[-2000:]
    assert httpx.get(legacy, headers=headers, timeout=5).status_code == 404


# -- RabbitMQ ---------------------------------------------------------------------------

def test_the_project_broker_refuses_guest_and_lets_the_project_user_in(shop):
    root, data, _ = shop
    from shopctl import broker

    config = load_config(root / "shop.yaml")
    port = data["infra"]["rabbitmq"]["port"]
    assert not broker.logs_in(broker.guest_uri("127.0.0.1", port))
    assert not broker.logs_in(f"amqp://{broker.user(config)}:wrong@127.0.0.1:{port}/")
    assert broker.logs_in(broker.uri(config, "127.0.0.1", port))
    assert broker.user(config) == f"shopctl-{data['project']}"


def test_a_saga_over_the_broker_runs_as_the_project_user(shop):
    """orders is a Nameko service: its RPCs go over the broker the project's user opens."""
    root, _, _ = shop
    run = shopctl_in(root, "saga", "run", "order", "-i", "user_id=u-1", "-i",
                     'items=[{"sku": "SKU-MUG-001", "qty": 1}]', "--json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert json.loads(run.stdout)["status"] == "completed"


def test_no_secret_is_printed_by_up_or_status(shop):
    root, _, runtime = shop
    values = [secret(root, name) for name in ("rabbitmq_password", "jwt_secret", "service_key",
                                              "consul/management")]
    for args in (["up", "--runtime", runtime, "--verbose"], ["status", "--json"],
                 ["up", "--dry-run", "--json"]):
        done = shopctl_in(root, *args)
        for value in values:
            assert value not in done.stdout + done.stderr, args


def test_a_broker_the_local_runtime_reuses_gets_the_user_and_keeps_its_guest(tmp_path):
    """The machine's broker (started by .ci/run on 5672) is not the project's: the
    project's user is added to it; its guest is its owner's business."""
    import subprocess

    from shopctl import broker

    assert broker.answers("127.0.0.1", 5672), "the machine's RabbitMQ is not running"
    root, data = make_project(tmp_path)
    text = (root / "shop.yaml").read_text().replace(
        f"port: {data['infra']['rabbitmq']['port']}\n", "port: 5672\n", 1)
    (root / "shop.yaml").write_text(text)
    config = load_config(root / "shop.yaml")
    assert config.infra.rabbitmq.port == 5672
    try:
        up = shopctl_in(root, "up", "users", "--runtime", "local")
        assert up.returncode == 0, up.stderr[-2000:]
        assert "reusing the broker" in up.stderr
        assert broker.logs_in(broker.uri(config, "127.0.0.1", 5672))
        assert broker.logs_in(broker.guest_uri("127.0.0.1", 5672))
    finally:
        shopctl_in(root, "down", "--runtime", "local", timeout=180)
        subprocess.run(["rabbitmqctl", "delete_user", broker.user(config)],
                       capture_output=True, timeout=60)


def test_consul_runs_unprivileged_and_only_it_reads_its_acl_config(shop):
    _, data, runtime = shop
    if runtime != "docker":
        return  # locally the agent is the user's own process, its config file 0600
    container = docker.from_env().containers.get(f"shopctl-{data['project']}-consul")
    top = container.top(ps_args="-o pid,uid")
    users = {row[top["Titles"].index("UID")] for row in top["Processes"]}
    assert users == {"65534"}
    found = container.exec_run(["stat", "-c", "%u %a", "/run/shopctl/consul-acl.json"])
    assert found.output.decode().strip() == "65534 400"
