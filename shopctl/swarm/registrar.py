"""The registrar: keeps a project's Consul entries in step with its swarm tasks.

Runs as a one-task swarm service on a manager (shopctl.runtime.swarm starts it with the
manager's docker socket and the project's Consul management token as a secret file).
Standard library only: it runs on the shop's Python base image, shipped as a file.

Every INTERVAL seconds it lists the project's services (label io.shopctl.project), their
tasks and the nodes, and makes Consul's entries owned by it (Meta.owner = "registrar")
equal to the tasks that run:
- one entry per running task whose node is ready, ID `PROJECT-SERVICE@TASK12`, named
  after the service, Meta.instance SERVICE / SERVICE.N by the rank of the task's slot
  among the slots the swarm keeps (`ranks`: 1..replicas, as on the other runtimes, and
  an update of Meta alone when a scale-down renumbers them), Meta.node the
  node's hostname, Meta.task, Meta.config_hash the hash its spec was created with, and
  the service's own check (from the service label io.shopctl.registration, which
  shopctl writes from shopctl.registry's check definition) at the task's address;
- the address is the node's with the port the engine published for that task (address
  "node", which the host reaches too), or the task's overlay address and the service's
  port (address "overlay", for callers inside the swarm);
- an entry whose task stopped running, was told to stop (a rolling update, a scale
  down: removed before the task exits, so callers stop choosing it first), or whose node
  is not ready (a dead node: at once, not after its checks fail) is deregistered.
It touches no entry it did not create (another registrant's, shopctl's own).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
import urllib.parse
import urllib.request

OWNER = "registrar"
LABEL_PROJECT = "io.shopctl.project"
LABEL_HASH = "io.shopctl.config-hash"
LABEL_REGISTRATION = "io.shopctl.registration"
ADDRESS = "@ADDRESS@"
PORT = "@PORT@"


# -- the pure part -----------------------------------------------------------------------


def node_addresses(nodes: list[dict]) -> dict[str, tuple[str, str, bool]]:
    """{node id: (address, hostname, ready)}."""
    out = {}
    for node in nodes:
        status = node.get("Status") or {}
        address = status.get("Addr") or ""
        if address in ("", "0.0.0.0"):  # a manager may report this; its raft address is right
            address = ((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0]
        hostname = (node.get("Description") or {}).get("Hostname") or node.get("ID", "")[:12]
        out[node["ID"]] = (address, hostname, status.get("State") == "ready")
    return out


def instance(service: str, index: int) -> str:
    return service if index <= 1 else f"{service}.{index}"


def ranks(tasks: list[dict]) -> dict[tuple[str, int], int]:
    """{(service id, slot): its rank, 1..N} among the slots where a task is meant to
    run: the swarm numbers slots as it pleases (a scale-down keeps whichever balance the
    nodes), instances are numbered 1..replicas. shopctl.runtime.swarm uses the same."""
    slots: dict[str, set[int]] = {}
    for task in tasks:
        if task.get("DesiredState") in ("running", "ready"):
            slots.setdefault(task.get("ServiceID", ""), set()).add(int(task.get("Slot") or 1))
    return {(service, slot): rank for service, found in slots.items()
            for rank, slot in enumerate(sorted(found), start=1)}


def entry_id(project: str, service: str, task_id: str) -> str:
    return f"{project}-{service}@{task_id[:12]}"


def task_address(task: dict, template: dict, node: tuple[str, str, bool], mode: str,
                 network: str) -> tuple[str, int, int] | None:
    """(address, port, metrics port) where the task is reached; None while unknown."""
    if mode == "overlay":
        for attachment in task.get("NetworksAttachments") or []:
            if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
                for cidr in attachment.get("Addresses") or []:
                    return cidr.split("/")[0], template["Port"], template["MetricsPort"]
        return None
    published = {p.get("TargetPort"): p.get("PublishedPort")
                 for p in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []}
    port = published.get(template["Port"])
    if not node[0] or not port:
        return None
    return node[0], port, published.get(template["MetricsPort"]) or port


def fill(value, address: str, port: int):
    """The check template with the task's address in it."""
    if isinstance(value, str):
        return value.replace(ADDRESS, address).replace(PORT, str(port))
    if isinstance(value, dict):
        return {key: fill(item, address, port) for key, item in value.items()}
    return value


