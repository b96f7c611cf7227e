"""The service credentials shopctl signs (shopctl.service_auth) pass the services' own
check (shopkit.service_auth), and `shopctl token` prints one for a call by hand."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shopkit import service_auth as kit

from shopctl import service_auth
from shopctl.saga import contract
from shopctl.state import ProjectState

KEY = "a-test-service-key-long-enough-for-hs256-keys"


def test_what_shopctl_signs_is_what_the_services_check():
    token = service_auth.Credentials(KEY).token("shipping", "book_slot")

    claims = kit.verify(token, KEY, "shipping", "book_slot")

    assert (claims["type"], claims["iss"], claims["scope"]) == ("service", "shopctl",
                                                                ["book_slot"])
    assert claims["exp"] - claims["iat"] == service_auth.DEFAULT_TTL
    with pytest.raises(kit.PermissionDenied):
        kit.verify(token, KEY, "other-service", "book_slot")
    with pytest.raises(kit.PermissionDenied):
        kit.verify(token, KEY, "shipping", kit.ADMIN)
    with pytest.raises(kit.Unauthenticated):
        kit.verify(token, KEY + "-rotated", "shipping", "book_slot")


def test_an_expired_one_from_shopctl_is_refused_too():
    token = service_auth.mint(KEY, "shipping", ["book_slot"], ttl=10, now=time.time() - 60)

    with pytest.raises(kit.Unauthenticated, match="expired"):
        kit.verify(token, KEY, "shipping", "book_slot")


def test_both_sides_name_the_transport_alike():
    assert (service_auth.HEADER, service_auth.METADATA_KEY, service_auth.CONTEXT_KEY,
            service_auth.MAX_TTL, service_auth.ADMIN) == (
        kit.HEADER, kit.METADATA_KEY, kit.CONTEXT_KEY, kit.MAX_TTL, kit.ADMIN)


def test_a_refused_credential_is_a_refusal_of_every_kind_not_a_retry():
    http = contract.resolve("shipping", "fastapi", "book_slot", None)
    rpc = contract.resolve("shipping", "nameko", "book_slot", None)
    grpc = contract.resolve("shipping", "grpc", "book_slot", None)

    assert contract.outcome_http(http, 401) == contract.outcome_http(http, 403) == "refused"
    assert contract.refused_nameko(rpc, "Unauthenticated")
    assert contract.refused_nameko(rpc, "PermissionDenied")
    assert contract.refused_grpc(grpc, "UNAUTHENTICATED")
    assert contract.refused_grpc(grpc, "PERMISSION_DENIED")


def test_credentials_never_show_their_key():
    assert KEY not in repr(service_auth.Credentials(KEY))


SHOP = """\
project: tokens
infra: {consul: {enabled: false}, rabbitmq: {enabled: false}}
services:
  shipping: {kind: fastapi, path: services/shipping, port: 8010}
"""


def shopctl(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SHOPCTL_FILE"}
    return subprocess.run([sys.executable, "-m", "shopctl", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "shop.yaml").write_text(SHOP)
    (tmp_path / "services" / "shipping").mkdir(parents=True)
    return tmp_path


def test_token_prints_a_credential_signed_with_the_project_key(project):
    done = shopctl(project, "token", "shipping", "--scope", "admin", "-s", "book_slot",
                   "--ttl", "300")
    header = shopctl(project, "token", "shipping", "-s", "admin", "--header")

    assert done.returncode == 0, done.stderr
    key = ProjectState(project).service_key()
    claims = kit.verify(done.stdout.strip(), key, "shipping", "book_slot")
    assert claims["scope"] == ["admin", "book_slot"]
    assert claims["exp"] - claims["iat"] == 300
    name, _, value = header.stdout.strip().partition(": ")
    assert name == kit.HEADER and kit.verify(value, key, "shipping", "admin")
    assert stat.S_IMODE((project / ".shopctl" / "secrets" / "service_key").stat().st_mode) \
        == 0o600


@pytest.mark.parametrize(("args", "message"), [
    (["nowhere", "-s", "admin"], "no service named 'nowhere'"),
    (["shipping", "-s", "admin", "--ttl", "7200"], "--ttl must be 1 to 3600"),
    (["shipping", "-s", "admin", "--ttl", "0"], "--ttl must be 1 to 3600"),
])
def test_token_refuses_what_no_service_would_accept(project, args, message):
    done = shopctl(project, "token", *args)

    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
