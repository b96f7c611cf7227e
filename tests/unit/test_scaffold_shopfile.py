"""shop.yaml edits keep every byte outside the new block, and ports are chosen free."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopctl.config import load_config
from shopctl.errors import UsageError
from shopctl.scaffold.shopfile import ServiceEntry, choose_port, plan_edit, port_owners

REPO = Path(__file__).resolve().parents[2]

COMMENTED = """\
# top comment
project: shop   # trailing comment
services:
  # a comment before users
  users:
    kind: flask
    port: 8001   # users' port
    tags: [http,auth]     # odd spacing kept

  catalog: {kind: fastapi, port: 8002}
  # a comment after the last service, before sagas

# sagas' own comment
sagas: {}
"""


def _entry(**changes) -> ServiceEntry:
    fields = dict(name="reviews", kind="fastapi", path="services/reviews", port=8100,
                  depends_on=("users",), tags=("http",))
    return ServiceEntry(**{**fields, **changes})


@pytest.mark.parametrize("source", ["demo", "commented"])
def test_every_byte_outside_the_new_block_is_unchanged(tmp_path, source):
    path = tmp_path / "shop.yaml"
    path.write_text((REPO / "shop.yaml").read_text() if source == "demo" else COMMENTED)
    before = path.read_text()

    edit = plan_edit(path, _entry())

    start = edit.after.index("  reviews:\n")
    block = "  reviews:\n    kind: fastapi\n    path: services/reviews\n    port: 8100\n" \
            "    depends_on: [users]\n    tags: [http]\n"
    assert edit.after[start:start + len(block)] == block
    # Removing exactly the block, and the blank line separating it when services are
    # separated by blank lines, gives back the old text byte for byte.
    gap = 1 if edit.after[start - 2:start] == "\n\n" else 0
    assert edit.after[:start - gap] + edit.after[start + len(block):] == before
    assert path.read_text() == before  # planning writes nothing


def test_the_block_goes_after_the_last_service_and_before_the_next_comments(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(COMMENTED)

    after = plan_edit(path, _entry()).after

    assert after.index("  catalog:") < after.index("  reviews:") < after.index(
        "  # a comment after the last service")


def test_force_replaces_only_the_existing_block(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(COMMENTED)

    after = plan_edit(path, _entry(name="users", path="services/users", port=8011)).after

    assert "# a comment before users\n  users:\n    kind: fastapi\n" in after
    assert "8001" not in after
    assert after.endswith("  catalog: {kind: fastapi, port: 8002}\n"
                          "  # a comment after the last service, before sagas\n\n"
                          "# sagas' own comment\nsagas: {}\n")


def test_ports_of_services_and_enabled_infra_are_taken():
    config = load_config(REPO / "shop.yaml", environ={})
    owners = port_owners(config)

    assert owners[8001] == "services.users.port"
    assert owners[9103] == "services.inventory.metrics_port"
    assert owners[8500] == "infra.consul.port"
    assert owners[config.infra.rabbitmq.port] == "infra.rabbitmq.port"


def test_choose_port_skips_taken_and_busy_ports():
    busy = {8101}

    assert choose_port(8100, 8199, {8100}, is_free=lambda p: p not in busy) == 8102


def test_choose_port_fails_when_the_range_is_full():
    with pytest.raises(UsageError, match="no free port in 8100-8101"):
        choose_port(8100, 8101, {8100, 8101}, is_free=lambda p: True)
