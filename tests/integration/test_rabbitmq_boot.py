"""The broker's module preload (shopctl.infra.rabbitmq_boot) with real Erlang: the
Erlang it runs loads RabbitMQ's applications, and shopctl's broker image runs it before
RabbitMQ boots, then lets a client in as any broker does."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import docker
import pytest

from shopctl.broker import answers
from shopctl.docker_client import connect
from shopctl.images.base import RABBITMQ_IMAGE, ensure_image
from shopctl.infra import rabbitmq_boot
from shopctl.infra.local import rabbitmq_binary
from shopctl.testing import free_ports

pytestmark = pytest.mark.rabbitmq

PRELOADED = re.compile(r"\{ok,(\d+)\}")


def rabbit_libs() -> Path:
    """Where Debian's rabbitmq-server keeps its applications (the plugins folder)."""
    server = Path(rabbitmq_binary()).resolve()  # .../rabbitmq_server-VERSION/sbin/...
    plugins = server.parent.parent / "plugins"
    assert plugins.is_dir(), f"no plugins folder beside {server}"
    return plugins


def test_the_preload_loads_every_module_of_the_brokers_applications(tmp_path):
    preload = tmp_path / "preload.erl"
    preload.write_text(rabbitmq_boot.PRELOAD)
    probe = ("file:script(\"" + str(preload) + "\"), "
             "Loaded = [M || {M, _} <- code:all_loaded()], "
             "io:format(\"~p ~p~n\", [persistent_term:get(shopctl_preload, none), "
             "[M || M <- [rabbit_misc, rabbit_amqqueue, ra_server, memsup, ranch, ssl], "
             "not lists:member(M, Loaded)]]), halt().")
    env = {**os.environ, "ERL_LIBS": str(rabbit_libs())}
    env.pop("ERL_AFLAGS", None)
    out = subprocess.run(["erl", "-noshell", "-eval", probe], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status, missing = out.stdout.strip().rsplit(" ", 1)
    count = PRELOADED.fullmatch(status)
    assert count, out.stdout  # {ok, N}: every module found and loaded
    assert int(count.group(1)) > 500  # RabbitMQ's and the OTP applications it needs
    assert missing == "[]", out.stdout


def test_a_bad_preload_path_leaves_the_flags_as_they_were():
    assert rabbitmq_boot.eval_flag("/srv/it's/preload.erl") is None
    assert rabbitmq_boot.with_preload("+S 2", '/a"b/preload.erl') == "+S 2"
    flags = rabbitmq_boot.with_preload("+S 2", "/data/preload.erl")
    assert flags.startswith("-eval 'spawn(fun() -> file:script(\"/data/preload.erl\") end)'")
    assert flags.endswith(" +S 2")  # what the caller had stays, after ours


def wait_answers(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not answers("127.0.0.1", port):
        assert time.monotonic() < deadline, f"the broker did not answer AMQP on :{port}"
        time.sleep(0.1)


def test_shopctls_broker_image_runs_the_preload_as_its_own_command():
    """The image's own command (what compose or `docker run` use, not only shopctl)."""
    client = connect()
    ensure_image(client, RABBITMQ_IMAGE)
    (port,) = free_ports(1)
    name = f"shopctl-test-rabbit-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(RABBITMQ_IMAGE, name=name, detach=True,
                                      ports={"5672/tcp": ("127.0.0.1", port)},
                                      labels={"io.shopctl.test": "rabbitmq-boot"})
    try:
        wait_answers(port)
        code, out = container.exec_run(
            ["rabbitmqctl", "eval", "persistent_term:get(shopctl_preload, none)."])
        assert code == 0, out
        count = PRELOADED.fullmatch(out.decode().strip())
        assert count and int(count.group(1)) > 500, out
        # The same broker otherwise: guest (the image's default user) logs in from here.
        from shopctl.broker import logs_in
        assert logs_in(f"amqp://guest:guest@127.0.0.1:{port}/")
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
