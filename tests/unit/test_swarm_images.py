"""The registry mode's pure parts (shopctl.swarm.images): image references, where an
image goes in a registry, digests, what a refusal means; shop.yaml's
infra.swarm.registry; and a registry in the services' hash."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shopctl.config import ConfigInvalid, load_config
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.swarm.images import (
    PULL_REFUSALS,
    in_registry,
    parse_reference,
    pinned,
    pull_failure,
    push_failure,
    recorded_digest,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.mark.parametrize(("text", "parts"), [
    ("shopctl/python:3.11", ("", "shopctl/python", "3.11", "")),
    ("shopctl-p/users:5540140682a6", ("", "shopctl-p/users", "5540140682a6", "")),
    ("python", ("", "python", "", "")),
    ("127.0.0.1:5000/shop/users:ab12@" + DIGEST,
     ("127.0.0.1:5000", "shop/users", "ab12", DIGEST)),
    ("localhost/users", ("localhost", "users", "", "")),
    ("registry.example.com/team/users@" + DIGEST,
     ("registry.example.com", "team/users", "", DIGEST)),
    ("10.0.0.9:5000/consul", ("10.0.0.9:5000", "consul", "", "")),
])
def test_references_split_as_the_engine_reads_them(text, parts):
    ref = parse_reference(text)
    assert (ref.registry, ref.path, ref.tag, ref.digest) == parts
    assert str(ref) == text


def test_a_bad_digest_or_an_empty_name_is_not_a_reference():
    with pytest.raises(ValueError):
        parse_reference("users@sha256:nothex")
    with pytest.raises(ValueError):
        parse_reference(":tag")


def test_an_image_goes_under_the_registry_and_prefix_keeping_its_path_and_tag():
    assert str(in_registry("shopctl-p/users:5540", "127.0.0.1:5000")) == \
        "127.0.0.1:5000/shopctl-p/users:5540"
    assert str(in_registry("shopctl/consul:1.8", "reg.example.com", "team/shop")) == \
        "reg.example.com/team/shop/shopctl/consul:1.8"
    # an image already named in another registry moves, by its path
    assert str(in_registry("10.0.0.9:5000/base/py", "127.0.0.1:5000", "/x/")) == \
        "127.0.0.1:5000/x/base/py:latest"


def test_a_pinned_reference_keeps_the_tag_for_people_and_runs_the_digest():
    ref = in_registry("shopctl-p/users:5540", "10.1.255.254:5000")
    assert pinned(ref, DIGEST) == f"10.1.255.254:5000/shopctl-p/users:5540@{DIGEST}"
    with pytest.raises(ValueError):
        pinned(ref, "latest")


def test_the_digest_recorded_is_the_one_of_that_repository():
    digests = [f"127.0.0.1:5000/shop/users@{OTHER}", f"127.0.0.1:5000/p/users@{DIGEST}"]
    assert recorded_digest(digests, "127.0.0.1:5000/p/users") == DIGEST
    assert recorded_digest(digests, "127.0.0.1:5000/q/users") is None
    assert recorded_digest([], "x") is None


@pytest.mark.parametrize(("text", "kind", "words"), [
    ('Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused',
     RuntimeUnavailable, ("does not answer", "lab up --registry")),
    ('Get "https://10.0.0.9:5000/v2/": http: server gave HTTP response to HTTPS client',
     OperationFailed, ("plain HTTP", "insecure-registries")),
    ("x509: certificate signed by unknown authority", OperationFailed, ("plain HTTP",)),
    ("unauthorized: authentication required", OperationFailed, ("docker login",)),
    ("denied: requested access to the resource is denied", OperationFailed, ("docker login",)),
    ("blob upload unknown", OperationFailed, ("said: blob upload unknown",)),
])
def test_a_refused_push_says_why_and_what_to_do(text, kind, words):
    error = push_failure("reg:5000", "pushing reg:5000/a:1", text)
    assert type(error) is kind
    said = str(error) + (error.hint or "")
    assert all(word in said for word in words), said


def _task(image: str, state: str, err: str, stamp: str = "2026-11-30T15:00:10Z") -> dict:
    return {"Spec": {"ContainerSpec": {"Image": image}},
            "Status": {"State": state, "Err": err, "Timestamp": stamp}}


def test_nodes_that_cannot_pull_fail_up_once_enough_tasks_were_rejected_since_it_began():
    image = f"10.1.255.254:5000/p/users:1@{DIGEST}"
    since = 1_796_050_800.0  # 2026-11-30T15:00:00Z
    refused = _task(image, "rejected", f"No such image: {image}")
    assert pull_failure([refused] * (PULL_REFUSALS - 1), image, since) is None
    error = pull_failure([refused] * PULL_REFUSALS, image, since)
    assert error is not None and "cannot get" in str(error)
    assert "insecure-registries" in error.hint and "10.1.255.254:5000" in error.hint
    # older rejections (before this up), other images, other errors do not count
    old = _task(image, "rejected", "No such image", "2026-11-30T14:00:00Z")
    assert pull_failure([old] * 5, image, since) is None
    assert pull_failure([_task("x", "rejected", "No such image")] * 5, image, since) is None
    assert pull_failure([_task(image, "failed", "exit 1")] * 5, image, since) is None


# -- shop.yaml -------------------------------------------------------------------------------

def _load(tmp_path: Path, registry: str):
    (tmp_path / "shop.yaml").write_text(textwrap.dedent(f"""\
        project: sw
        infra:
          swarm:
            registry: {registry}
        """))
    return load_config(tmp_path / "shop.yaml", {})


def test_a_registry_is_one_name_or_a_push_and_a_pull_address(tmp_path):
    one = _load(tmp_path, "'127.0.0.1:5000/team/shop'").infra.swarm.registry
    assert (one.push, one.pull_host, one.prefix) == ("127.0.0.1:5000", "127.0.0.1:5000",
                                                     "team/shop")
    two = _load(tmp_path, "{push: '127.0.0.1:5000', pull: '10.1.255.254:5000'}")
    assert (two.infra.swarm.registry.push, two.infra.swarm.registry.pull_host) == (
        "127.0.0.1:5000", "10.1.255.254:5000")
    assert _load(tmp_path, "registry.example.com").infra.swarm.registry.push == \
        "registry.example.com"
    assert _load(tmp_path, "null").infra.swarm.registry is None


@pytest.mark.parametrize(("value", "expected"), [
    ("myreg", ["shop.yaml:4:5: infra.swarm.registry.push: expected a registry's HOST:PORT "
               "like 127.0.0.1:5000 or registry.example.com, found 'myreg'",
               "  hint: a name without a dot or a port is taken for a Docker Hub account: "
               "add the port ('myreg:5000')"]),
    ("'http://reg.example.com'",
     ["shop.yaml:4:5: infra.swarm.registry.push: expected a registry's HOST:PORT like "
      "127.0.0.1:5000 or registry.example.com, found 'http://reg.example.com'",
      "  hint: write it without the scheme: 'reg.example.com'"]),
    ("{push: '127.0.0.1:5000', pull: 'a b'}",
     ["shop.yaml:4:40: infra.swarm.registry.pull: expected a registry's HOST:PORT like "
      "127.0.0.1:5000 or registry.example.com, found 'a b'"]),
    ("{push: '127.0.0.1:5000', pul: x}",
     ["shop.yaml:4:40: infra.swarm.registry.pul: unknown key 'pul'",
      "  hint: did you mean 'pull'?"]),
    ("'reg.example.com:70000'",
     ["shop.yaml:4:5: infra.swarm.registry.push: expected a registry's HOST:PORT like "
      "127.0.0.1:5000 or registry.example.com, found 'reg.example.com:70000'"]),
    ("'reg.example.com/Team'",
     ["shop.yaml:4:5: infra.swarm.registry.prefix: expected a repository path of lowercase "
      "letters, digits, '.', '_', '-' and '/' like 'team/shop', found 'Team'"]),
    ("5", ["shop.yaml:4:5: infra.swarm.registry: expected HOST:PORT[/PREFIX] or a mapping "
           "of push, pull and prefix, found 5"]),
])
def test_a_bad_registry_is_reported_at_its_line(tmp_path, monkeypatch, value, expected):
    monkeypatch.chdir(tmp_path)  # the file is named as given: shop.yaml
    with pytest.raises(ConfigInvalid) as info:
        _load(Path("."), value)
    assert str(info.value).splitlines()[1:] == expected
