"""DockerRuntime end to end: real Consul and RabbitMQ containers, the real users service.

The project is the repository's shop.yaml under a fresh name with free host ports, so it
never meets a shop (or a host broker) already running here. Everything the tests make
is removed by project label at the end, images included (by down with images=True).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest

from shopctl import broker, testing
from shopctl.config import ShopConfig, load_config
from shopctl.docker_client import connect
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.images import SERVICE_GID, SERVICE_UID
from shopctl.images.prometheus import PROMETHEUS_GID, PROMETHEUS_UID
from shopctl.images.service import build_service_image
from shopctl.prom import docker as prom_docker
from shopctl.runtime.docker import DockerRuntime, container_name, network_name, volume_name
from shopctl.units import (
    LABEL_HASH,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_SERVICE,
    InfraEndpoints,
    LaunchSpec,
    no_progress,
)

REPO = Path(__file__).resolve().parents[2]
PROJECT = f"t{uuid.uuid4().hex[:8]}"

pytestmark = pytest.mark.docker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition"):
    """shopctl.testing.wait_for with more patience: containers start slower than processes."""
    return testing.wait_for(condition, timeout, what, interval=0.2)


def with_ports(base: ShopConfig, project: str, users_port: int) -> ShopConfig:
    infra = base.infra.model_copy(
        update={
            "consul": base.infra.consul.model_copy(update={"port": free_port()}),
            "rabbitmq": base.infra.rabbitmq.model_copy(update={"port": free_port()}),
        }
    )
    users = base.services["users"].model_copy(update={"port": users_port})
    services = {**base.services, "users": users}
    return base.model_copy(update={"project": project, "infra": infra, "services": services})


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    try:
        return connect()
    except RuntimeUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc.message}")


@pytest.fixture(scope="module")
def config(client) -> Iterator[ShopConfig]:
    config = with_ports(load_config(REPO / "shop.yaml"), PROJECT, free_port())
    yield config
    DockerRuntime().down(config, volumes=True, images=True)
    for image in client.images.list(filters={"label": f"{LABEL_PROJECT}={PROJECT}"}):
        for tag in image.tags:  # only what down had to keep (a test failed holding it)
            client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def runtime(client) -> DockerRuntime:
    return DockerRuntime(client=client)


@pytest.fixture(scope="module")
def endpoints(runtime, config) -> InfraEndpoints:
    return runtime.ensure_infra(config)


def users_spec(endpoints: InfraEndpoints, config_hash: str = "h1") -> LaunchSpec:
    env = {
        "SHOP_JWT_SECRET": secrets.token_hex(16),
        "CONSUL_HTTP_ADDR": endpoints.service_consul_addr,
        "SHOP_AMQP_URI": endpoints.service_amqp_uri,
        "ACCESS_TOKEN_TTL": "900",
    }
    return LaunchSpec(service="users", env=env, config_hash=config_hash)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def by_label(client: docker.DockerClient) -> dict[str, list[str]]:
    label = {"label": f"{LABEL_PROJECT}={PROJECT}"}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=label)],
        "networks": [n.name for n in client.networks.list(filters=label)],
        "volumes": [v.name for v in client.volumes.list(filters=label)],
    }


def project_images(client: docker.DockerClient, project: str = PROJECT) -> list[str]:
    """Tags (ids when untagged) of the images labelled as `project`'s or named in its
    repositories."""
    found = client.images.list(filters={"label": f"{LABEL_PROJECT}={project}"})
    found += client.images.list(filters={"reference": f"shopctl-{project}/*"})
    return sorted({tag for image in found for tag in image.tags or [image.id]})


def test_infra_answers_and_is_reused(runtime, config, endpoints, client):
    leader = httpx.get(f"{endpoints.consul_http}/v1/status/leader", timeout=2).json()
    assert leader
    import kombu

    with kombu.Connection(endpoints.amqp_uri, connect_timeout=3) as connection:
        connection.connect()
        assert connection.connected
    assert endpoints.service_consul_addr == f"shopctl-{PROJECT}-consul:8500"
    assert endpoints.service_amqp_uri == broker.uri(config, f"shopctl-{PROJECT}-rabbitmq", 5672)
    assert endpoints.service_amqp_uri.startswith(f"amqp://shopctl-{PROJECT}:")  # not guest

    consul = client.containers.get(container_name(PROJECT, "consul"))
    started = consul.attrs["State"]["StartedAt"]
    assert runtime.ensure_infra(config) == endpoints
    consul.reload()
    assert consul.attrs["State"]["StartedAt"] == started  # reused, not restarted
    assert runtime.infra_endpoints(config) == endpoints


def test_a_new_broker_holds_the_projects_user_from_boot_and_never_had_guest(
    runtime, config, endpoints, client
):
    """Imported at boot (load_definitions), not by rabbitmqctl once it answers: the
    readiness check ran no command in the container."""
    rabbit = client.containers.get(container_name(PROJECT, "rabbitmq"))
    assert not rabbit.attrs.get("ExecIDs")
    users = rabbit.exec_run(["rabbitmqctl", "-q", "list_users"]).output.decode()
    assert broker.user(config) in users and "guest" not in users
    assert runtime.ensure_infra(config) == endpoints  # the same file: the broker is kept
    assert client.containers.get(rabbit.id).attrs["State"]["StartedAt"] == (
        rabbit.attrs["State"]["StartedAt"])


def test_users_starts_serves_and_is_observed(runtime, config, endpoints, client):
    port = config.services["users"].port
    state = runtime.start_service(config, users_spec(endpoints))
    assert state.state in ("running", "starting")
    assert state.host_port == port and state.config_hash == "h1"
    wait_for(lambda: healthy(port), what="users /health 200")

    observed = runtime.observe(config)["users"]
    assert observed.state == "running"
    assert observed.image and observed.image.startswith(f"shopctl-{PROJECT}/users:")
    assert observed.address and observed.started_at and observed.restarts == 0
    # Consul's checks run in the consul container: the address must work from there.
    probe = f"import urllib.request as u; print(u.urlopen('http://{observed.address}:{port}/health').status)"
    consul = client.containers.get(container_name(PROJECT, "consul"))
    code, out = consul.exec_run(["python3", "-c", probe])
    assert code == 0 and out.decode().strip() == "200"

    lines = list(runtime.logs(config, ["users"], follow=False, tail=None))
    assert any("listening" in line.text for line in lines)
    assert all(line.service == "users" and line.timestamp for line in lines)


def test_replacing_keeps_data_and_swaps_the_container(runtime, config, endpoints):
    port = config.services["users"].port
    first = runtime.start_service(config, users_spec(endpoints, "h1"))
    wait_for(lambda: healthy(port), what="users up")
    second = runtime.start_service(config, users_spec(endpoints, "h2"))
    assert second.instance_id != first.instance_id
    assert runtime.observe(config)["users"].config_hash == "h2"
    wait_for(lambda: healthy(port), what="users up after replace")


def in_users(client: docker.DockerClient, script: str, user: str = "") -> tuple[int, str]:
    """Run `script` in the users container, as its own user unless told otherwise."""
    container = client.containers.get(container_name(PROJECT, "users"))
    code, out = container.exec_run(["sh", "-c", script], user=user)
    return code, out.decode(errors="replace").strip()


def account(port: int, email: str, path: str = "/register") -> int:
    body = {"email": email, "password": "correct horse battery", "name": "Vol Ume"}
    return httpx.post(f"http://127.0.0.1:{port}{path}", json=body, timeout=10).status_code


def test_the_service_runs_unprivileged_and_cannot_change_its_code(
    runtime, config, endpoints, client
):
    port = config.services["users"].port
    runtime.start_service(config, users_spec(endpoints))
    wait_for(lambda: healthy(port), what="users up")
    container = client.containers.get(container_name(PROJECT, "users"))
    assert container.attrs["Config"]["User"] == f"{SERVICE_UID}:{SERVICE_GID}"
    top = container.top(ps_args="-o pid,uid,args")
    uids = {row[top["Titles"].index("UID")] for row in top["Processes"]}
    assert uids == {str(SERVICE_UID)}, top  # every process of the container, seen by the host
    assert in_users(client, "id -u; id -g") == (0, f"{SERVICE_UID}\n{SERVICE_GID}")
    # Nothing of the code, the venv or the system is writable by the service...
    # (find cannot enter root's private folders such as /etc/ssl/private: not writable either)
    writable = in_users(client, "find /app /opt /usr /etc /wheels -writable 2>/dev/null")[1]
    assert writable == ""
    assert in_users(client, "echo x >> /app/main.py")[0] != 0
    # ...its data folder is, and setuid binaries cannot bring root back.
    assert in_users(client, "echo probe > /data/probe && cat /data/probe") == (0, "probe")
    assert in_users(client, "grep NoNewPrivs /proc/1/status")[1].split() == ["NoNewPrivs:", "1"]


def test_data_written_before_survives_a_recreate(runtime, config, endpoints, client):
    port = config.services["users"].port
    runtime.start_service(config, users_spec(endpoints, "h1"))
    wait_for(lambda: healthy(port), what="users up")
    assert account(port, "kept@example.com") == 201
    runtime.start_service(config, users_spec(endpoints, "h2"))  # a new container
    wait_for(lambda: healthy(port), what="users up after recreate")
    assert account(port, "kept@example.com", "/login") == 200
    assert in_users(client, "find /data ! -user shop -o ! -group shop") == (0, "")


def test_a_volume_an_older_shopctl_left_to_root_is_handed_over_with_its_data(
    runtime, config, endpoints, client
):
    port = config.services["users"].port
    runtime.start_service(config, users_spec(endpoints))
    wait_for(lambda: healthy(port), what="users up")
    assert account(port, "older@example.com") == 201
    runtime.stop_service(config, "users")
    # What an older shopctl left: its services ran as root, so root owns every file.
    older = (
        "chown -R 0:0 /data && chmod 755 /data && mkdir -p /data/old/deeper && "
        "echo kept > /data/old/deeper/note && chmod 600 /data/old/deeper/note && "
        "ln -s /nowhere /data/old/dangling"
    )
    volume = {volume_name(PROJECT, "users"): {"bind": "/data", "mode": "rw"}}
    client.containers.run(config.infra.base_image, ["sh", "-c", older], volumes=volume,
                          remove=True)
    seen: list[tuple[str, str]] = []
    runtime.start_service(config, users_spec(endpoints, "h4"),
                          progress=lambda s, m: seen.append((s, m)))
    wait_for(lambda: healthy(port), what="users up on the handed-over volume")
    assert account(port, "older@example.com", "/login") == 200
    assert account(port, "newer@example.com") == 201  # it writes its database again
    assert in_users(client, "echo more >> /data/old/deeper/note && cat /data/old/deeper/note")\
        == (0, "kept\nmore")
    assert in_users(client, "find /data ! -user shop -o ! -group shop") == (0, "")
    assert any(s == "users" and "older shopctl" in m for s, m in seen), seen
    helpers = client.containers.list(
        all=True, filters={"label": [f"{LABEL_PROJECT}={PROJECT}", f"{LABEL_ROLE}=volume-owner"]}
    )
    assert helpers == []
    # Handed over once: the next start finds nothing to do.
    seen.clear()
    runtime.start_service(config, users_spec(endpoints, "h5"),
                          progress=lambda s, m: seen.append((s, m)))
    assert not any("older shopctl" in m for _, m in seen), seen
    wait_for(lambda: healthy(port), what="users up again")


def test_a_new_volume_is_not_inspected_and_its_service_writes_it(
    runtime, config, endpoints, client, monkeypatch
):
    """The engine gives a new volume the owner of the image's /data: nothing to hand
    over, so start_service does not ask the engine for the folder's owner."""
    from shopctl.runtime import docker_volumes

    port = config.services["users"].port
    runtime.stop_service(config, "users")
    client.volumes.get(volume_name(PROJECT, "users")).remove()
    looked: list[object] = []
    monkeypatch.setattr(docker_volumes, "hand_over", lambda *args, **kw: looked.append(args))
    runtime.start_service(config, users_spec(endpoints, "h6"))
    wait_for(lambda: healthy(port), what="users up on a new volume")
    assert account(port, "fresh@example.com") == 201
    assert looked == []
    assert in_users(client, "find /data ! -user shop -o ! -group shop") == (0, "")


