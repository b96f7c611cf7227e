"""Acceptance tests run the installed `shopctl` as a user would: a real process, real
files, asserting on exit codes and the exact text a person reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_shopctl(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
    dropped = ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR")
    full_env = {k: v for k, v in os.environ.items() if k not in dropped}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "shopctl", *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def shopctl():
    return run_shopctl


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv with shopctl installed from a copy of this checkout, not editable, as
    `pip install .` does for a user: built into a wheel, with its bundle (templates, kit,
    demo). Nothing of the checkout is on its path."""
    import shutil

    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    source = tmp_path_factory.mktemp("src") / "shopctl-src"
    # From a copy: pip's in-tree build would leave build/ and *.egg-info in the checkout.
    everywhere = shutil.ignore_patterns(".shopctl", "__pycache__", "*.egg-info",
                                        ".pytest_cache", ".ruff_cache", "data", "generated")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {".venv", ".git", "build", "dist", "tests"} if Path(folder) == REPO else set()
        return set(everywhere(folder, names)) | (top & set(names))

    shutil.copytree(REPO, source, ignore=ignore)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def run_wheel(venv: Path, *args: str, cwd: Path, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The wheel's `shopctl` as a user runs it: no PYTHONPATH, no SHOPCTL_* of ours."""
    dropped = ("PYTHONPATH", "SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR")
    full_env = {k: v for k, v in os.environ.items() if k not in dropped}
    full_env.update(env or {})
    return subprocess.run([str(venv / "bin" / "shopctl"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
