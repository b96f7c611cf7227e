"""The swarm runtime's pure parts: shopctl's specs as Engine API ServiceSpecs
(shopctl.swarm.specs), the registrar's reconciliation of tasks with Consul entries
(shopctl.swarm.registrar), and tasks as instances (shopctl.runtime.swarm.observe_tasks)."""

from __future__ import annotations

import json
from pathlib import Path

from shopctl.config import load_config
from shopctl.infra import docker as docker_infra
from shopctl.launch import launch_spec
from shopctl.swarm import registrar, specs
from shopctl.swarm.nodes import Node
from shopctl.units import InfraEndpoints

ENDPOINTS = InfraEndpoints("http://10.0.0.2:8500", "amqp://x@10.0.0.2:5673/", "consul:8500",
                           "amqp://x@rabbitmq:5672/")


def _config(tmp_path: Path, swarm: str = "{}", extra: str = ""):
    for name in ("payments", "inventory"):
        (tmp_path / "services" / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "shop.yaml").write_text(
        f"project: sw\ninfra: {{swarm: {swarm}}}\nservices:\n"
        "  payments: {kind: fastapi, port: 8004, replicas: 3, tags: [http],\n"
        "             health: {interval: 5s, timeout: 2s, start_period: 20s}}\n"
        "  inventory: {kind: grpc, port: 50051, metrics_port: 9103}\n" + extra)
    return load_config(tmp_path / "shop.yaml")


def _spec(config, service="payments"):
    return launch_spec(config, service, ENDPOINTS, "jwt", "swarm")


def test_a_service_is_one_swarm_service_with_its_replicas_dnsrr_and_per_task_host_ports(
        tmp_path):
    config = _config(tmp_path)
    body = specs.service_spec(config, _spec(config), "shopctl-sw/payments:abc", [])
    assert body["Name"] == "shopctl-sw-payments"
    assert body["Mode"] == {"Replicated": {"Replicas": 3}}
    # no IPVS here: no VIP, no routing mesh; host mode without a fixed host port
    assert body["EndpointSpec"] == {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": 8004, "PublishMode": "host"}]}
    template = body["TaskTemplate"]
    assert template["Networks"] == [{"Target": "shopctl-sw", "Aliases": ["payments"]}]
    assert template["RestartPolicy"]["Condition"] == "any"
    assert template["Placement"] == {}  # replicas spread over every node
    one = specs.service_spec(config, _spec(config, "inventory"), "img", [])
    assert one["TaskTemplate"]["Placement"] == {"Constraints": ["node.role==manager"]}
    container = template["ContainerSpec"]
    assert container["Init"] is True and container["User"] == "10001:10001"
    assert "SHOP_SECRETS_DIR=/run/shop-secrets" in container["Env"]
    assert "CONSUL_HTTP_ADDR=consul:8500" in container["Env"]
    assert container["Mounts"][0]["Source"] == "shopctl-sw-payments-data"
    labels = body["Labels"]
    assert labels["io.shopctl.project"] == "sw" and labels["io.shopctl.role"] == "service"
    assert labels["io.shopctl.config-hash"] == _spec(config).config_hash
    assert container["Labels"]["io.shopctl.config-hash"] == _spec(config).config_hash


def test_rolling_updates_go_one_task_at_a_time_and_roll_back_on_failure(tmp_path):
    body = specs.service_spec(_config(tmp_path), _spec(_config(tmp_path)), "img", [])
    update = body["UpdateConfig"]
    assert update["Order"] == "start-first" and update["FailureAction"] == "rollback"
    assert update["Parallelism"] == 1 and update["Monitor"] == 5 * specs.NS
    stop_first = _config(tmp_path, "{update_order: stop-first}")
    assert specs.service_spec(stop_first, _spec(stop_first), "img", [])[
        "UpdateConfig"]["Order"] == "stop-first"


def test_the_health_check_is_shop_yamls_run_inside_the_task(tmp_path):
    config = _config(tmp_path)
    http = specs.healthcheck(config.services["payments"])
    assert http["Test"][:3] == ["CMD", "/opt/venv/bin/python", "-c"]
    assert "http://127.0.0.1:8004/health" in http["Test"][3]
    assert http["Timeout"] == 2 * specs.NS and http["StartPeriod"] == 20 * specs.NS
    grpc = specs.healthcheck(config.services["inventory"])
    assert "127.0.0.1:50051" in grpc["Test"][3] and "HealthStub" in grpc["Test"][3]
    compile(grpc["Test"][3], "grpc-check", "exec")
    compile(http["Test"][3], "http-check", "exec")


def test_overlay_addresses_publish_nothing(tmp_path):
    config = _config(tmp_path, "{address: overlay}")
    assert specs.service_spec(config, _spec(config), "img", [])["EndpointSpec"] == {
        "Mode": "dnsrr", "Ports": []}


def test_the_swarm_section_changes_no_services_hash(tmp_path):
    before = _spec(_config(tmp_path)).config_hash
    assert _spec(_config(tmp_path, "{host: 'tcp://10.9.9.9:2375'}")).config_hash == before


def test_a_registry_is_in_the_swarm_services_hash_so_switching_modes_rolls_them(tmp_path):
    loaded = _spec(_config(tmp_path)).config_hash
    pushed = _spec(_config(tmp_path, "{registry: '127.0.0.1:5000'}")).config_hash
    assert pushed != loaded
    assert _spec(_config(tmp_path, "{registry: '127.0.0.1:5001'}")).config_hash != pushed
    config = _config(tmp_path, "{registry: '127.0.0.1:5000'}")  # nothing changes on docker
    assert launch_spec(config, "payments", ENDPOINTS, "jwt", "docker").config_hash == \
        launch_spec(_config(tmp_path), "payments", ENDPOINTS, "jwt", "docker").config_hash


def test_infra_units_run_on_a_manager_publishing_their_host_ports_there(tmp_path):
    config = _config(tmp_path)
    consul = docker_infra.consul(config)
    body = specs.unit_service_spec(config, consul, [])
    template = body["TaskTemplate"]
    assert template["Placement"] == {"Constraints": ["node.role==manager"]}
    assert body["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 8500,
                                              "PublishedPort": 8500, "PublishMode": "host"}]
    assert body["UpdateConfig"]["Order"] == "stop-first"  # a fixed host port
    assert template["ContainerSpec"]["Command"] == list(consul.command)
    rabbit = specs.unit_service_spec(config, docker_infra.rabbitmq(config), [])
    assert rabbit["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"] == \
        "shopctl-sw-rabbitmq-data"
    assert rabbit["TaskTemplate"]["ContainerSpec"]["Hostname"] == "rabbitmq"