def process_uids(client: docker.DockerClient, name: str) -> set[str]:
    """The uids, as the host sees them, of every process of container `name`."""
    top = client.containers.get(name).top(ps_args="-o pid,uid,args")
    return {row[top["Titles"].index("UID")] for row in top["Processes"]}


def ensure_prometheus(runtime: DockerRuntime, config: ShopConfig, progress=no_progress) -> None:
    for spec in prom_docker.units(config):  # the bridge, then Prometheus, as start_infra
        runtime.ensure_unit(config, spec, progress)


def test_prometheus_and_its_bridge_run_unprivileged_and_keep_an_older_root_tsdb(
    runtime, config, endpoints, client
):
    prom = config.infra.prometheus.model_copy(update={"enabled": True, "port": free_port()})
    watched = config.model_copy(update={"infra": config.infra.model_copy(
        update={"prometheus": prom})})
    prometheus, bridge = container_name(PROJECT, "prometheus"), container_name(PROJECT, "promsd")
    tsdb = volume_name(PROJECT, "prometheus")
    nobody = str(PROMETHEUS_UID)
    try:
        ensure_prometheus(runtime, watched)  # a new TSDB: nobody's from the start
        assert process_uids(client, prometheus) == {nobody}
        assert process_uids(client, bridge) == {nobody}
        # What an older shopctl left: its Prometheus ran as root, so root owns the TSDB.
        client.containers.get(prometheus).remove(force=True)
        older = "echo kept > /prometheus/kept && chown -R 0:0 /prometheus"
        client.containers.run(config.infra.base_image, ["sh", "-c", older],
                              volumes={tsdb: {"bind": "/prometheus", "mode": "rw"}}, remove=True)
        seen: list[tuple[str, str]] = []
        ensure_prometheus(runtime, watched, lambda s, m: seen.append((s, m)))  # waits for ready
        assert process_uids(client, prometheus) == {nobody}
        code, out = client.containers.get(prometheus).exec_run(
            ["sh", "-c", f"cat /prometheus/kept; find /prometheus ! -user {nobody} -o "
                         f"! -group {PROMETHEUS_GID}"])
        assert (code, out.decode().strip()) == (0, "kept")
        assert any(s == "prometheus" and "older shopctl" in m for s, m in seen), seen
        # An unchanged `up` keeps every infra unit; turning Prometheus off removes its two.
        ids = {c.name: c.id for c in client.containers.list(
            filters={"label": f"{LABEL_PROJECT}={PROJECT}"})}
        runtime.ensure_infra(watched)
        assert {c.name: c.id for c in client.containers.list(
            filters={"label": f"{LABEL_PROJECT}={PROJECT}"})} == ids
        runtime.ensure_infra(config)
        left = {c.name for c in client.containers.list(all=True)}
        assert prometheus not in left and bridge not in left
        assert set(runtime.observe_units(config)) == {"consul", "rabbitmq"}
    finally:
        for name in (prometheus, bridge):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(tsdb).remove(force=True)


