"""Suite-wide rules.

A test that checks a real part (Docker, Consul, RabbitMQ, a gRPC server) must run it
for real, so a skipped test is reported as a failure: a missing engine or binary is a
broken set-up (run `make system engines`), never a reason for a green run.
Set SHOPCTL_ALLOW_SKIPS=1 to see skips as skips while working without those parts.
"""

from __future__ import annotations

import os

import pytest

# The saga-log backends (SQLite, a real PostgreSQL) and the lab swarm as fixtures for every
# test folder.
pytest_plugins = ["tests.saga_backends", "tests.lab"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and not os.environ.get("SHOPCTL_ALLOW_SKIPS")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped test counts as a failure (a real part is missing?): {reason}"
