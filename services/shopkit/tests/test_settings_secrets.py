"""Secrets reach a service as files, and never show in its repr (logs print reprs)."""

from __future__ import annotations

from shopkit.settings import ServiceEnv, consul_token, secret


def test_secrets_come_from_the_secrets_folder_before_the_environment(tmp_path):
    (tmp_path / "jwt_secret").write_text("from-file\n")
    env = {"SHOP_SECRETS_DIR": str(tmp_path), "SHOP_JWT_SECRET": "from-env",
           "CONSUL_HTTP_TOKEN": "env-token"}
    assert secret("jwt_secret", env, fallback="SHOP_JWT_SECRET") == "from-file"
    assert consul_token(env) == "env-token"  # no file: the fallback
    (tmp_path / "consul_token").write_text("file-token")
    assert consul_token(env) == "file-token"
    assert secret("absent", env) is None


def test_the_repr_of_a_service_env_holds_no_secret(tmp_path):
    (tmp_path / "jwt_secret").write_text("s3cret-jwt")
    (tmp_path / "service_key").write_text("s3cret-key")
    senv = ServiceEnv.from_environ("menu", 8000, {
        "SHOP_SECRETS_DIR": str(tmp_path),
        "SHOP_AMQP_URI": "amqp://shopctl-p:s3cret-pw@127.0.0.1:5672/"})
    assert senv.jwt_secret == "s3cret-jwt" and "s3cret-pw" in senv.amqp_uri
    assert "s3cret" not in repr(senv)