def test_docker_kill_shows_exited_and_is_not_restarted(runtime, config, endpoints, client):
    port = config.services["users"].port
    runtime.start_service(config, users_spec(endpoints))
    wait_for(lambda: healthy(port), what="users up")
    client.containers.get(container_name(PROJECT, "users")).kill()
    state = wait_for(
        lambda: (s := runtime.observe(config)["users"]).state == "exited" and s,
        what="users exited",
    )
    assert state.exit_code == 137
    time.sleep(2)  # an on-failure restart would have happened by now
    assert runtime.observe(config)["users"].state == "exited"


def test_a_busy_port_is_named_with_its_holder(runtime, config, endpoints):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        users = config.services["users"].model_copy(update={"port": busy})
        crowded = config.model_copy(update={"services": {**config.services, "users": users}})
        with pytest.raises(OperationFailed) as caught:
            runtime.start_service(crowded, users_spec(endpoints))
    assert f"port {busy}" in caught.value.message
    assert "pid " in caught.value.message  # the holder, found through /proc


def test_port_owners_name_the_projects_units_and_any_other_container(
    runtime, config, endpoints, client
):
    """For `up`'s port check: a port the project's own infra publishes is that unit's,
    one another container publishes is named by its container (no unit)."""
    other = free_port()
    stranger = client.containers.run(
        config.infra.base_image, ["sleep", "60"], detach=True, remove=True,
        ports={"9999/tcp": ("127.0.0.1", other)}, labels={LABEL_PROJECT: f"{PROJECT}x"},
    )
    try:
        consul = config.infra.consul.port
        owners = runtime.port_owners(config, [consul, other, free_port()])
    finally:
        stranger.remove(force=True)
    assert owners == {consul: ("consul", f"container {container_name(PROJECT, 'consul')}"),
                      other: (None, f"container {stranger.name}")}


