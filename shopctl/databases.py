"""Databases of the services' own: the contract behind `database: postgresql`.

Why: the instances of a replicated service share nothing but what their runtime shares.
On docker and local they share the service's data volume (folder), so a SQLite file
there is state they all see; on a swarm each task has its node's own /data, so state
every instance must see (an idempotency record, a counter) belongs in a database.

A service declares `database: postgresql` in shop.yaml: "I can keep my state in a
PostgreSQL database of my own". When the project's PostgreSQL runs (see `enabled`),
shopctl gives such a service, on every `up`:
- a role and a database named after the service (`role_name`); the role owns the
  database, and no other role but shopctl's superuser may connect to it;
- the role's password, generated once into .shopctl/secrets/postgres/<service>;
- the URL postgresql://ROLE:PASSWORD@HOST:PORT/DATABASE as the secret file
  `database_url` in its SHOP_SECRETS_DIR, HOST:PORT as the service reaches the server
  (`reach`): the infra unit's name on the project's network, 127.0.0.1 locally.
A service that declares nothing gets nothing, and with PostgreSQL off a declaring one
gets no `database_url` either: it keeps its state in its data folder, as before.

`provision` makes the roles and databases (idempotent: run by every `up`); the rest is
pure. The server itself is an infra unit (shopctl.infra.docker / .local.postgres).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shopctl.errors import OperationFailed
from shopctl.infra_names import POSTGRES
from shopctl.state import ProjectState

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

SUPERUSER = "shopctl_admin"  # a service's role never has a "_" (service names cannot)
SECRET_FILE = "database_url"  # the file in the service's SHOP_SECRETS_DIR
INNER_PORT = 5432  # the server's port inside its container (docker, swarm)
CONNECT_TIMEOUT = 5  # seconds


def declaring(config: ShopConfig) -> list[str]:
    """The services that declared a database, in shop.yaml's order."""
    return [name for name, svc in config.services.items() if svc.database]


def enabled(config: ShopConfig, runtime: str) -> bool:
    """Whether the project's PostgreSQL runs on `runtime`: `infra.postgres.enabled` when
    true or false; `auto` is on where instances cannot share a data folder (the swarm)
    and some service declared a database, and off on docker and local (nothing changes
    there for a shop that does not ask)."""
    setting = config.infra.postgres.enabled
    if setting == "auto":
        return runtime == "swarm" and bool(declaring(config))
    return bool(setting)


# Names a role or database may not take: PostgreSQL's own roles and databases, and the
# words its GRANT/REVOKE read as special roles.
_TAKEN = frozenset({"public", "none", "user", "current_user", "session_user",
                    "current_role", "postgres", "template0", "template1"})


def role_name(service: str) -> str:
    """The role and database of a service: its name with "_" for "-" (an identifier
    that needs no quoting). PostgreSQL keeps names starting with pg_ and a few others
    (`_TAKEN`) to itself: those get an `s_` in front."""
    name = service.replace("-", "_")
    return f"s_{name}" if name.startswith("pg_") or name in _TAKEN else name


def superuser_password(config: ShopConfig) -> str:
    return ProjectState(config.root).database_password("_superuser")


def password(config: ShopConfig, service: str) -> str:
    return ProjectState(config.root).database_password(service)


def reach(config: ShopConfig, runtime: str) -> tuple[str, int]:
    """(host, port) where the services reach the server: locally the host's loopback
    and infra.postgres.port; in a container, the unit's name on the project's network."""
    if runtime == "local":
        return "127.0.0.1", config.infra.postgres.port
    return POSTGRES, INNER_PORT


def url(role: str, secret: str, host: str, port: int, database: str) -> str:
    return f"postgresql://{quote(role, safe='')}:{quote(secret, safe='')}@{host}:{port}/" \
           f"{quote(database, safe='')}"


def service_url(config: ShopConfig, service: str, runtime: str) -> str | None:
    """What the service finds in its `database_url` file, or None: it declared no
    database, or the project's PostgreSQL does not run on `runtime`."""
    if not config.services[service].database or not enabled(config, runtime):
        return None
    role = role_name(service)
    host, port = reach(config, runtime)
    return url(role, password(config, service), host, port, role)


def statements(role: str, secret: str, role_exists: bool, database_exists: bool) -> list:
    """What makes `role` a login role with `secret` as its password and the owner of a
    database of its name that only it (and superusers) may connect to, given what
    exists already. Identifiers and the password are quoted by psycopg, never pasted."""
    from psycopg import sql

    name = sql.Identifier(role)
    verb = "ALTER" if role_exists else "CREATE"
    out = [sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                   "PASSWORD {}").format(name, sql.Literal(secret))]
    if not database_exists:
        out.append(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, name))
    # PUBLIC may connect to a new database by default: another service's role could
    # then read what this one left readable.
    out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
    return out


def provision(config: ShopConfig, host: str, port: int,
              connect: Callable[..., Any] | None = None) -> list[str]:
    """Make each declaring service's role and database on the server at host:port
    (where shopctl reaches it), and set each role's password to the one on file.
    Returns the roles. Raises OperationFailed (no password in it) when the server
    refuses."""
    services = declaring(config)
    if not services:
        return []
    import psycopg

    connect = connect or psycopg.connect
    roles = []
    try:
        with connect(host=host, port=port, user=SUPERUSER, dbname="postgres",
                     password=superuser_password(config), connect_timeout=CONNECT_TIMEOUT,
                     autocommit=True) as conn:
            for service in services:
                role = role_name(service)
                role_exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                           (role,)).fetchone() is not None
                database_exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (role,)).fetchone() is not None
                for statement in statements(role, password(config, service), role_exists,
                                            database_exists):
                    conn.execute(statement)
                roles.append(role)
    except psycopg.Error as exc:
        # psycopg's messages name the server and the SQL state, never the statement.
        raise OperationFailed(
            f"shopctl could not provision the services' databases on PostgreSQL at "
            f"{host}:{port}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
            hint=f"`shopctl logs {POSTGRES}` shows the server's side") from None
    return roles