def wanted(project: str, services: list[dict], tasks: list[dict], nodes: list[dict],
           mode: str = "node", network: str = "") -> dict[str, dict]:
    """{Consul ID: registration body} of every task of the project that should be listed."""
    by_id = {}
    for service in services:
        labels = (service.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_PROJECT) == project and LABEL_REGISTRATION in labels:
            by_id[service["ID"]] = json.loads(labels[LABEL_REGISTRATION])
    where = node_addresses(nodes)
    rank = ranks(tasks)
    out = {}
    for task in tasks:
        template = by_id.get(task.get("ServiceID"))
        node = where.get(task.get("NodeID") or "")
        if template is None or node is None or not node[2]:
            continue
        if task.get("DesiredState") != "running" or (task.get("Status") or {}).get(
                "State") != "running":
            continue
        found = task_address(task, template, node, mode, network)
        if found is None:
            continue
        address, port, metrics_port = found
        slot = int(task.get("Slot") or 1)
        name = instance(template["Name"], rank.get((task["ServiceID"], slot), slot))
        container = ((task.get("Spec") or {}).get("ContainerSpec") or {})
        sid = entry_id(project, template["Name"], task["ID"])
        out[sid] = {
            "ID": sid, "Name": template["Name"], "Address": address, "Port": port,
            "Tags": template["Tags"],
            "Meta": {**template["Meta"], "owner": OWNER, "instance": name,
                     "task": task["ID"][:12], "node": node[1], "slot": str(slot),
                     "config_hash": (container.get("Labels") or {}).get(LABEL_HASH, ""),
                     "image": container.get("Image", "").split("@")[0],
                     "metrics_port": str(metrics_port)},
            "Check": fill(template["Check"], address, port),
        }
    return out


def reconcile(want: dict[str, dict], registered: dict[str, dict],
              project: str) -> tuple[list[dict], list[str]]:
    """(bodies to register, IDs to deregister): only entries this registrar owns (and
    of this project) are ever deregistered."""
    mine = {sid: entry for sid, entry in registered.items()
            if (entry.get("Meta") or {}).get("owner") == OWNER
            and (entry.get("Meta") or {}).get("project") == project}
    def seen(entry: dict) -> tuple:
        return (entry.get("Address"), entry.get("Port"),
                (entry.get("Meta") or {}).get("instance"))

    # Registering again under the same ID keeps the check's status: a renumbered
    # instance stays passing.
    register = [body for sid, body in want.items()
                if sid not in mine or seen(mine[sid]) != seen(body)]
    return register, sorted(sid for sid in mine if sid not in want)


# -- the engine and Consul ---------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def engine_get(socket_path: str, path: str, filters: dict | None = None):
    query = f"?filters={urllib.parse.quote(json.dumps(filters))}" if filters else ""
    connection = _UnixConnection(socket_path)
    try:
        connection.request("GET", path + query)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"engine GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def consul_call(address: str, token: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{address}{path}", data=data, method=method,
                                     headers={"X-Consul-Token": token} if token else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def one_pass(project: str, socket_path: str, consul: str, token: str, mode: str,
             network: str) -> tuple[int, int]:
    services = engine_get(socket_path, "/services", {"label": [f"{LABEL_PROJECT}={project}"]})
    ids = [service["ID"] for service in services]
    tasks = engine_get(socket_path, "/tasks", {"service": ids}) if ids else []
    nodes = engine_get(socket_path, "/nodes")
    registered = consul_call(consul, token, "GET", "/v1/agent/services") or {}
    register, deregister = reconcile(wanted(project, services, tasks, nodes, mode, network),
                                     registered, project)
    for sid in deregister:
        consul_call(consul, token, "PUT", f"/v1/agent/service/deregister/{sid}")
        print(f"deregistered {sid}", flush=True)
    for body in register:
        consul_call(consul, token, "PUT",
                    "/v1/agent/service/register?replace-existing-checks=true", body)
        print(f"registered {body['ID']} at {body['Address']}:{body['Port']} "
              f"on {body['Meta']['node']}", flush=True)
    return len(register), len(deregister)


def main() -> int:
    env = os.environ
    project = env["SHOP_PROJECT"]
    token_file = env.get("REGISTRAR_TOKEN_FILE", "")
    token = open(token_file).read().strip() if token_file and os.path.exists(token_file) else ""
    interval = float(env.get("REGISTRAR_INTERVAL", "1"))
    args = (project, env.get("DOCKER_SOCKET", "/var/run/docker.sock"),
            env.get("CONSUL_HTTP_ADDR", "consul:8500"), token,
            env.get("REGISTRAR_ADDRESS", "node"), env.get("REGISTRAR_NETWORK", ""))
    print(f"registrar for {project}: every {interval}s, addresses: {args[4]}", flush=True)
    failing = ""
    while True:
        try:
            one_pass(*args)
            failing = ""
        except Exception as exc:  # noqa: BLE001 - Consul or the engine away: try again
            if str(exc) != failing:
                print(f"pass failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                failing = str(exc)
        time.sleep(interval)


if __name__ == "__main__":
    raise SystemExit(main())