def test_logs_follow_sees_a_replaced_container(runtime, config, endpoints):
    port = config.services["users"].port
    runtime.start_service(config, users_spec(endpoints))
    wait_for(lambda: healthy(port), what="users up")
    stream = runtime.logs(config, ["users"], follow=True, tail=0)
    runtime.start_service(config, users_spec(endpoints, "h3"))
    seen = []
    deadline = time.monotonic() + 30
    for line in stream:
        seen.append(line.text)
        if "listening" in line.text or time.monotonic() > deadline:
            break
    stream.close()
    assert any("listening" in text for text in seen)
    assert all(json.loads(text)["service"] == "users" for text in seen if text.startswith("{"))


def test_a_staged_instance_waits_created_and_its_start_is_that_container(
    runtime, config, endpoints, client
):
    """stage_services creates (up stages the instances it will create while Consul and
    their dependencies come up); start_service starts that very container; unstage
    removes one never started; a start for another config replaces the staged one."""
    name = container_name(PROJECT, "users")
    port = config.services["users"].port
    runtime.stop_service(config, "users")

    def container():
        with contextlib.suppress(docker.errors.NotFound):
            return client.containers.get(name)
        return None

    spec = dataclasses.replace(users_spec(endpoints, "h-staged"),
                               secrets={"jwt_secret": secrets.token_hex(8)})
    runtime.stage_services(config, [spec])
    wait_for(container, what="the staged container")
    staged = container()
    assert staged.status == "created"  # nothing runs before its start
    assert not healthy(port)
    state = runtime.start_service(config, spec)
    assert container().id == staged.id and state.config_hash == "h-staged"
    wait_for(lambda: healthy(port), what="users /health 200")
    secret = container().exec_run(["cat", "/run/shop-secrets/jwt_secret"])
    assert secret.exit_code == 0 and secret.output.decode().strip() == spec.secrets["jwt_secret"]

    runtime.stop_service(config, "users")
    runtime.stage_services(config, [users_spec(endpoints, "h-before")])
    wait_for(container, what="the staged container")
    before = container().id
    state = runtime.start_service(config, users_spec(endpoints, "h-after"))
    assert state.config_hash == "h-after" and container().id != before
    assert container().labels[LABEL_HASH] == "h-after"

    runtime.stop_service(config, "users")
    runtime.stage_services(config, [users_spec(endpoints, "h-never")])
    runtime.unstage(config)
    assert container() is None
    runtime.unstage(config)  # nothing left: nothing to do