def test_a_units_files_become_secrets_at_their_paths_named_by_content(tmp_path):
    consul = docker_infra.consul(_config(tmp_path))
    [(path, data)] = specs.secret_files(consul)
    assert path == "/run/shopctl/consul-acl.json"
    one = specs.secret_name("sw", "consul", "consul-acl.json", data)
    assert one != specs.secret_name("sw", "consul", "consul-acl.json", data + b" ")
    ref = specs.secret_ref("id1", one, path, 100, 101, 0o400)
    assert ref["File"] == {"Name": path, "UID": "100", "GID": "101", "Mode": 0o400}


# -- the registrar ------------------------------------------------------------------------


def _swarm(tmp_path, mode="node"):
    config = _config(tmp_path)
    body = specs.service_spec(config, _spec(config), "shopctl-sw/payments:abc", [])
    service = {"ID": "svc1", "Spec": {"Labels": body["Labels"]}}
    nodes = [
        {"ID": "n1", "Status": {"State": "ready", "Addr": "0.0.0.0"},
         "ManagerStatus": {"Addr": "172.30.0.2:2377"}, "Description": {"Hostname": "node-1"}},
        {"ID": "n2", "Status": {"State": "ready", "Addr": "172.30.0.3"},
         "Description": {"Hostname": "node-2"}},
        {"ID": "n3", "Status": {"State": "down", "Addr": "172.30.0.4"},
         "Description": {"Hostname": "node-3"}},
    ]
    return config, service, nodes


def _task(tid, slot, node, port=30001, desired="running", state="running", hash_="h1"):
    return {"ID": tid, "ServiceID": "svc1", "Slot": slot, "NodeID": node,
            "DesiredState": desired, "Status": {
                "State": state, "PortStatus": {"Ports": [
                    {"TargetPort": 8004, "PublishedPort": port, "PublishMode": "host"}]}},
            "Spec": {"ContainerSpec": {"Image": "shopctl-sw/payments:abc@sha256:x",
                                       "Labels": {"io.shopctl.config-hash": hash_}}},
            "NetworksAttachments": [{"Network": {"Spec": {"Name": "shopctl-sw"}},
                                     "Addresses": [f"10.0.1.{slot}/24"]}]}


