"""Stubs are generated from the .proto when missing or stale, and only then."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import protogen

REPO_PROTOS = protogen.SERVICE_DIR.parent.parent / "protos"
OUTPUTS = ("inventory_pb2.py", "inventory_pb2_grpc.py", "inventory_pb2.pyi")


@pytest.fixture
def proto_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "protos"
    folder.mkdir()
    shutil.copy(REPO_PROTOS / "inventory.proto", folder)
    return folder


def test_missing_stubs_are_generated(proto_dir, tmp_path):
    out = protogen.ensure_stubs(proto_dir, tmp_path / "generated")

    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert "class InventoryStub" in (out / "inventory_pb2_grpc.py").read_text()


def test_fresh_stubs_are_kept_and_stale_ones_regenerated(proto_dir, tmp_path):
    out = protogen.ensure_stubs(proto_dir, tmp_path / "generated")
    stub_file = out / "inventory_pb2.py"
    stub_file.write_text("# fresh enough to keep\n")
    proto_mtime = (proto_dir / "inventory.proto").stat().st_mtime

    protogen.ensure_stubs(proto_dir, out)
    kept = stub_file.read_text()
    os.utime(stub_file, (proto_mtime - 60, proto_mtime - 60))  # now older than the .proto
    protogen.ensure_stubs(proto_dir, out)

    assert kept == "# fresh enough to keep\n"
    assert "ReserveStockRequest" in stub_file.read_text()


def test_proto_dir_comes_from_env_then_next_to_main_then_the_repo(proto_dir, tmp_path):
    service_dir = tmp_path / "repo" / "services" / "inventory"
    service_dir.mkdir(parents=True)
    shutil.copytree(proto_dir, tmp_path / "repo" / "protos")
    env_dir = tmp_path / "elsewhere"
    shutil.copytree(proto_dir, env_dir)

    from_repo = protogen.find_proto_dir({}, service_dir)
    shutil.copytree(proto_dir, service_dir / "protos")  # the container layout
    from_image = protogen.find_proto_dir({}, service_dir)
    from_env = protogen.find_proto_dir({"SHOP_PROTO_DIR": str(env_dir)}, service_dir)

    assert from_repo == (tmp_path / "repo" / "protos").resolve()
    assert from_image == (service_dir / "protos").resolve()
    assert from_env == env_dir.resolve()


def test_missing_proto_names_the_places_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="SHOP_PROTO_DIR"):
        protogen.find_proto_dir({"SHOP_PROTO_DIR": str(tmp_path / "none")})
