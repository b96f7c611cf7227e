"""What shopctl's PostgreSQL server is, whichever runtime runs it: a start script and
an access policy, shipped with the unit (as files) rather than baked into an image, so
any image with PostgreSQL's binaries and a POSIX shell runs it (the official
`postgres` image too: its user is uid 999, as in shopctl's).

The script, run as the unprivileged user that owns the data folder:
- an empty data folder gets `initdb` (superuser `shopctl.databases.SUPERUSER`, its
  password from a file, SCRAM for every connection);
- on every start, the superuser's password is set again from that file in single-user
  mode: the file shopctl keeps is what holds, even for a data folder an earlier
  `.shopctl` made;
- then the server runs, TCP only; a SIGTERM to the script is a fast shutdown.
"""

from __future__ import annotations

from shopctl.databases import SUPERUSER

POSTGRES_UID = POSTGRES_GID = 999  # shopctl/postgres:15's `postgres`, as the official image's
DATA_DIR = "/var/lib/postgresql/data"  # in the container (a volume)

START_SCRIPT = """\
# shopctl's PostgreSQL (shopctl/infra/postgres.py). Environment: PGDATA, PG_BIN (may be
# empty: on PATH), PG_SUPERUSER, PG_PASSWORD_FILE, PG_HBA, PG_PORT, PG_LISTEN.
set -eu
umask 077
bin=${PG_BIN:+$PG_BIN/}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  "${bin}initdb" -D "$PGDATA" -U "$PG_SUPERUSER" --pwfile="$PG_PASSWORD_FILE" \\
    -A scram-sha-256 -E UTF8 --locale=C >/dev/null
fi
{ printf 'ALTER ROLE "%s" WITH PASSWORD '"'" "$PG_SUPERUSER"; head -n 1 "$PG_PASSWORD_FILE" \\
  | tr -d '\\n'; printf "';\\n"; } | "${bin}postgres" --single -D "$PGDATA" postgres >/dev/null
"${bin}postgres" -D "$PGDATA" -p "$PG_PORT" -c listen_addresses="$PG_LISTEN" \\
  -c hba_file="$PG_HBA" -c unix_socket_directories='' &
pid=$!
# A stop (SIGTERM) is a fast shutdown: PostgreSQL's own answer to SIGTERM waits for
# every client to leave, and the services keep their pooled connections open.
trap 'kill -INT "$pid" 2>/dev/null || true' TERM INT
status=0
while kill -0 "$pid" 2>/dev/null; do wait "$pid" && status=0 || status=$?; done
exit "$status"
"""

# The local runtime as root: the unit's folder outside .shopctl (root's alone) is made
# the server user's, its files copied there for that user alone, then the start script
# runs as that user (setpriv execs: the supervisor's signals reach the script itself).
AS_USER_SCRIPT = """\
set -eu
umask 022
install -d -m 755 "$(dirname "$PG_HOME")"
install -d -o "$PG_USER" -g "$PG_USER" -m 700 "$PG_HOME" "$PG_HOME/conf"
install -o "$PG_USER" -g "$PG_USER" -m 400 "$PG_SOURCE/start.sh" "$PG_SOURCE/pg_hba.conf" \\
  "$PG_SECRET" "$PG_HOME/conf/"
exec setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- sh "$PG_HOME/conf/start.sh"
"""

# A password (SCRAM) for every role from anywhere it is reachable; which database a
# role may enter is the database's CONNECT privilege (shopctl.databases.statements).
HBA = """\
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
"""


def env(data: str, password_file: str, hba: str, port: int, listen: str,
        binaries: str = "") -> dict[str, str]:
    """The script's environment: paths and ports, never the password itself."""
    return {"PGDATA": data, "PG_BIN": binaries, "PG_SUPERUSER": SUPERUSER,
            "PG_PASSWORD_FILE": password_file, "PG_HBA": hba, "PG_PORT": str(port),
            "PG_LISTEN": listen}
