"""Image building against a real engine: base images from Debian, service images with a
cached dependency layer, content hashes that follow the code and nothing else.

Service images are built for a throwaway project in a temporary folder (its own
shop.yaml, a tiny service and a copy of shopkit), so the test can edit code freely;
every image it made is removed by project label at the end. On a clean machine the
first test builds the shopctl/ base images (a few minutes, once).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from shopctl.config import ShopConfig, load_config
from shopctl.docker_client import connect
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.images.base import (
    LABEL_RECIPE,
    PYTHON_IMAGE,
    RECIPES,
    Recipe,
    ensure_base_images,
    ensure_image,
)
from shopctl.images.cache import file_lock
from shopctl.images.dockerfile import DEPS_STEP_MARKER, SERVICE_GID, SERVICE_UID
from shopctl.images.service import build_service_image, plan_service_image
from shopctl.units import LABEL_HASH, LABEL_PROJECT, LABEL_SERVICE

REPO = Path(__file__).resolve().parents[2]
PROJECT = f"t{uuid.uuid4().hex[:8]}"

MAIN_PY = 'print("demo service, version 1")\n'


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        engine = connect()
    except RuntimeUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc.message}")
    yield engine
    for image in engine.images.list(filters={"label": f"{LABEL_PROJECT}={PROJECT}"}):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-service project: services/demo, a copy of shopkit, an unrelated file."""
    root = tmp_path_factory.mktemp("images-project")
    (root / "shop.yaml").write_text(
        f"project: {PROJECT}\nservices:\n  demo:\n    kind: flask\n    port: 18999\n"
    )
    demo = root / "services" / "demo"
    demo.mkdir(parents=True)
    (demo / "main.py").write_text(MAIN_PY)
    (demo / "requirements.txt").write_text("pyjwt>=2.8\n")
    (demo / "data").mkdir()  # local state: must not reach the image or its hash
    (demo / "data" / "state.db").write_text("local only")
    shutil.copytree(
        REPO / "services" / "shopkit" / "shopkit",
        root / "services" / "shopkit" / "shopkit",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "services" / "shopkit" / "pyproject.toml", root / "services" / "shopkit")
    (root / "README.md").write_text("not part of any image\n")
    return root


def config_of(root: Path) -> ShopConfig:
    return load_config(root / "shop.yaml")


def deps_layer(client: docker.DockerClient, tag: str) -> str:
    """The id of the image layer made by the dependency (pip install) step."""
    for entry in client.api.history(tag):
        if DEPS_STEP_MARKER in entry.get("CreatedBy", ""):
            return entry["Id"]
    raise AssertionError(f"no dependency step in the history of {tag}")


@pytest.mark.docker
def test_base_images_are_idempotent_and_python_runs(client, project):
    config = config_of(project)
    first = ensure_base_images(config, client=client)
    assert {image.name for image in first} == {
        config.infra.base_image,
        config.infra.consul.image,
        config.infra.rabbitmq.image,
    }
    second = ensure_base_images(config, client=client)
    assert [image.action for image in second] == ["present"] * len(second)
    assert [image.image_id for image in second] == [image.image_id for image in first]
    out = client.containers.run(PYTHON_IMAGE, ["python3", "-c", "print(1)"], remove=True)
    assert out.decode().strip() == "1"


@pytest.mark.docker
def test_an_unknown_registry_image_explains_there_is_no_registry(client):
    with pytest.raises(OperationFailed) as caught:
        ensure_image(client, "registry.invalid/shopctl-test/none:1")
    assert "cannot be pulled" in caught.value.message
    assert PYTHON_IMAGE in (caught.value.hint or "")


