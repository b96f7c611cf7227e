"""Generate the inventory service's Python gRPC stubs from protos/inventory.proto.

The stubs are build output, never committed: `ensure_stubs` (re)writes
`inventory_pb2.py`, `inventory_pb2_grpc.py` and `inventory_pb2.pyi` into `generated/`
when one is missing or older than the .proto. A Dockerfile can run it at build time
(`RUN python protogen.py`) so a container starts without writing to its image; the
service runs it again at start, which costs nothing when the stubs are fresh.

Where the .proto is found (`find_proto_dir`): $SHOP_PROTO_DIR, else a `protos/` folder
next to this file (how images ship it), else the repository's `protos/` two levels up.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

SERVICE_DIR = Path(__file__).resolve().parent
GENERATED_DIR = SERVICE_DIR / "generated"
PROTO_FILE = "inventory.proto"
_OUTPUTS = ("inventory_pb2.py", "inventory_pb2_grpc.py", "inventory_pb2.pyi")


def find_proto_dir(
    environ: Mapping[str, str] | None = None, service_dir: Path = SERVICE_DIR
) -> Path:
    """The folder holding inventory.proto; FileNotFoundError names every place tried."""
    env = os.environ if environ is None else environ
    if env.get("SHOP_PROTO_DIR"):
        candidates = [Path(env["SHOP_PROTO_DIR"])]
    else:
        candidates = [service_dir / "protos", service_dir.parent.parent / "protos"]
    for candidate in candidates:
        if (candidate / PROTO_FILE).is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{PROTO_FILE} not found in {tried} (set SHOP_PROTO_DIR)")


def stubs_are_fresh(proto_dir: Path, out_dir: Path) -> bool:
    proto_mtime = (proto_dir / PROTO_FILE).stat().st_mtime
    outputs = [out_dir / name for name in _OUTPUTS]
    return all(p.is_file() and p.stat().st_mtime >= proto_mtime for p in outputs)


def ensure_stubs(proto_dir: Path | None = None, out_dir: Path = GENERATED_DIR) -> Path:
    """Regenerate the stubs into `out_dir` unless they are fresh; returns `out_dir`.

    protoc writes into a scratch folder and each file is then moved into place
    atomically, so a process importing the stubs while another regenerates them (a test
    run next to a running service) never reads a half-written module.
    """
    # Imported here so that importing this module (or running with fresh stubs) does
    # not load protoc.
    from grpc_tools import protoc

    proto_dir = find_proto_dir() if proto_dir is None else Path(proto_dir)
    out_dir = Path(out_dir)
    if stubs_are_fresh(proto_dir, out_dir):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".protogen-", dir=out_dir))
    try:
        # grpc_tools ships the well-known .protos; protoc needs them on its include path.
        well_known = Path(protoc.__file__).resolve().parent / "_proto"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={proto_dir}",
                f"--proto_path={well_known}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                str(proto_dir / PROTO_FILE),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed (exit {code}) on {proto_dir / PROTO_FILE}")
        for name in _OUTPUTS:
            os.replace(scratch / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


def load_stubs() -> tuple[ModuleType, ModuleType]:
    """(inventory_pb2, inventory_pb2_grpc), generated first when needed.

    protoc's Python output imports its sibling as a top-level module
    (`import inventory_pb2`), so the generated folder goes on sys.path.
    """
    out_dir = str(ensure_stubs())
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    return importlib.import_module("inventory_pb2"), importlib.import_module("inventory_pb2_grpc")


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-dir", type=Path, help="default: see find_proto_dir")
    parser.add_argument("--out-dir", type=Path, default=GENERATED_DIR)
    args = parser.parse_args(argv)
    print(ensure_stubs(args.proto_dir, args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
