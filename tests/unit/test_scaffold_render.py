"""Kinds are discovered from templates/, and rendering is pure and deterministic."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from shopctl.errors import UsageError
from shopctl.scaffold.kinds import discover_kinds, get_kind
from shopctl.scaffold.render import ServiceSpec, render_service

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_four_kinds_are_discovered_from_their_manifests():
    kinds = discover_kinds(TEMPLATES)

    assert list(kinds) == ["fastapi", "flask", "grpc", "nameko"]
    assert kinds["grpc"].proto and kinds["grpc"].metrics_ports
    assert all(k.description for k in kinds.values())


def test_a_folder_with_a_manifest_is_a_new_kind(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "app.py.j2").write_text("NAME = {{ name|tojson }}\n")
    (folder / "manifest.yaml").write_text(
        "description: tiny\nruntime_kind: fastapi\nports: [9000, 9001]\n"
        'files:\n  "{service_dir}/app.py": app.py.j2\n'
    )

    kind = get_kind(tmp_path, "tiny")
    files = render_service(ServiceSpec("x-y", kind, 9000))

    assert files[0].path == PurePosixPath("services/x-y/app.py")
    assert files[0].content == 'NAME = "x-y"\n'


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(UsageError) as caught:
        get_kind(TEMPLATES, "django")

    assert "fastapi, flask, grpc, nameko" in str(caught.value)


@pytest.mark.parametrize("kind", ["fastapi", "flask", "grpc", "nameko"])
def test_rendering_is_pure_and_deterministic(kind):
    before = snapshot(TEMPLATES)
    spec = ServiceSpec("reviews", get_kind(TEMPLATES, kind), 8123, 9123, ("users",))

    first, second = render_service(spec), render_service(spec)

    assert first == second
    assert snapshot(TEMPLATES) == before
    assert not (REPO / "services" / "reviews").exists()
    paths = {str(f.path) for f in first}
    assert {"services/reviews/main.py", "services/reviews/tests/conftest.py"} <= paths
    assert all("{{" not in f.content for f in first)
    assert [f.executable for f in first if f.path.name == "main.py"] == [True]
    if kind == "grpc":
        assert "protos/reviews.proto" in paths


@pytest.mark.parametrize("kind", ["fastapi", "flask", "grpc", "nameko"])
def test_every_kind_is_saga_ready_under_its_shop_yaml_name(kind):
    # shopctl calls SERVICE.hold / SERVICE.release by the kind's convention, with the
    # shop.yaml name (hyphens and all); result keys use the module name.
    chosen = get_kind(TEMPLATES, kind)
    files = {str(f.path): f.content
             for f in render_service(ServiceSpec("gift-wrap", chosen, 8123, 9123))}

    assert '"gift_wrap_hold"' in files["services/gift-wrap/holds.py"]
    assert "services/gift-wrap/tests/test_saga.py" in files
    assert "- {name: hold_{module}, call: {name}.hold, compensate: {name}.release}" in chosen.notes
    if kind == "grpc":  # the saga looks a method up in protos/SERVICE.proto first
        assert "rpc Hold(SagaCall) returns (HoldReply);" in files["protos/gift-wrap.proto"]
    if kind == "nameko":  # the saga calls, and `saga check` looks for, rpc-SERVICE
        assert 'name = "gift-wrap"' in files["services/gift-wrap/service.py"]
