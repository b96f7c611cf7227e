"""Consul ACLs for one project: default deny, one management token, one token a service.

Why: with ACLs off, anyone with a shell on the host could read every setting and write
any (a fault knob turned to 1 broke payments within 2 s). So shopctl's Consul runs with
`default_policy = "deny"`:

- The management (master) token is generated once into `.shopctl/secrets/consul/
  management` (0600) and given to the agent in a config file (never on its command line
  or in an environment). shopctl uses it for everything it does: register, health,
  `config get/set`, deregister.
- Each service has its own token, generated once into `.shopctl/secrets/consul/<name>`,
  whose policy lets it register itself only (`service "<name>" write`), read its own
  KV prefix and the project's `_shared/` one, and find in the catalog the services it
  depends on (`depends_on`: it calls them by name). shopctl registers the service with that
  token, and hands it to the service as the secret file `consul_token`.
- `_reader` may read the catalog and health only: what Prometheus' discovery needs.

The agent runs in dev mode (in memory), so policies and tokens vanish when it restarts:
`ensure` makes them again on every `up`, with the same secret IDs, so a running service
keeps a valid token. Secrets never go into KV (the JWT secret is a file of each service).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import requests

from shopctl.config import ShopConfig
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.registry import KV_ROOT
from shopctl.state import ProjectState

MANAGEMENT = "management"
READER = "_reader"  # the leading underscore keeps it apart from every service name
ACL_READY_TIMEOUT = 20.0


def enabled(config: ShopConfig) -> bool:
    return config.infra.consul.enabled and config.infra.consul.acl


def agent_config(management: str) -> str:
    """The agent's ACL config (JSON, which Consul reads as it reads HCL)."""
    return json.dumps({"acl": {
        "enabled": True,
        "default_policy": "deny",
        "down_policy": "extend-cache",
        # The agent's own token: it registers its node and syncs the services.
        "tokens": {"master": management, "agent": management},
    }}, indent=2) + "\n"


def management_token(config: ShopConfig, create: bool = True) -> str | None:
    """The token shopctl talks to the project's Consul with; None with ACLs off, or
    (with `create` False) when no `up` has made it yet."""
    if not enabled(config):
        return None
    state = ProjectState(config.root)
    return (state.consul_token(MANAGEMENT) if create
            else state.existing_secret(f"consul/{MANAGEMENT}"))


def service_token(config: ShopConfig, name: str) -> str | None:
    return ProjectState(config.root).consul_token(name) if enabled(config) else None


def service_rules(project: str, service: str, calls: Iterable[str] = ()) -> str:
    """`calls`: the services it may find in the catalog (its depends_on), to call them by
    name (shopkit.discovery); Consul's health API shows an instance only to a token that
    may read its node too."""
    finds = [f'service "{name}" {{ policy = "read" }}' for name in sorted(set(calls))]
    return "\n".join([
        f'service "{service}" {{ policy = "write" }}',
        f'key_prefix "{KV_ROOT}/{project}/{service}/" {{ policy = "read" }}',
        f'key_prefix "{KV_ROOT}/{project}/_shared/" {{ policy = "read" }}',
        *finds,
        *(['node_prefix "" { policy = "read" }'] if finds else []),
    ])


READER_RULES = "\n".join([
    'service_prefix "" { policy = "read" }',
    'node_prefix "" { policy = "read" }',
])


