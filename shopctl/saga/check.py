"""`saga check`: every step of a saga resolved against the running services.

For each call (and compensation) of a saga: the contract it resolves to, the address it
goes to, and whether the target is there:
  HTTP    the service answers; where it serves an OpenAPI document (/openapi.json, as
          FastAPI does) the method and path must be in it
  nameko  the service's RPC queue (rpc-SERVICE) exists on the broker and is consumed
          (nameko has no way to list a service's methods without calling one)
  gRPC    the method is in the project's protos and the server answers
Checks of different targets run in parallel; nothing is called that could change state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from shopctl.saga.contract import ActionSpec
from shopctl.saga.endpoints import Endpoints


@dataclass(frozen=True)
class CallCheck:
    step: str
    phase: str  # forward | compensate
    call: str
    kind: str
    target: str  # what the call goes to, e.g. "POST http://127.0.0.1:8010/saga/hold"
    ok: bool
    detail: str
    declared: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_saga(definition: dict[str, Any], endpoints: Endpoints, protos=None,
               timeout: float = 3.0) -> list[CallCheck]:
    """A CallCheck per call of the saga `definition` (an engine.snapshot)."""
    from shopctl.saga.protos import ProtoSet

    proto_set = ProtoSet(protos) if protos is not None else None
    jobs = []
    for step in definition["steps"]:
        for phase, key in (("forward", "call"), ("compensate", "compensate")):
            call = step.get(key)
            if call:
                spec = ActionSpec.from_dict(definition["actions"][call])
                jobs.append((step["name"], phase, spec))
    # Import the clients here, once: modules imported by several threads at once can
    # be seen half-initialised (kombu's lazy attributes raised ImportError that way).
    kinds = {spec.kind for _, _, spec in jobs}
    if "nameko" in kinds:
        import kombu  # noqa: F401
    if "grpc" in kinds:
        import grpc  # noqa: F401
    if kinds - {"nameko", "grpc"}:
        import httpx  # noqa: F401
    with ThreadPoolExecutor(max_workers=min(8, len(jobs) or 1)) as pool:
        futures = [pool.submit(_check, spec, endpoints, proto_set, timeout)
                   for _, _, spec in jobs]
        results = [f.result() for f in futures]
    return [CallCheck(step, phase, spec.call, spec.kind, target, ok, detail, spec.declared)
            for (step, phase, spec), (target, ok, detail) in zip(jobs, results, strict=True)]


def _check(spec: ActionSpec, endpoints: Endpoints, protos, timeout: float
           ) -> tuple[str, bool, str]:
    try:
        if spec.kind == "nameko":
            return _nameko(spec, endpoints, timeout)
        if spec.kind == "grpc":
            return _grpc(spec, endpoints, protos, timeout)
        return _http(spec, endpoints, timeout)
    except Exception as exc:  # a check reports, never raises
        return spec.call, False, f"{type(exc).__name__}: {exc}"


def _http(spec: ActionSpec, endpoints: Endpoints, timeout: float) -> tuple[str, bool, str]:
    import httpx

    base = endpoints.base_url(spec.service)
    target = f"{spec.method} {base}{spec.path}"
    try:
        resp = httpx.get(f"{base}/openapi.json", timeout=timeout)
    except httpx.HTTPError as exc:
        return target, False, f"unreachable: {type(exc).__name__}: {exc}"
    if resp.status_code != 200:
        return target, True, "reachable (no OpenAPI document to check the path against)"
    try:
        document = resp.json()
    except ValueError:
        document = None
    if not (isinstance(document, dict) and ("openapi" in document or "swagger" in document)
            and isinstance(document.get("paths"), dict)):
        return target, True, "reachable (what it serves at /openapi.json is no OpenAPI document)"
    paths = document["paths"]
    for path, operations in paths.items():
        if _same_path(spec.path or "", path) and spec.method.lower() in operations:
            return target, True, f"in the OpenAPI document as {spec.method} {path}"
    return target, False, f"{spec.method} {spec.path} is not in the service's OpenAPI document"


def _same_path(ours: str, theirs: str) -> bool:
    """Whether a path (maybe with {{ }} expressions) can match an OpenAPI path ({param})."""
    mine, other = ours.strip("/").split("/"), theirs.strip("/").split("/")
    return len(mine) == len(other) and all(
        a == b or "{{" in a or (b.startswith("{") and b.endswith("}"))
        for a, b in zip(mine, other, strict=True))


def _nameko(spec: ActionSpec, endpoints: Endpoints, timeout: float) -> tuple[str, bool, str]:
    from kombu import Connection

    target = f"{spec.service}.{spec.method} over AMQP"
    if not endpoints.amqp:
        return target, False, "no AMQP broker (infra.rabbitmq is disabled)"
    queue = f"rpc-{spec.service}"
    with Connection(endpoints.amqp, connect_timeout=timeout) as conn:
        try:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:
            return target, False, f"broker unreachable: {exc}"
        channel = conn.channel()
        try:
            _, _, consumers = channel.queue_declare(queue=queue, passive=True)
        except conn.channel_errors:
            return target, False, f"no RPC queue {queue}: the service never ran on this broker"
    if not consumers:
        return target, False, f"{queue} exists but no service consumes it (not running)"
    return target, True, f"{queue} consumed by {consumers} worker(s)"


def _grpc(spec: ActionSpec, endpoints: Endpoints, protos, timeout: float
          ) -> tuple[str, bool, str]:
    import grpc

    if protos is None:
        return spec.method, False, "no protos folder"
    method = protos.find(spec.method, spec.service)
    address = endpoints.address(spec.service)
    target = f"{method.full_name.lstrip('/')} at {address}"
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return target, False, "the server does not answer"
    finally:
        channel.close()
    return target, True, f"declared in protos/{method.file}; the server answers"
