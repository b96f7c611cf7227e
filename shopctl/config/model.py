"""The validated, frozen shape of shop.yaml.

Field validators raise Invalid with messages in our own words ("expected ..., found ...");
errors.py turns pydantic's errors into located ConfigProblems. Cross-field checks that
need the whole file (references, cycles, ports) live in references.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    field_serializer,
    field_validator,
    model_validator,
)

from shopctl.config.durations import parse_duration
from shopctl.config.problems import Invalid, did_you_mean, show
from shopctl.errors import ConfigError, UsageError
from shopctl.infra_names import reserved_name_refusal

KINDS = ("flask", "fastapi", "nameko", "grpc")
SERVICE_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
PROJECT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
SAGA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CALL = re.compile(r"([a-z][a-z0-9-]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def as_integer(value: Any) -> int | None:
    """An int, or a string of digits (what interpolation leaves); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def as_port(value: Any) -> int | None:
    number = as_integer(value)
    return number if number is not None and 1 <= number <= 65535 else None


def _integer(low: int, high: int | None = None):
    wanted = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def check(value: Any) -> int:
        number = as_integer(value)
        if number is None or number < low or (high is not None and number > high):
            raise Invalid(f"expected an integer {wanted}, found {show(value)}")
        return number

    return check


def _port_or_none(value: Any) -> int | None:
    return None if value is None else _integer(1, 65535)(value)


def _named(pattern: re.Pattern[str], what: str):
    def check(value: Any) -> str:
        if isinstance(value, str) and pattern.fullmatch(value):
            return value
        hint = None
        if isinstance(value, str) and _slug(value) and pattern.fullmatch(_slug(value)):
            hint = f"try '{_slug(value)}'"
        raise Invalid(f"expected {what}, found {show(value)}", hint)

    return check


def _kind(value: Any) -> str:
    if isinstance(value, str) and value in KINDS:
        return value
    hint = did_you_mean(value.lower(), KINDS) if isinstance(value, str) else None
    raise Invalid(f"expected one of {', '.join(KINDS)}, found {show(value)}", hint)


def _call(value: Any) -> str:
    if isinstance(value, str) and CALL.fullmatch(value):
        return value
    raise Invalid(f"expected SERVICE.ACTION like 'shipping.book_slot', found {show(value)}")


def _call_or_none(value: Any) -> str | None:
    return None if value is None else _call(value)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    hint = "write an empty value as ''" if value is None else None
    raise Invalid(f"expected a string, number or true/false, found {show(value)}", hint)


DATABASES = ("postgresql",)  # what `database:` may name (shopctl.databases)


def _database(value: Any) -> str | None:
    if value is None or value in DATABASES:
        return value
    hint = did_you_mean(value.lower(), DATABASES) if isinstance(value, str) else None
    raise Invalid(f"expected {' or '.join(DATABASES)}, found {show(value)}", hint)


def _auto_or_bool(value: Any) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):  # from ${VAR}
        return value.lower() == "true"
    raise Invalid(f"expected auto, true or false, found {show(value)}")


def _url_path(value: Any) -> str:
    if isinstance(value, str) and value.startswith("/"):
        return value
    raise Invalid(f"expected a URL path starting with '/', found {show(value)}")


Port = Annotated[int, PlainValidator(_integer(1, 65535))]
OptionalPort = Annotated[int | None, PlainValidator(_port_or_none)]
Duration = Annotated[float, PlainValidator(parse_duration)]
Kind = Annotated[Literal["flask", "fastapi", "nameko", "grpc"], PlainValidator(_kind)]
ProjectName = Annotated[
    str,
    PlainValidator(
        _named(PROJECT_NAME, "a name of lowercase letters, digits and hyphens (at most 40)")
    ),
]
_service_name_shape = _named(
    SERVICE_NAME,
    "a service name of lowercase letters, digits and hyphens, starting with a letter (at most 63)",
)


def _service_name(value: Any) -> str:
    name = _service_name_shape(value)
    refusal = reserved_name_refusal(name)
    if refusal is not None:
        raise Invalid(*refusal)
    return name