def test_a_container_whose_secret_files_fail_is_not_left_to_start_later(
    runtime, config, endpoints, client, monkeypatch
):
    """Created, then the secret files refused (a full disk, say): the half-made container
    goes, or a later `up` would find it and start it without its secrets."""
    runtime.stop_service(config, "users")
    spec = dataclasses.replace(users_spec(endpoints, "h-broken"),
                               secrets={"jwt_secret": secrets.token_hex(8)})

    def refuse(*args, **kwargs):
        raise docker.errors.APIError("no space left on device")

    monkeypatch.setattr(client.api, "put_archive", refuse)
    with pytest.raises(OperationFailed, match="no space left"):
        runtime.start_service(config, spec)
    runtime.stage_services(config, [spec])
    with pytest.raises(OperationFailed, match="no space left"):
        runtime.start_service(config, spec)  # a staging's failure is its start's
    assert container_name(PROJECT, "users") not in by_label(client)["containers"]
    runtime.unstage(config)


def test_down_removes_everything_but_data_unless_asked(runtime, config, endpoints, client):
    runtime.start_service(config, users_spec(endpoints))
    runtime.down(config, volumes=False)
    left = by_label(client)
    assert left["containers"] == [] and left["networks"] == []
    assert not client.networks.list(names=[network_name(PROJECT)])
    assert sorted(left["volumes"]) == sorted(
        [volume_name(PROJECT, "users"), volume_name(PROJECT, "rabbitmq")]
    )
    assert runtime.observe(config) == {}
    assert runtime.infra_endpoints(config) is None

    runtime.down(config, volumes=True)
    assert by_label(client) == {"containers": [], "networks": [], "volumes": []}


