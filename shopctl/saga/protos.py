"""A project's own .proto files, compiled at run time into message classes and methods.

The saga calls gRPC services through the contracts in the project's `protos/`, never
through stubs from shopctl's source: protoc (from grpcio-tools) compiles every .proto
there into one FileDescriptorSet, and protobuf builds the request and reply classes from
it. Compiling the demo's protos takes a few tens of ms and happens once per process.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopctl.errors import ShopctlError


class ProtoError(ShopctlError):
    """The project's protos do not compile, or name no such method."""


@dataclass(frozen=True)
class Method:
    full_name: str  # "/package.Service/Method", as gRPC puts it on the wire
    input: Any  # the request message class
    output: Any  # the reply message class
    file: str  # the .proto that declares it, relative to protos/


class ProtoSet:
    """Every service method declared in the .proto files under `folder`."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._methods: list[Method] | None = None

    def methods(self) -> list[Method]:
        with self._lock:
            if self._methods is None:
                self._methods = _compile(self.folder)
            return self._methods

    def find(self, wanted: str, service: str | None = None) -> Method:
        """The method `wanted` names: "pkg.Service/Method", "Service/Method" or "Method".
        A bare name is looked up first in protos/SERVICE.proto when `service` has one."""
        methods = self.methods()
        matches = [m for m in methods if _names(m, wanted)]
        if len(matches) > 1 and service is not None and "/" not in wanted:
            own = [m for m in matches if Path(m.file).stem == service]
            matches = own or matches
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(m.full_name.lstrip("/") for m in methods) or "none"
        if not matches:
            raise ProtoError(f"no gRPC method {wanted!r} in {self.folder}",
                             hint=f"methods declared there: {known}")
        raise ProtoError(f"gRPC method {wanted!r} is ambiguous in {self.folder}: "
                         + ", ".join(m.full_name.lstrip("/") for m in matches),
                         hint="name it as 'package.Service/Method' in the action's `method`")


def _names(method: Method, wanted: str) -> bool:
    full = method.full_name.lstrip("/")  # package.Service/Method
    service_path, _, name = full.partition("/")
    if "/" not in wanted:
        return name == wanted
    want_service, _, want_name = wanted.partition("/")
    return want_name == name and (service_path == want_service
                                  or service_path.rsplit(".", 1)[-1] == want_service)


def _compile(folder: Path) -> list[Method]:
    import grpc_tools
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.proto"))
    if not files:
        raise ProtoError(f"no .proto files under {folder}",
                         hint="a gRPC service's contract lives in the project's protos/")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="shopctl-protos-") as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{folder}", f"-I{well_known}",
                            f"--descriptor_set_out={out}", "--include_imports", *files])
        if code != 0 or not out.exists():
            raise ProtoError(f"protoc could not compile the protos under {folder} "
                             f"(exit {code})", hint="run protoc on them to see the error")
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptors.file:
        pool.Add(proto)
    methods = []
    for name in files:
        file = pool.FindFileByName(name)
        for service in file.services_by_name.values():
            for method in service.methods:
                methods.append(Method(
                    full_name=f"/{service.full_name}/{method.name}",
                    input=message_factory.GetMessageClass(method.input_type),
                    output=message_factory.GetMessageClass(method.output_type),
                    file=name))
    return methods
