"""The project's RabbitMQ: its user (not guest), and whether a broker is ready.

Why: guest is an administrator that may log in from the host, so anyone with a shell
could call the services' RPC methods or drain their queues. So each project's broker
gets a user `shopctl-<project>` with a generated password (`.shopctl/secrets/
rabbitmq_password`, 0600), permissions on its vhost `/`, and no guest:

- `definitions` is what the broker imports (`rabbitmqctl import_definitions`): the
  user with a salted hash of its password (never the password), the vhost and the
  permissions. Importing is an upsert, so a broker whose data volume predates this (or
  a restarted one) gets the same user again.
- guest is deleted from a broker shopctl runs for the project. A broker shopctl merely
  reuses (the local runtime's "a broker already answers on the port") keeps its guest:
  it is not the project's to change; the project's user is added to it.
- Services get the URI with the project's credentials in SHOP_AMQP_URI; shopctl never
  prints it (`safe_uri` masks the password wherever a URI may be shown).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shopctl.config import ShopConfig
from shopctl.state import ProjectState

PASSWORD_SECRET = "rabbitmq_password"
GUEST = "guest"
# The AMQP 0-9-1 protocol header; a broker answers with Connection.Start, a method frame
# (type 1) on channel 0.
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_CONNECTION_START = b"\x01\x00\x00"


def user(config: ShopConfig) -> str:
    return f"shopctl-{config.project}"


def password(config: ShopConfig) -> str:
    return ProjectState(config.root).secret(PASSWORD_SECRET, lambda: secrets.token_urlsafe(24))


def uri(config: ShopConfig, host: str, port: int) -> str:
    """The AMQP URI of the project's broker at host:port, as the project's user."""
    return (f"amqp://{quote(user(config), safe='')}:{quote(password(config), safe='')}"
            f"@{host}:{port}/")


def safe_uri(text: str) -> str:
    """`text` with the password of an amqp:// URI replaced by ***."""
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def password_hash(secret: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)),
    with a 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + secret.encode()).digest()).decode()


def definitions(config: ShopConfig) -> str:
    """The project's user, its vhost and permissions, as RabbitMQ imports them. The same
    password gives the same text: its salt comes from the password (an HMAC, so nobody
    without the password can tell it), so a broker container created with this file
    is not replaced on every `up` for a new random salt."""
    name = user(config)
    secret = password(config)
    salt = hmac.new(secret.encode(), b"rabbitmq password salt", hashlib.sha256).digest()[:4]
    return json.dumps({
        "users": [{"name": name, "password_hash": password_hash(secret, salt),
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": ""}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": name, "vhost": "/", "configure": ".*", "write": ".*",
                         "read": ".*"}],
    })


def guest_uri(host: str, port: int) -> str:
    return f"amqp://{GUEST}:{GUEST}@{host}:{port}/"


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whatever listens on host:port speaks AMQP 0-9-1 (not merely: something listens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(AMQP_HEADER)
            return sock.recv(len(AMQP_CONNECTION_START)) == AMQP_CONNECTION_START
    except OSError:
        return False


def logs_in(amqp_uri: str, timeout: float = 2.0) -> bool:
    """A real AMQP login with the URI's credentials, on its vhost ("/" when the URI
    names none): an open port alone is not a ready broker, and a broker that refuses the
    user is not ready for the services. One attempt; any failure is False.

    The AMQP 0-9-1 handshake is spoken here over a plain socket (Start, Start-Ok with
    PLAIN, Tune, Tune-Ok, Open; Open-Ok means in), then the connection is closed: every
    `up` checks this, and an AMQP library would cost it ~40 ms of imports."""
    parts = urlsplit(amqp_uri)
    vhost = (unquote(parts.path[1:]) or "/").encode()
    user, secret = (unquote(parts.username or "").encode(),
                    unquote(parts.password or "").encode())
    try:
        with socket.create_connection((parts.hostname, parts.port or 5672),
                                      timeout=timeout) as sock:
            sock.sendall(AMQP_HEADER)
            if _read_method(sock)[0] != (10, 10):  # Connection.Start
                return False
            plain = b"\0" + user + b"\0" + secret
            sock.sendall(_method_frame((10, 11), _CLIENT_PROPERTIES + _shortstr(b"PLAIN")
                                       + struct.pack(">I", len(plain)) + plain
                                       + _shortstr(b"en_US")))  # Start-Ok
            method, args = _read_method(sock)  # a refused login: Close, or the socket closes
            if method != (10, 30):  # Connection.Tune
                return False
            channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
            # Tune-Ok and Open in one write: two small ones would wait out a delayed ACK.
            sock.sendall(_method_frame((10, 31), struct.pack(">HIH", channel_max, frame_max, 0))
                         + _method_frame((10, 40), _shortstr(vhost) + _shortstr(b"") + b"\0"))
            if _read_method(sock)[0] != (10, 41):  # Open-Ok; Close: no access to the vhost
                return False
            sock.sendall(_method_frame((10, 50), struct.pack(">H", 200) + _shortstr(b"")
                                       + struct.pack(">HH", 0, 0)))  # Close
            try:
                _read_method(sock)  # Close-Ok, so the broker logs no connection dropped
            except (OSError, struct.error):
                pass
            return True
    except (OSError, struct.error):
        return False


def _shortstr(value: bytes) -> bytes:
    return struct.pack(">B", len(value)) + value


def _table(fields: bytes) -> bytes:
    return struct.pack(">I", len(fields)) + fields


# {"capabilities": {"authentication_failure_close": true}}: a refused login is then
# answered at once with Connection.Close, where the broker otherwise lets the client
# wait out its timeout.
_CLIENT_PROPERTIES = _table(_shortstr(b"capabilities") + b"F" + _table(
    _shortstr(b"authentication_failure_close") + b"t\x01"))


def _method_frame(method: tuple[int, int], args: bytes) -> bytes:
    payload = struct.pack(">HH", *method) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def _read_method(sock: socket.socket) -> tuple[tuple[int, int], bytes]:
    """((class, method), arguments) of the next frame, a method frame on channel 0."""
    kind, _channel, size = struct.unpack(">BHI", _read_exactly(sock, 7))
    payload = _read_exactly(sock, size + 1)[:-1]  # the frame-end octet dropped
    if kind != 1 or len(payload) < 4:
        raise ConnectionError(f"AMQP: frame type {kind} where a method was due")
    return struct.unpack(">HH", payload[:4]), payload[4:]


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("AMQP: the broker closed the connection")
        data += chunk
    return data


def needs_provisioning(config: ShopConfig, host: str, port: int, own_broker: bool) -> bool:
    """Whether the broker at host:port lacks the project's user, or (a broker of the
    project's own) still lets guest in."""
    if not logs_in(uri(config, host, port)):
        return True
    return own_broker and logs_in(guest_uri(host, port))