class Acl:
    """The ACL endpoints of one agent, spoken to with the management token."""

    def __init__(self, consul_http: str, management: str, timeout: float = 5.0):
        base = consul_http if "://" in consul_http else f"http://{consul_http}"
        self.base = base.rstrip("/")
        self._timeout = timeout
        # requests, not httpx: the Docker SDK and py-consul load it anyway, while httpx
        # would cost every `up` ~0.1 s of imports.
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers["X-Consul-Token"] = management

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Acl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self._session.request(method, self.base + path, timeout=self._timeout, **kwargs)

    def _call(self, method: str, path: str, what: str, **kwargs) -> requests.Response:
        try:
            response = self._request(method, path, **kwargs)
        except requests.RequestException as exc:
            raise RuntimeUnavailable(f"Consul is not reachable at {self.base} to {what}: "
                                     f"{exc}") from exc
        return response

    def wait_ready(self, timeout: float = ACL_READY_TIMEOUT) -> None:
        """Until the agent accepts the management token: a fresh agent creates it a
        moment after it elects itself leader."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self._request("GET", "/v1/acl/token/self")
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        answer = self._call("GET", "/v1/acl/token/self", "check the management token")
        raise OperationFailed(
            f"Consul at {self.base} did not accept shopctl's management token within "
            f"{timeout:.0f}s ({answer.status_code} {answer.text.strip()[:100]})",
            hint="an agent started without this project's ACL config (another project's, "
                 "or one started by hand) holds the port; `shopctl down`, then "
                 "`shopctl up`, restarts shopctl's own")

    # Consul answers 403 "ACL not found" for a policy or token it does not know: with a
    # management token that passed wait_ready, that means absent.

    def _policy(self, name: str, rules: str, description: str) -> None:
        found = self._call("GET", f"/v1/acl/policy/name/{name}", f"read policy {name}")
        body = {"Name": name, "Description": description, "Rules": rules}
        if found.status_code == 200:
            current = found.json()
            if current.get("Rules") == rules:
                return
            answer = self._call("PUT", f"/v1/acl/policy/{current['ID']}", f"update {name}",
                                json=body)
        else:
            answer = self._call("PUT", "/v1/acl/policy", f"create policy {name}", json=body)
        _check(answer, f"store the ACL policy {name}")

    def _token(self, secret: str, policy: str, description: str) -> None:
        found = self._call("GET", "/v1/acl/token/self", f"read token {description}",
                           headers={"X-Consul-Token": secret})
        body = {"Description": description, "Policies": [{"Name": policy}]}
        if found.status_code == 200:
            current = found.json()
            if [p.get("Name") for p in current.get("Policies") or []] == [policy]:
                return
            answer = self._call("PUT", f"/v1/acl/token/{current['AccessorID']}",
                                f"update token {description}", json=body)
        else:
            answer = self._call("PUT", "/v1/acl/token", f"create token {description}",
                                json={**body, "SecretID": secret})
        _check(answer, f"store the ACL token of {description}")

    def ensure_token(self, name: str, secret: str, rules: str, project: str) -> None:
        policy = f"shopctl-{project}-{name.lstrip('_')}"
        self._policy(policy, rules, f"{name} of project {project} (made by shopctl)")
        self._token(secret, policy, f"{project}/{name}")


def _check(response: requests.Response, what: str) -> None:
    if response.status_code != 200:
        raise OperationFailed(f"Consul refused to {what}: {response.status_code} "
                              f"{response.text.strip()[:200]}")


def ensure(config: ShopConfig, consul_http: str, services: list[str]) -> None:
    """Policies and tokens for `services` and the reader, as `.shopctl/secrets` holds them."""
    if not enabled(config):
        return
    state = ProjectState(config.root)
    with Acl(consul_http, state.consul_token(MANAGEMENT)) as acl:
        acl.wait_ready()
        for name in services:
            svc = config.services.get(name)
            rules = service_rules(config.project, name, svc.depends_on if svc else ())
            acl.ensure_token(name, state.consul_token(name), rules, config.project)
        acl.ensure_token(READER, state.consul_token(READER), READER_RULES, config.project)


def registry(config: ShopConfig, consul_http: str | None = None, timeout: float = 5.0):
    """The project's Registry, speaking with the management token (anonymous before an
    `up` made one: such a Consul is not the project's yet, and reading creates nothing).
    `consul_http` defaults to Consul's published port where the last `up` put it (the
    host's loopback, or a swarm manager: ProjectState.infra_host)."""
    from shopctl.registry import Registry

    host = ProjectState(config.root).infra_host()
    address = consul_http or f"http://{host}:{config.infra.consul.port}"
    return Registry(address, config.project, timeout=timeout,
                    token=management_token(config, create=False))