def other_projects_image(client: docker.DockerClient, base: str) -> str:
    """An image of another project, labelled and named as shopctl labels and names its
    service images (a LABEL on the base image: built in a second)."""
    other = f"t{uuid.uuid4().hex[:8]}"
    tag = f"shopctl-{other}/users:0123456789ab"
    dockerfile = f"FROM {base}\nLABEL {LABEL_PROJECT}={other} {LABEL_SERVICE}=users\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def test_down_with_images_removes_the_projects_images_and_nothing_else(
    runtime, config, client
):
    endpoints = runtime.ensure_infra(config)
    port = config.services["users"].port
    runtime.start_service(config, users_spec(endpoints))
    wait_for(lambda: healthy(port), what="users up")
    ours = project_images(client)
    assert ours and all(tag.startswith(f"shopctl-{PROJECT}/users:") for tag in ours)
    base = client.images.get(config.infra.base_image).id
    infra = {name: client.images.get(name).id
             for name in (config.infra.consul.image, config.infra.rabbitmq.image)}
    foreign = other_projects_image(client, config.infra.base_image)
    seen: list[tuple[str, str]] = []
    try:
        runtime.down(config, volumes=True, progress=lambda s, m: seen.append((s, m)),
                     images=True)
        assert project_images(client) == []
        assert (ours[0], "removing image") in seen
        assert client.images.get(config.infra.base_image).id == base
        assert {name: client.images.get(name).id for name in infra} == infra
        client.images.get(foreign)  # another project's image is not touched
        assert by_label(client) == {"containers": [], "networks": [], "volumes": []}
    finally:
        client.images.remove(foreign, force=True)


def test_down_keeps_an_image_another_container_uses_and_says_so(runtime, config, client):
    tag, _hash = build_service_image(config, "users", client=client)  # as up builds it
    # A container of another project (a container inherits its image's labels: without
    # its own project label, down would remove it as one of ours).
    holder = client.containers.create(tag, ["true"], name=f"{PROJECT}-holder",
                                      labels={LABEL_PROJECT: f"{PROJECT}-other"})
    seen: list[tuple[str, str]] = []
    try:
        runtime.down(config, volumes=True, progress=lambda s, m: seen.append((s, m)),
                     images=True)  # no exception: reported, kept
        client.images.get(tag)
        (kept,) = [m for s, m in seen if s == tag and m.startswith("image kept:")]
        assert holder.id[:12] in kept, kept  # the engine names the container using it
    finally:
        holder.remove(force=True)
    runtime.down(config, volumes=True, images=True)
    assert project_images(client) == []
