"""The lab (a local 3-node Docker Swarm, shopctl.lab) as a session fixture for every test
folder. Loaded from the root conftest.py.

    def test_x(lab):                      # a Lab, every node running and Ready
        docker.DockerClient(base_url=lab.manager_host).services.create(...)

`swarm_lab` is that lab, or the one named in $SHOPCTL_SWARM_LAB (a lab of one's own,
which no other session removes meanwhile), for the swarm runtime's tests.

The lab is reused when present (a developer's, or one left by an earlier session) and
removed at the end of the session only if this session created it, so a developer's lab
survives the tests and CI pays for it once. Images reach the nodes with
`shopctl.lab.load_images(lab, [...])`; services on it should clean up after themselves.
"""

from __future__ import annotations

import os

import pytest

LAB_NODES = 3


@pytest.fixture(scope="session")
def lab():
    from shopctl.lab import DEFAULT_NAME, lab_down, lab_status, lab_up

    existing = lab_status(DEFAULT_NAME)
    # A developer's bigger lab is used as it is (lab_up refuses to shrink one).
    nodes = max(LAB_NODES, len(existing.nodes) if existing else 0)
    up = lab_up(nodes=nodes, name=DEFAULT_NAME)
    try:
        yield up
    finally:
        if existing is None:
            lab_down(DEFAULT_NAME)


@pytest.fixture(scope="module")
def swarm_lab(request):
    """The shared lab, or the lab named in $SHOPCTL_SWARM_LAB, brought up and left
    running."""
    name = os.environ.get("SHOPCTL_SWARM_LAB")
    if not name:
        return request.getfixturevalue("lab")
    from shopctl.lab import lab_up

    return lab_up(nodes=LAB_NODES, name=name)
