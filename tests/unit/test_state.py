"""The project state dir: secret creation, permissions, atomic writes, and git hygiene."""

from __future__ import annotations

import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from shopctl.state import ProjectState, write_atomic, write_new

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_paths_live_under_dot_shopctl(tmp_path):
    ps = ProjectState(tmp_path)
    assert ps.dir == tmp_path / ".shopctl"
    assert ps.run_file("users") == tmp_path / ".shopctl/local/run/users.json"
    assert ps.spec_file("users") == tmp_path / ".shopctl/local/run/users.spec.json"
    assert ps.log_file("users") == tmp_path / ".shopctl/local/logs/users.log"
    assert ps.data_dir("users") == tmp_path / ".shopctl/local/data/users"
    assert ps.saga_db == tmp_path / ".shopctl/saga.db"
    assert not ps.dir.exists(), "computing paths must not create anything"


def test_jwt_secret_is_private(tmp_path):
    ps = ProjectState(tmp_path)
    ps.jwt_secret()
    assert mode(ps.secrets_dir / "jwt_secret") == 0o600
    assert mode(ps.secrets_dir) == 0o700
    assert mode(ps.dir) == 0o700


def test_jwt_secret_private_even_with_a_permissive_umask(tmp_path):
    import os

    old = os.umask(0)
    try:
        ps = ProjectState(tmp_path)
        ps.jwt_secret()
    finally:
        os.umask(old)
    assert mode(ps.secrets_dir / "jwt_secret") == 0o600
    assert mode(ps.secrets_dir) == 0o700


def test_jwt_secret_is_stable_and_strong(tmp_path):
    first = ProjectState(tmp_path).jwt_secret()
    assert first == ProjectState(tmp_path).jwt_secret() == ProjectState(tmp_path).jwt_secret()
    assert len(first) >= 64  # 48 random bytes, url-safe base64
    assert ProjectState(tmp_path / "other").jwt_secret() != first


def test_concurrent_first_calls_agree(tmp_path):
    ps = ProjectState(tmp_path)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def call():
        barrier.wait()
        results.append(ps.jwt_secret())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert results[0] == ps.jwt_secret()
    assert [p.name for p in ps.secrets_dir.iterdir()] == ["jwt_secret"], "no temp files left"


def test_write_atomic_replaces_with_exact_mode(tmp_path):
    target = tmp_path / "state.json"
    write_atomic(target, "one", mode=0o644)
    write_atomic(target, b"two", mode=0o600)
    assert target.read_text() == "two"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_new_keeps_the_first_file(tmp_path):
    target = tmp_path / "secret"
    assert write_new(target, "first", mode=0o600) is True
    assert write_new(target, "second", mode=0o600) is False
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_ensure_refuses_paths_outside(tmp_path):
    ps = ProjectState(tmp_path)
    with pytest.raises(ValueError):
        ps.ensure(tmp_path / "elsewhere")
    created = ps.ensure(ps.run_dir)
    assert created.is_dir() and mode(ps.local_dir) == 0o700 and mode(ps.run_dir) == 0o700


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_state_dir_is_never_committed(tmp_path):
    """With the repository's own .gitignore, nothing under .shopctl/ can be added."""
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    ps = ProjectState(tmp_path)
    ps.jwt_secret()
    ps.ensure(ps.run_dir)
    ps.run_file("users").write_text("{}")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    staged = subprocess.run(
        ["git", "-C", str(tmp_path), "diff", "--cached", "--name-only"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert staged == [".gitignore"]
    ignored = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "-q", ".shopctl/secrets/jwt_secret"]
    )
    assert ignored.returncode == 0
