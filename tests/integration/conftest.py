"""Fixtures shared by the integration tests.

Plain helpers (wait_for, free_ports) live in shopctl.testing: test modules import them
from there, because --import-mode=importlib makes importing a conftest unreliable.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from shopctl.infra.local import consul_argv
from shopctl.runtime.local import consul_ready, free_port
from shopctl.testing import wait_for


@pytest.fixture(scope="module")
def consul_http(tmp_path_factory) -> Iterator[str]:
    """A private Consul agent on free ports (every other port disabled or private), so
    it runs next to a shop's own Consul and to other tests; yields its HTTP address."""
    binary = shutil.which("consul")
    if binary is None:
        pytest.skip("consul binary not installed (make system)")
    data = tmp_path_factory.mktemp("consul")
    port = free_port()
    argv = consul_argv(binary, f"test-{port}", port, data, free_port(), free_port())
    with open(data / "agent.log", "wb") as log:
        agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: consul_ready(port), 30, "consul leader")
        yield f"http://127.0.0.1:{port}"
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
