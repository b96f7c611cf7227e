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
