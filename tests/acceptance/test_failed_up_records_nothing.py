"""A first `up` that fails records nothing as the project's runtime (issue 12, item 10).

With no engine answering (DOCKER_HOST at a socket nobody listens on), `up --runtime
docker` fails: it must not leave "docker" as the project's runtime, or every later
`status` / `down` on auto insists on the missing engine instead of treating the project
as the new one it is. Its hint must be a command that runs (`--runtime` goes after the
command). Real processes, a real refused connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, run_shopctl


@pytest.fixture
def dead_engine(tmp_path) -> Iterator[dict[str, str]]:
    """DOCKER_HOST at a unix socket that exists but does not listen: connection refused."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    try:
        yield {"DOCKER_HOST": f"unix://{path}", "COLUMNS": "200"}
    finally:
        sock.close()


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "shop"
    done = run_shopctl("init", str(root), "--demo", "--name", "failedup", cwd=REPO)
    assert done.returncode == 0, done.stderr
    return root


def test_failed_docker_up_records_nothing_and_status_falls_back(project, dead_engine):
    never_ran = run_shopctl("status", cwd=project, env=dead_engine)
    assert "Traceback" not in never_ran.stdout + never_ran.stderr
    assert "no Docker engine answers" in never_ran.stderr  # auto fell back to local

    up = run_shopctl("up", "--runtime", "docker", cwd=project, env=dead_engine)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "Traceback" not in up.stdout + up.stderr
    assert "error: the Docker engine does not answer" in up.stderr
    assert "`shopctl up --runtime local`" in up.stderr  # a hint that runs
    assert "shopctl --runtime" not in up.stderr
    assert not (project / ".shopctl" / "runtime").exists()

    after = run_shopctl("status", cwd=project, env=dead_engine)
    assert (after.returncode, after.stdout, after.stderr) == (
        never_ran.returncode, never_ran.stdout, never_ran.stderr)


def test_the_engine_hint_runs_as_written(project, dead_engine):
    """The command the hint names, run as written, gets past the command line."""
    up = run_shopctl("up", "--runtime", "docker", cwd=project, env=dead_engine)
    assert "`shopctl up --runtime local`" in up.stderr, up.stderr
    planned = run_shopctl("up", "--runtime", "local", "--dry-run", cwd=project,
                          env=dead_engine)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "plan (local)" in planned.stdout
