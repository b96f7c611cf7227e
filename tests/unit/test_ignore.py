"""One set of ignore rules for the code hash `up` plans with, the image's files and
`shopctl dev`: a file one of them skips, all of them skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopctl.fingerprint import iter_files, tree_hash
from shopctl.ignore import ignored
from shopctl.images.tarball import walk_files

SOURCE = ["app.py", "pkg/models.py", "requirements.txt", ".env", "static/site.css",
          "protos/shop.proto", "Dockerfile.extra", "tests/test_app.py"]
NOT_SOURCE = [
    ".app.py.swp", "app.py.swo", "app.py~", "4913", ".#app.py", "#app.py#",
    "__pycache__/app.cpython-311.pyc", "pkg/__pycache__/m.pyc", "data/users.db",
    "generated/shop_pb2.py", ".git/HEAD", ".venv/bin/python", "venv/lib/x.py",
    "node_modules/x/index.js", ".pytest_cache/v", ".idea/workspace.xml",
    "shop.egg-info/PKG-INFO", "users.db", "users.db-wal", "service.log", "app.py.orig",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "svc"
    for name in SOURCE + NOT_SOURCE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def test_the_hash_and_the_image_take_the_same_files(tree):
    hashed = {p.relative_to(tree).as_posix() for p in iter_files(tree)}
    imaged = {name for name, _ in walk_files(tree, ignored)}
    assert hashed == imaged == set(SOURCE)


@pytest.mark.parametrize("name", NOT_SOURCE)
def test_a_change_to_a_file_that_is_not_source_changes_no_hash(tree, name):
    before = tree_hash([tree])
    (tree / name).write_text("edited while the editor had it open")
    assert tree_hash([tree]) == before
    assert ignored(name)


@pytest.mark.parametrize("name", SOURCE)
def test_a_change_to_source_changes_the_hash(tree, name):
    before = tree_hash([tree])
    (tree / name).write_text("edited")
    assert tree_hash([tree]) != before
    assert not ignored(name)


def test_a_folder_is_judged_as_a_folder():
    assert ignored("data", is_dir=True) and not ignored("data")  # a file named data is code
    assert ignored(".cache", is_dir=True) and not ignored(".env")
