"""`shopctl init`, the shipped bundle (templates, kit, demo) and a project's overrides,
through the CLI in-process: what is written, what is refused, and that the demo shop
this repository holds is exactly what `init --demo` produces."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from shopctl import bundle
from shopctl.config import load_config
from shopctl.runtime import pyenv
from shopctl.scaffold.kinds import project_kinds

REPO = Path(__file__).resolve().parents[2]


def shopctl(capsys, *args: str) -> tuple[int, str, str]:
    from shopctl.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def plain(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_init_makes_a_valid_empty_project_named_after_its_folder(tmp_path, capsys):
    root = tmp_path / "Parcel_Post"
    code, out, _ = shopctl(capsys, "init", str(root))
    assert code == 0
    assert sorted(tree(root)) == [".gitignore", "protos/.gitkeep", "services/.gitkeep",
                                  "shop.yaml"]
    config = load_config(root / "shop.yaml", {})
    assert config.project == "parcel-post" and config.services == {}
    assert ".shopctl/" in (root / ".gitignore").read_text().splitlines()
    assert "# `shopctl scaffold new-service" in (root / "shop.yaml").read_text()
    assert "shopctl scaffold new-service" in out and f"cd {root}" in out


def test_scaffold_into_a_new_project_keeps_its_comments(tmp_path, capsys, monkeypatch):
    shopctl(capsys, "init", str(tmp_path), "--name", "parcels")
    before = (tmp_path / "shop.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    code, _, err = shopctl(capsys, "scaffold", "new-service", "label-desk", "--kind", "grpc",
                           "--port", "50071")
    assert code == 0, err
    after = (tmp_path / "shop.yaml").read_text()
    config = load_config(tmp_path / "shop.yaml", {})
    assert list(config.services) == ["label-desk"] and config.services["label-desk"].port == 50071
    kept = [line for line in before.splitlines() if line.startswith("#") or "  #" in line]
    assert all(line in after.splitlines() for line in kept)
    assert (tmp_path / "protos" / "label-desk.proto").is_file()
    requirements = (tmp_path / "services" / "label-desk" / "requirements.txt").read_text()
    assert f"shopkit {bundle.kit_for(tmp_path).version}" in requirements.splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (["--name", "Bad Name"], "error: bad project name 'Bad Name'"),
    (["--name", "-x"], "error: bad project name '-x'"),
    (["--demo", "--name", "a" * 41], "error: bad project name"),
])
def test_a_bad_project_name_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    root = tmp_path / "new"
    code, _, err = shopctl(capsys, "init", str(root), *args)
    assert code == 2 and err.startswith(message) and "hint:" in err
    assert not root.exists()


@pytest.mark.parametrize("demo", [False, True])
def test_a_folder_with_a_shop_yaml_is_refused_unless_forced(tmp_path, capsys, demo):
    (tmp_path / "shop.yaml").write_text("project: mine  # my own\nservices: {}\n")
    (tmp_path / "notes.txt").write_text("keep me")
    flags = ["--demo"] if demo else []
    code, _, err = shopctl(capsys, "init", str(tmp_path), *flags)
    assert code == 2 and "already exists" in err and "--force" in err
    assert tree(tmp_path) == {"notes.txt": b"keep me",
                              "shop.yaml": b"project: mine  # my own\nservices: {}\n"}
    code, _, _ = shopctl(capsys, "init", str(tmp_path), "--force", "--name", "mine", *flags)
    assert code == 0 and (tmp_path / "notes.txt").read_text() == "keep me"
    assert load_config(tmp_path / "shop.yaml", {}).project == "mine"


def test_the_demo_in_this_repository_is_exactly_what_init_demo_makes(tmp_path, capsys):
    code, out, _ = shopctl(capsys, "init", str(tmp_path), "--demo", "--name", "shop", "--json")
    assert code == 0
    made = tree(tmp_path)
    assert made.pop(".gitignore")
    repo = {rel: path.read_bytes() for rel, path in bundle.demo_files()}
    assert made == repo
    assert made["shop.yaml"] == (REPO / "shop.yaml").read_bytes()
    services = {rel.split("/")[1] for rel in made if rel.startswith("services/")}
    assert services == {p.name for p in (REPO / "services").iterdir()
                        if p.is_dir() and p.name != "shopkit"}
    assert not any("__pycache__" in rel or "/data/" in rel for rel in made)
    for rel in made:  # modes too: main.py stays executable
        assert os.access(tmp_path / rel, os.X_OK) == os.access(REPO / rel, os.X_OK), rel
    assert json.loads(out)["next"][-1].startswith("shopctl saga run order")
    config = load_config(tmp_path / "shop.yaml", {})
    assert "order" in config.sagas and len(config.services) == 5


def test_a_demo_under_another_name_differs_only_in_its_project_line(tmp_path, capsys):
    shopctl(capsys, "init", str(tmp_path), "--demo", "--name", "acme")
    ours = (tmp_path / "shop.yaml").read_text().splitlines()
    theirs = (REPO / "shop.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    assert changed == [("project: acme", "project: shop")]


# -- kinds and the kit: shipped, and a project's own over them ---------------------------------

def test_a_project_kind_overrides_a_shipped_one_and_adds_its_own(tmp_path, capsys, monkeypatch):
    shopctl(capsys, "init", str(tmp_path), "--name", "parcels")
    for name in ("flask", "tiny"):
        folder = tmp_path / "templates" / name
        folder.mkdir(parents=True)
        (folder / "main.py.j2").write_text("print('{{ name }}')\n")
        (folder / "manifest.yaml").write_text(
            f"description: our {name}\nruntime_kind: flask\nports: [8300, 8399]\n"
            "files: {'{service_dir}/main.py': main.py.j2}\n")
    kinds = project_kinds(tmp_path)
    assert {k: v.source for k, v in kinds.items()} == {
        "fastapi": "shopctl", "flask": "project", "grpc": "shopctl", "nameko": "shopctl",
        "tiny": "project"}
    monkeypatch.chdir(tmp_path)
    code, out, _ = shopctl(capsys, "scaffold", "kinds")
    assert code == 0
    assert f"flask    from project {tmp_path / 'templates' / 'flask'}: our flask" in out
    assert "grpc     from shopctl:" in out
    code, _, err = shopctl(capsys, "scaffold", "new-service", "mini", "--kind", "tiny")
    assert code == 0, err
    assert (tmp_path / "services" / "mini" / "main.py").read_text() == "print('mini')\n"


def test_the_kit_is_the_shipped_one_unless_the_project_keeps_its_own(tmp_path):
    shipped = bundle.kit_for(tmp_path)
    assert shipped.source == "shopctl" and (shipped.package / "settings.py").is_file()
    assert shipped.version == "0.1.0" and any("pyjwt" in d for d in shipped.dependencies)
    own = tmp_path / "services" / "shopkit"
    (own / "shopkit").mkdir(parents=True)
    (own / "pyproject.toml").write_text('[project]\nname = "shopkit"\nversion = "9.9"\n')
    kit = bundle.kit_for(tmp_path)
    assert (kit.source, kit.root, kit.version, kit.dependencies) == ("project", own, "9.9", [])


def test_requirements_already_met_need_no_project_venv(tmp_path):
    assert pyenv.requirement_lines(["flask>=3\n# c\n-r x.txt\n", "flask>=3\npyjwt  # auth\n"]
                                   ) == ["flask>=3", "pyjwt"]
    assert pyenv.unsatisfied(["pyyaml>=6", "typer", "pydantic>=2"]) == []
    assert pyenv.unsatisfied(["pyyaml>=999", "no-such-dist-here", "x[y"]) == [
        "pyyaml>=999", "no-such-dist-here", "x[y"]
    assert pyenv.interpreter(["pyyaml>=6"], tmp_path / "venv") == pyenv.sys.executable
    assert not (tmp_path / "venv").exists()


def test_init_files_are_written_with_ordinary_modes(tmp_path, capsys):
    shopctl(capsys, "init", str(tmp_path), "--demo", "--name", "shop")
    mode = stat.S_IMODE((tmp_path / "shop.yaml").stat().st_mode)
    assert mode == 0o644