@pytest.mark.docker
def test_service_image_builds_and_code_change_reuses_dependency_layer(client, project):
    config = config_of(project)
    plan = plan_service_image(config, "demo", client)
    tag, digest = build_service_image(config, "demo", client=client)
    assert (tag, digest) == (plan.tag, plan.content_hash)
    assert tag == f"shopctl-{PROJECT}/demo:{digest[:12]}"
    labels = client.images.get(tag).labels
    assert labels[LABEL_PROJECT] == PROJECT
    assert labels[LABEL_SERVICE] == "demo"
    assert labels[LABEL_HASH] == digest
    assert plan_service_image(config, "demo", client).exists
    again = build_service_image(config, "demo", client=client)
    assert again == (tag, digest)  # up to date: nothing built

    run = ["/opt/venv/bin/python", "-c", "import jwt, shopkit.settings, os; print(os.listdir('.'))"]
    listing = client.containers.run(tag, run, remove=True).decode()
    assert "main.py" in listing and "data" not in listing
    # It runs as the unprivileged service user, who owns /data and nothing else it got.
    assert client.images.get(tag).attrs["Config"]["User"] == f"{SERVICE_UID}:{SERVICE_GID}"
    owners = client.containers.run(tag, ["stat", "-c", "%n %u:%g %a", "/data", "/app",
                                         "/app/main.py"], remove=True).decode().splitlines()
    assert owners == [f"/data {SERVICE_UID}:{SERVICE_GID} 700", "/app 0:0 755",
                      "/app/main.py 0:0 644"]

    (project / "services" / "demo" / "main.py").write_text(MAIN_PY.replace("1", "2"))
    changed_tag, changed_digest = build_service_image(config, "demo", client=client)
    assert changed_digest != digest and changed_tag != tag
    assert deps_layer(client, changed_tag) == deps_layer(client, tag)
    out = client.containers.run(changed_tag, remove=True).decode()
    assert "version 2" in out


@pytest.mark.docker
def test_content_hash_follows_code_not_unrelated_files(client, project):
    config = config_of(project)
    before = plan_service_image(config, "demo", client).content_hash
    (project / "README.md").write_text("edited, still not part of any image\n")
    (project / "services" / "demo" / "data" / "state.db").write_text("changed local state")
    pycache = project / "services" / "demo" / "__pycache__"
    pycache.mkdir(exist_ok=True)
    (pycache / "main.cpython-311.pyc").write_bytes(b"\0")
    assert plan_service_image(config, "demo", client).content_hash == before

    (project / "services" / "demo" / "helper.py").write_text("X = 1\n")
    with_helper = plan_service_image(config, "demo", client).content_hash
    assert with_helper != before
    kit = project / "services" / "shopkit" / "shopkit" / "__init__.py"
    kit.write_text(kit.read_text() + "# edited\n")
    assert plan_service_image(config, "demo", client).content_hash != with_helper


@pytest.mark.docker
def test_failing_build_names_the_step_and_its_output(client, project):
    config = config_of(project)
    protogen = project / "services" / "demo" / "protogen.py"
    protogen.write_text("import sys\nprint('protogen-went-wrong')\nsys.exit(3)\n")
    dangling_before = {image.id for image in client.images.list(filters={"dangling": True})}
    try:
        with pytest.raises(OperationFailed) as caught:
            build_service_image(config, "demo", client=client)
    finally:
        protogen.unlink()
        # The engine keeps the last good step of a failed build as an untagged image.
        for image in client.images.list(filters={"dangling": True}):
            if image.id not in dangling_before:
                client.images.remove(image.id, force=True)
    error = caught.value
    assert "protogen.py" in error.message and "Step" in error.message
    assert "protogen-went-wrong" in (error.hint or "")


@pytest.mark.docker
def test_parallel_ensures_build_a_missing_image_once(client, monkeypatch):
    """Two `shopctl up`s at once: the second waits on the lock, then finds the image."""
    name = f"shopctl/locktest-{PROJECT}:1"
    builds: list[str] = []

    def build(engine: docker.DockerClient, fingerprint: str, progress) -> str:
        builds.append(name)
        time.sleep(1.0)  # long enough for the other thread to reach the lock
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        empty.seek(0)
        engine.api.import_image(
            src=empty.getvalue(),
            repository=name.split(":")[0],
            tag="1",
            changes=[f"LABEL {LABEL_RECIPE}={fingerprint}", f"LABEL {LABEL_PROJECT}={PROJECT}"],
        )
        return engine.images.get(name).id

    monkeypatch.setitem(RECIPES, name, Recipe(build, "lock test"))
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_image(client, name).action))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == [name]
    assert sorted(results) == ["built", "present"]


def test_no_engine_is_runtime_unavailable_with_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(RuntimeUnavailable) as caught:
        connect(timeout=2)
    assert "make engines" in (caught.value.hint or "")
    assert "--runtime local" in (caught.value.hint or "")


def test_file_lock_excludes_a_second_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPCTL_CACHE", str(tmp_path))
    order: list[str] = []
    inside = threading.Event()

    def holder() -> None:
        with file_lock("image-shopctl/python:3.11"):
            order.append("first in")
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(5)
    with file_lock("image-shopctl/python:3.11"):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
    assert list((tmp_path / "locks").iterdir())  # the lock lives in the cache, not the repo