ServiceName = Annotated[str, PlainValidator(_service_name)]
SagaName = Annotated[
    str, PlainValidator(_named(SAGA_NAME, "a saga name of letters, digits, _ and -"))
]
Identifier = Annotated[
    str, PlainValidator(_named(IDENTIFIER, "an identifier (letters, digits and _)"))
]
EnvName = Annotated[
    str, PlainValidator(_named(IDENTIFIER, "an environment variable name (letters, digits, _)"))
]
EnvValue = Annotated[str, PlainValidator(_env_value)]
Call = Annotated[str, PlainValidator(_call)]
OptionalCall = Annotated[str | None, PlainValidator(_call_or_none)]
UrlPath = Annotated[str, PlainValidator(_url_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Keys filled in by the loader rather than written by users (left out of hints).
    implied_keys: ClassVar[frozenset[str]] = frozenset()


class HealthConfig(_Section):
    path: UrlPath = "/health"  # ignored by grpc services, which use the gRPC health protocol
    interval: Duration = 5.0
    timeout: Duration = 2.0
    start_period: Duration = 30.0


class ConsulConfig(_Section):
    enabled: bool = True
    image: str = "shopctl/consul:1.8"
    port: Port = 8500
    version: str | None = None  # the consul binary version wanted when running without Docker
    # Default deny, a management token for shopctl and one token a service (see
    # shopctl.consul_acl). Off only for a Consul that cannot take the ACL config.
    acl: bool = True


class RabbitMQConfig(_Section):
    enabled: bool = True
    image: str = "shopctl/rabbitmq:3.10"
    port: Port = 5672
    management_port: OptionalPort = None


class PrometheusConfig(_Section):
    enabled: bool = False
    image: str = "shopctl/prometheus:2.42"
    port: Port = 9090
    # How Prometheus finds the services: "http" (http_sd from shopctl's Consul bridge,
    # for builds without consul_sd such as Debian's), "consul" (consul_sd_configs), or
    # "auto": consul for a non-shopctl image in docker, http otherwise.
    discovery: Literal["auto", "http", "consul"] = "auto"


class PostgresConfig(_Section):
    """A PostgreSQL server for the services that declare `database: postgresql`, each
    with a role and database of its own (shopctl.databases). `auto`: on where a
    service's instances cannot share a data folder (the swarm runtime) and some
    service declares a database; off on docker and local, where they share one."""

    enabled: Annotated[bool | Literal["auto"], PlainValidator(_auto_or_bool)] = "auto"
    image: str = "shopctl/postgres:15"
    port: Port = 5432  # where shopctl (on the host) reaches it to provision the databases


_REGISTRY_HOST = re.compile(
    r"(?P<host>localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::(?P<port>\d{1,5}))?")
_REPOSITORY_PATH = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                              r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_REGISTRY_SHAPE = "a registry's HOST:PORT like 127.0.0.1:5000 or registry.example.com"


def _registry_host(value: Any) -> str:
    """HOST[:PORT] of a registry. The host needs a dot, a port or to be localhost: the
    engine reads any other first path part as an account on Docker Hub."""
    if not isinstance(value, str):
        raise Invalid(f"expected {_REGISTRY_SHAPE}, found {show(value)}")
    if "://" in value:
        raise Invalid(f"expected {_REGISTRY_SHAPE}, found {show(value)}",
                      f"write it without the scheme: '{value.split('://', 1)[1]}'")
    found = _REGISTRY_HOST.fullmatch(value)
    if found is None or (found["port"] and not 1 <= int(found["port"]) <= 65535):
        raise Invalid(f"expected {_REGISTRY_SHAPE}, found {show(value)}")
    if not found["port"] and "." not in found["host"] and found["host"] != "localhost" \
            and not found["host"].startswith("["):
        raise Invalid(f"expected {_REGISTRY_SHAPE}, found {show(value)}",
                      "a name without a dot or a port is taken for a Docker Hub account: "
                      f"add the port ('{value}:5000')")
    return value


def _repository_path(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str) and _REPOSITORY_PATH.fullmatch(value.strip("/")):
        return value.strip("/")
    raise Invalid("expected a repository path of lowercase letters, digits, '.', '_', '-' "
                  f"and '/' like 'team/shop', found {show(value)}")


RegistryHost = Annotated[str, PlainValidator(_registry_host)]
OptionalRegistryHost = Annotated[
    str | None, PlainValidator(lambda v: None if v is None else _registry_host(v))]


class RegistryConfig(_Section):
    """The registry the swarm's images go through (shopctl.swarm.images): the building
    engine pushes to `push`, the nodes pull from `pull` (default: the same name), both
    under `prefix`. Written as one string, HOST:PORT[/PREFIX] is both."""

    push: RegistryHost
    pull: OptionalRegistryHost = None
    prefix: Annotated[str, PlainValidator(_repository_path)] = ""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`registry: HOST:PORT/PREFIX` is `{push: HOST:PORT, prefix: PREFIX}`."""
        if isinstance(data, str):
            host, _, prefix = data.partition("/") if "://" not in data else (data, "", "")
            return {"push": host, "prefix": prefix}
        if not isinstance(data, dict):
            raise Invalid(f"expected HOST:PORT[/PREFIX] or a mapping of push, pull and "
                          f"prefix, found {show(data)}")
        return data

    @property
    def pull_host(self) -> str:
        return self.pull or self.push


class SwarmConfig(_Section):
    """Where `--runtime swarm` runs the shop (see shopctl.runtime.swarm)."""

    # The manager's engine, e.g. tcp://10.0.0.2:2375; None: DOCKER_HOST.
    host: str | None = None
    # Each node's engine answers on this TCP port at the node's address: with no
    # registry, images are loaded into every node through it.
    node_port: Port = 2375
    # Where Consul registers each task, i.e. where callers reach it: "node" (the node's
    # address and a port the engine published for that task, which the host reaches
    # too) or "overlay" (the task's address on the project's overlay network: only
    # callers inside the swarm reach it).
    address: Literal["node", "overlay"] = "node"
    # A rolling update starts each new task before it stops the old one, or after.
    update_order: Literal["start-first", "stop-first"] = "start-first"
    # Where the nodes get the images: None, loaded into each node through node_port (the
    # lab/CI mode); else pushed to this registry and run pinned by digest.
    registry: RegistryConfig | None = None


class InfraConfig(_Section):
    consul: ConsulConfig = Field(default_factory=ConsulConfig)
    rabbitmq: RabbitMQConfig = Field(default_factory=RabbitMQConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    swarm: SwarmConfig = Field(default_factory=SwarmConfig)
    base_image: str = "shopctl/python:3.11"  # the image service images are built FROM


INPUT_TYPES = ("string", "integer", "number", "boolean", "array", "object", "any")


class ActionConfig(_Section):
    """How saga steps reach one action of a service; every key is optional and the kind's
    convention fills in the rest (see shopctl.saga.contract, which also checks the keys
    against the service's kind)."""

    method: str | None = None  # HTTP verb | nameko method | gRPC "pkg.Service/Method"
    path: str | None = None  # HTTP only; may hold {{ }} expressions
    request: Any = None  # a template (shopctl.saga.template); None: the kind's convention
    result: Any = None  # a template over the response; None: the response object itself
    refused: list[int | str] = Field(default_factory=list)  # answers that never pass
    retry: list[int | str] = Field(default_factory=list)  # answers that may pass later


class ServiceConfig(_Section):
    implied_keys: ClassVar[frozenset[str]] = frozenset({"name"})

    name: str  # its key under `services`
    kind: Kind
    path: str  # relative to the folder of shop.yaml; defaults to services/NAME
    port: Port  # grpc: the gRPC port; nameko: its HTTP port (health, metrics)
    metrics_port: OptionalPort = None  # /metrics when not served on `port`
    depends_on: list[str] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)  # pushed to Consul KV
    health: HealthConfig = Field(default_factory=HealthConfig)
    tags: list[str] = Field(default_factory=list)
    replicas: Annotated[int, PlainValidator(_integer(1))] = 1
    actions: dict[Identifier, ActionConfig] = Field(default_factory=dict)  # saga contract
    # "postgresql": the service can keep its state in a database of its own, whose URL
    # it then finds in the secret file `database_url` (see shopctl.databases).
    database: Annotated[str | None, PlainValidator(_database)] = None


def split_call(call: str) -> tuple[str, str]:
    """'shipping.book_slot' -> ('shipping', 'book_slot')."""
    service, _, action = call.partition(".")
    return service, action


class SagaStep(_Section):
    name: Identifier
    call: Call
    compensate: OptionalCall = None
    pivot: bool = False
    timeout: Duration = 10.0  # each attempt's own deadline
    # A failure that may pass (timeout, connection refused, broker down, 503,
    # UNAVAILABLE) is retried with exponential backoff from `backoff` up to
    # `max_backoff`, with jitter, until `deadline` has passed since the first attempt,
    # or after `retries` retries when that is set.
    retries: Annotated[int | None, PlainValidator(lambda v: None if v is None
                                                   else _integer(0)(v))] = None
    backoff: Duration = 0.2
    max_backoff: Duration = 5.0
    deadline: Duration = 60.0

    @property
    def service(self) -> str:
        return split_call(self.call)[0]

    @property
    def action(self) -> str:
        return split_call(self.call)[1]


def _input_type(value: Any) -> str:
    if isinstance(value, str) and value in INPUT_TYPES:
        return value
    hint = did_you_mean(value, INPUT_TYPES) if isinstance(value, str) else None
    raise Invalid(f"expected one of {', '.join(INPUT_TYPES)}, found {show(value)}", hint)


class SagaInputField(_Section):
    type: Annotated[str, PlainValidator(_input_type)] = "any"
    required: bool = True
    default: Any = None  # used when the key is not given (makes it optional)
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`address: string` is short for `address: {type: string}`."""
        return {"type": data} if isinstance(data, str) else data


class SagaConfig(_Section):
    implied_keys: ClassVar[frozenset[str]] = frozenset({"name"})

    name: str  # its key under `sagas`
    description: str | None = None
    input: dict[Identifier, SagaInputField] = Field(default_factory=dict)
    steps: list[SagaStep]

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, steps: list[SagaStep]) -> list[SagaStep]:
        if not steps:
            raise Invalid("expected at least one step, found none")
        return steps


class SagaWorkerConfig(_Section):
    """`shopctl up` runs `shopctl saga worker` beside the shop when enabled: it resumes
    sagas whose driver died, retries those an outage left stuck, and drains the outbox."""

    enabled: bool = False
    interval: Duration = 5.0  # between passes
    retry_stuck_after: Duration = 60.0  # how long an outage-stuck saga waits for a retry


def _saga_log_url(value: Any) -> str | None:
    if value is None or value == "":  # `url: ${VAR:-}` with VAR unset: the default log
        return None
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise Invalid(f"expected a postgresql://USER:PASSWORD@HOST:PORT/DATABASE url, found "
                      f"{show(value) if not isinstance(value, str) else _masked(value)}")
    return value


def _masked(url: str) -> str:
    from shopctl.saga.store import mask

    return repr(mask(url))


class SagaLogConfig(_Section):
    """Where the saga log lives. Without `url`, a SQLite file in the project's .shopctl/
    (one host). With a PostgreSQL url (`${VAR}` keeps the password out of the file),
    drivers on several hosts share it and take over each other's sagas after `lease`.
    SHOPCTL_SAGA_LOG in the environment overrides `url`."""

    url: Annotated[str | None, PlainValidator(_saga_log_url)] = None
    lease: Duration = 15.0  # how long a silent driver keeps its sagas (PostgreSQL only)

    @field_serializer("url")
    def _no_password(self, url: str | None) -> str | None:
        """Dumps (`shopctl config`, the worker's settings digest) never show a password."""
        from shopctl.saga.store import mask

        return None if url is None else mask(url)


class ShopConfig(_Section):
    project: ProjectName
    infra: InfraConfig = Field(default_factory=InfraConfig)
    services: dict[ServiceName, ServiceConfig] = Field(default_factory=dict)  # none yet: fine
    sagas: dict[SagaName, SagaConfig] = Field(default_factory=dict)
    saga_worker: SagaWorkerConfig = Field(default_factory=SagaWorkerConfig)
    saga_log: SagaLogConfig = Field(default_factory=SagaLogConfig)

    _root: Path | None = PrivateAttr(default=None)
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _fill_implied(cls, data: Any) -> Any:
        """Drop `x-` keys, give services and sagas their names, and services a default path."""
        if not isinstance(data, dict):
            return data
        data = {
            key: value
            for key, value in data.items()
            if not (key in ("infra", "services", "sagas", "saga_worker", "saga_log")
                    and value is None)
            and not (isinstance(key, str) and key.startswith("x-"))  # anchors live there
        }
        for section in ("services", "sagas"):
            entries = data.get(section)
            if not isinstance(entries, dict):
                continue
            filled = {}
            for key, entry in entries.items():
                if isinstance(entry, dict):
                    entry = {"name": key, **entry}  # a written name is checked in references
                    if section == "services":
                        entry.setdefault("path", f"services/{key}")
                filled[key] = entry
            data[section] = filled
        return data

    def attach(self, source: Path) -> ShopConfig:
        """Record where this config was read from (an absolute path to the file)."""
        self._source = source
        self._root = source.parent
        return self

    @property
    def root(self) -> Path:
        """The folder holding shop.yaml; service paths are relative to it."""
        return self._root if self._root is not None else Path.cwd()

    @property
    def source(self) -> Path:
        return self._source if self._source is not None else self.root / "shop.yaml"

    def service(self, name: str) -> ServiceConfig:
        try:
            return self.services[name]
        except KeyError:
            hint = did_you_mean(name, self.services) or f"services: {', '.join(self.services)}"
            message = f"no service named '{name}' in {self.source.name}"
            raise UsageError(message, hint=hint) from None

    def start_order(self) -> list[list[str]]:
        """Services in dependency order; the services of one level can start in parallel."""
        waiting = {
            name: {dep for dep in svc.depends_on if dep in self.services and dep != name}
            for name, svc in self.services.items()
        }
        levels: list[list[str]] = []
        while waiting:
            ready = [name for name, deps in waiting.items() if not deps]
            if not ready:
                raise ConfigError(f"dependency cycle among services: {', '.join(waiting)}")
            levels.append(ready)
            for name in ready:
                del waiting[name]
            for deps in waiting.values():
                deps.difference_update(ready)
        return levels

    def to_public_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-able data (durations in seconds)."""
        return self.model_dump(mode="json")