def test_each_running_task_on_a_ready_node_is_wanted_at_its_node_and_published_port(tmp_path):
    _, service, nodes = _swarm(tmp_path)
    tasks = [_task("t1" * 10, 1, "n1", 30001), _task("t2" * 10, 2, "n2", 30002),
             _task("t3" * 10, 3, "n3", 30003),  # its node is down
             _task("t4" * 10, 2, "n2", 30004, desired="shutdown"),  # being replaced
             _task("t5" * 10, 3, "n2", 30005, state="starting")]  # not healthy yet
    want = registrar.wanted("sw", [service], tasks, nodes)
    assert sorted(want) == ["sw-payments@t1t1t1t1t1t1", "sw-payments@t2t2t2t2t2t2"]
    assert want["sw-payments@t2t2t2t2t2t2"]["Meta"]["instance"] == "payments.2"
    first = want["sw-payments@t1t1t1t1t1t1"]
    assert (first["Address"], first["Port"]) == ("172.30.0.2", 30001)
    assert first["Check"]["HTTP"] == "http://172.30.0.2:30001/health"
    assert first["Meta"]["instance"] == "payments" and first["Meta"]["node"] == "node-1"
    assert first["Meta"]["owner"] == "registrar" and first["Meta"]["config_hash"] == "h1"
    assert first["Meta"]["project"] == "sw" and first["Name"] == "payments"
    overlay = registrar.wanted("sw", [service], tasks, nodes, "overlay", "shopctl-sw")
    entry = overlay["sw-payments@t2t2t2t2t2t2"]
    assert (entry["Address"], entry["Port"]) == ("10.0.1.2", 8004)


def test_the_registrar_removes_only_entries_it_created(tmp_path):
    _, service, nodes = _swarm(tmp_path)
    want = registrar.wanted("sw", [service], [_task("t1" * 10, 1, "n1")], nodes)
    registered = {
        "sw-payments@t1t1t1t1t1t1": {"Address": "172.30.0.2", "Port": 30001, "Meta": {
            "owner": "registrar", "project": "sw", "instance": "payments"}},
        "sw-payments@oldoldoldold": {"Meta": {"owner": "registrar", "project": "sw"}},
        "sw-payments.3": {"Meta": {"project": "sw"}},  # shopctl's own, or a service's
        "other-payments@x": {"Meta": {"owner": "registrar", "project": "other"}},
    }
    register, deregister = registrar.reconcile(want, registered, "sw")
    assert register == [] and deregister == ["sw-payments@oldoldoldold"]
    moved = dict(registered)
    moved["sw-payments@t1t1t1t1t1t1"] = {**registered["sw-payments@t1t1t1t1t1t1"], "Port": 1}
    register, _ = registrar.reconcile(want, moved, "sw")
    assert [body["ID"] for body in register] == ["sw-payments@t1t1t1t1t1t1"]


def test_the_registration_template_round_trips_through_the_service_label(tmp_path):
    config = _config(tmp_path)
    body = specs.service_spec(config, _spec(config, "inventory"), "img", [])
    template = json.loads(body["Labels"][specs.LABEL_REGISTRATION])
    assert template["Check"]["GRPC"] == "@ADDRESS@:@PORT@" and template["MetricsPort"] == 9103
    assert [p["TargetPort"] for p in body["EndpointSpec"]["Ports"]] == [50051, 9103]


# -- tasks as instances -------------------------------------------------------------------


def test_tasks_are_instances_by_slot_with_their_node(tmp_path):
    from shopctl.runtime.swarm import observe_tasks

    config, service, _ = _swarm(tmp_path)
    service["Spec"]["Mode"] = {"Replicated": {"Replicas": 2}}
    service["Spec"]["Name"] = "shopctl-sw-payments"
    hosts = {"n1": Node("n1", "node-1", "172.30.0.2", "manager", True),
             "n2": Node("n2", "node-2", "172.30.0.3", "worker", True)}
    failed = _task("tf" * 10, 2, "n1", state="failed", desired="shutdown")
    failed["UpdatedAt"] = "2026-01-01T00:00:00Z"
    tasks = [_task("t1" * 10, 1, "n1", 30001), _task("t2" * 10, 2, "n2", 30002), failed,
             _task("t9" * 10, 3, "n2", desired="shutdown", state="shutdown")]  # scaled away
    observed = observe_tasks(config, {"svc1": service}, tasks, hosts)
    assert sorted(observed) == ["payments", "payments.2"]
    two = observed["payments.2"]
    assert two.state == "running" and two.extra["node"] == "node-2" and two.index == 2
    assert (two.address, two.port, two.host_port) == ("172.30.0.3", 30002, 30002)
    assert two.restarts == 1 and two.config_hash == "h1"
    # pinned by digest (registry mode): shown whole, it is what the task runs
    assert two.image == "shopctl-sw/payments:abc@sha256:x"
    # loaded into the nodes: run by id, shown by the name it was built as
    for task in tasks:
        task["Spec"]["ContainerSpec"]["Image"] = "sha256:" + "e" * 64
    service["Spec"]["Labels"]["io.shopctl.image"] = "shopctl-sw/payments:abc"
    assert observe_tasks(config, {"svc1": service}, tasks, hosts)["payments"].image == \
        "shopctl-sw/payments:abc"


