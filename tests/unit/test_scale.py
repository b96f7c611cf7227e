"""`shopctl scale`: replicas set in shop.yaml with every other byte kept, and the
mistakes a user makes answered with one clear message."""

from __future__ import annotations

import pytest

from shopctl.config import load_config
from shopctl.errors import UsageError
from shopctl.scale import parse_assignments, set_replicas, write_replicas

SHOP = """\
# my shop
project: toys   # the name

services:
  # the storefront
  web:
    kind: flask
    port: 8100   # published
    depends_on: [stock]
    health:
      interval: 2s
    # web's own comment

  stock:
    kind: grpc
    port: 50100
    replicas: 2  # two of them
sagas: {}
"""


def project(tmp_path, text=SHOP):
    for name in ("web", "stock"):
        (tmp_path / "services" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "services" / name / "main.py").write_text("")
    (tmp_path / "protos").mkdir(exist_ok=True)
    path = tmp_path / "shop.yaml"
    path.write_text(text)
    return path


def test_a_written_value_is_replaced_in_place_with_its_comment():
    after = set_replicas(SHOP, "stock", 5)
    assert after == SHOP.replace("replicas: 2  # two of them", "replicas: 5  # two of them")


def test_a_missing_value_is_added_at_the_end_of_the_service_block():
    after = set_replicas(SHOP, "web", 3)
    lines = after.splitlines()
    at = lines.index("    replicas: 3")
    assert lines[at - 1] == "      interval: 2s"  # after the block's last setting
    assert lines[at + 1] == "    # web's own comment"  # its comments stay where they were
    assert after.replace("    replicas: 3\n", "") == SHOP


def test_the_last_service_before_another_section(tmp_path):
    text = SHOP.replace("    replicas: 2  # two of them\n", "")
    after = set_replicas(text, "stock", 4)
    assert after.endswith("    port: 50100\n    replicas: 4\nsagas: {}\n")


def test_write_replicas_validates_and_keeps_the_file_mode(tmp_path):
    path = project(tmp_path)
    path.chmod(0o640)
    config = load_config(path)
    new = write_replicas(config, {"web": 2, "stock": 2})
    assert (new.services["web"].replicas, new.services["stock"].replicas) == (2, 2)
    assert path.read_text() == set_replicas(SHOP, "web", 2)
    assert path.stat().st_mode & 0o777 == 0o640
    unchanged = path.read_text()
    write_replicas(new, {"web": 2})  # nothing to change: nothing written
    assert path.read_text() == unchanged


def test_an_interpolated_value_is_left_to_the_user_with_its_line():
    text = SHOP.replace("replicas: 2  # two of them", "replicas: ${STOCK_N:-2}")
    with pytest.raises(UsageError, match=r"shop.yaml:17: services.stock.replicas is written "
                                         r"as '\$\{STOCK_N:-2\}'") as err:
        set_replicas(text, "stock", 3)
    assert "replicas: 3" in err.value.hint


@pytest.mark.parametrize("pairs, message", [
    (["web"], "'web' is not SERVICE=N"),
    (["web=0"], "replicas must be a whole number of at least 1"),
    (["web=two"], "replicas must be a whole number of at least 1, not 'two'"),
    (["web=-1"], "replicas must be a whole number"),
    (["web=2", "web=3"], "web is given two counts"),
    (["wbe=2"], "no service named 'wbe'"),
    ([], "name at least one SERVICE=N"),
])
def test_bad_assignments_are_usage_errors(tmp_path, pairs, message):
    config = load_config(project(tmp_path))
    with pytest.raises(UsageError, match=message):
        parse_assignments(config, pairs)


def test_good_assignments(tmp_path):
    config = load_config(project(tmp_path))
    assert parse_assignments(config, ["web=3", "stock=1", "web=3"]) == {"web": 3, "stock": 1}