def test_a_service_log_line_is_named_by_its_task_as_instance_at_node():
    from shopctl.runtime.swarm import _log_line

    text = ("2026-11-30T12:00:00.5Z com.docker.swarm.node.id=n2,com.docker.swarm.service.id="
            "s1,com.docker.swarm.task.id=abc123 GET /health 200")
    line = _log_line(text, {"abc123": "payments.2@shopctl-lab-2"})
    assert (line.service, line.text) == ("payments.2@shopctl-lab-2", "GET /health 200")
    assert line.timestamp is not None


def test_the_host_reaches_the_managers_published_ports_at_its_engines_address(tmp_path):
    from shopctl.runtime.swarm import SwarmRuntime

    config = _config(tmp_path, "{host: 'tcp://172.30.0.2:2375'}")
    assert SwarmRuntime(config).manager_address() == "172.30.0.2"


def test_status_lists_the_slots_that_run_and_no_missing_row_when_all_replicas_run(tmp_path):
    from shopctl.status import status_rows
    from shopctl.units import ServiceState

    config = _config(tmp_path)  # payments at 3 replicas
    observed = {name: ServiceState("payments", "running", index=i)
                for name, i in (("payments", 1), ("payments.3", 3), ("payments.4", 4))}
    names = [row.name for row in status_rows(config, observed, {}) if row.service == "payments"]
    assert names == ["payments", "payments.3", "payments.4"]
    del observed["payments.4"]  # one short: one missing row, named by the first free slot
    names = [row.name for row in status_rows(config, observed, {}) if row.service == "payments"]
    assert names == ["payments", "payments.2", "payments.3"]


def test_instances_are_numbered_by_the_rank_of_the_slots_a_scale_down_kept(tmp_path):
    from shopctl.runtime.swarm import observe_tasks

    config, service, nodes = _swarm(tmp_path)
    service["Spec"]["Name"] = "shopctl-sw-payments"
    tasks = [_task("t1" * 10, 1, "n1", 30001), _task("t3" * 10, 3, "n2", 30003),
             _task("t4" * 10, 4, "n2", 30004),
             _task("t2" * 10, 2, "n2", 30002, desired="shutdown", state="shutdown")]
    hosts = {"n1": Node("n1", "node-1", "172.30.0.2", "manager", True),
             "n2": Node("n2", "node-2", "172.30.0.3", "worker", True)}
    observed = observe_tasks(config, {"svc1": service}, tasks, hosts)
    assert {name: s.extra["slot"] for name, s in observed.items()} == {
        "payments": "1", "payments.2": "3", "payments.3": "4"}
    want = registrar.wanted("sw", [service], tasks, nodes)
    assert sorted(body["Meta"]["instance"] for body in want.values()) == [
        "payments", "payments.2", "payments.3"]
    # renumbered: registered again under its ID (Consul keeps its check's status)
    registered = {sid: {**body, "Meta": {**body["Meta"], "instance": "payments.9"}}
                  for sid, body in want.items()}
    register, deregister = registrar.reconcile(want, registered, "sw")
    assert len(register) == 3 and deregister == []


def _ran_on(config, runtime: str) -> None:
    from shopctl.runtime.select import remember
    from shopctl.state import ProjectState

    state = ProjectState(config.root)
    state.dir.mkdir(parents=True, exist_ok=True)
    remember(state.dir, runtime)


def test_sagas_from_this_host_refuse_a_swarm_shop_registered_at_overlay_addresses(
        tmp_path, capsys, monkeypatch):
    """Drivers run on the host; with `address: overlay` Consul lists addresses only the
    swarm routes, so `saga run` says so at once (exit 2, one message, no traceback)
    instead of every step timing out."""
    import pytest

    from shopctl.cli import main
    from shopctl.errors import UsageError
    from shopctl.saga.endpoints import refuse_unreachable

    config = _config(tmp_path, swarm="{address: overlay}")
    refuse_unreachable(config)  # never brought up on a swarm: nothing to refuse
    _ran_on(config, "swarm")
    with pytest.raises(UsageError) as refused:
        refuse_unreachable(config)
    assert "infra.swarm.address: node" in refused.value.hint

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "400")
    (tmp_path / "shop.yaml").write_text((tmp_path / "shop.yaml").read_text() + (
        "sagas:\n  pay:\n    steps:\n      - {name: pay, call: payments.pay}\n"))
    with pytest.raises(SystemExit) as info:
        main(["-f", str(tmp_path / "shop.yaml"), "saga", "run", "pay"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "overlay addresses" in err and "infra.swarm.address: node" in err


def test_node_addresses_and_other_runtimes_are_driven_from_this_host(tmp_path):
    from shopctl.saga.endpoints import refuse_unreachable

    _ran_on(_config(tmp_path, swarm="{address: node}"), "swarm")
    refuse_unreachable(_config(tmp_path, swarm="{address: node}"))
    overlay = _config(tmp_path, swarm="{address: overlay}")
    _ran_on(overlay, "docker")  # the swarm section is not used off the swarm
    refuse_unreachable(overlay)
