"""Password storage: salted scrypt hashes, never the clear password."""

from __future__ import annotations

import logging
import sqlite3

from app import create_app
from passwords import PasswordHasher, ScryptParams

FAST = ScryptParams(n=2**10, r=8, p=1)
STRONGER = ScryptParams(n=2**11, r=8, p=1)


def test_hash_verifies_only_the_same_password():
    hasher = PasswordHasher(FAST)
    stored = hasher.hash("hunter2hunter2")

    assert hasher.verify("hunter2hunter2", stored)
    assert not hasher.verify("hunter2hunter3", stored)


def test_each_hash_has_its_own_salt_and_records_its_parameters():
    hasher = PasswordHasher(FAST)

    first, second = hasher.hash("same password"), hasher.hash("same password")

    assert first != second
    assert first.startswith("scrypt$1024$8$1$")


def test_unknown_user_never_verifies():
    assert not PasswordHasher(FAST).verify("anything at all", None)


def test_hashes_made_with_old_parameters_still_verify_and_need_rehash():
    old = PasswordHasher(FAST).hash("long enough")
    current = PasswordHasher(STRONGER)

    assert current.verify("long enough", old)
    assert current.needs_rehash(old)
    assert not current.needs_rehash(current.hash("long enough"))


def test_login_upgrades_a_hash_made_with_weaker_parameters(settings):
    weak = create_app(settings, hasher=PasswordHasher(FAST)).test_client()
    weak.post("/register", json={"email": "old@example.com", "password": "long enough"})

    strong = create_app(settings, hasher=PasswordHasher(STRONGER)).test_client()
    resp = strong.post("/login", json={"email": "old@example.com", "password": "long enough"})

    assert resp.status_code == 200
    with sqlite3.connect(settings.data_dir / "users.db") as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("scrypt$2048$8$1$")


def test_password_is_neither_stored_nor_logged_in_clear(client, settings, caplog):
    password = "Tr0ub4dor&3-unique-marker"
    caplog.set_level(logging.DEBUG)

    client.post("/register", json={"email": "eve@example.com", "password": password})
    client.post("/login", json={"email": "eve@example.com", "password": password})
    client.post("/login", json={"email": "eve@example.com", "password": password + "x"})

    with sqlite3.connect(settings.data_dir / "users.db") as conn:
        row = conn.execute("SELECT * FROM users WHERE email = 'eve@example.com'").fetchone()
    assert row is not None
    assert not any(password in str(value) for value in row)
    # Also the raw files, WAL included: nothing may hold it, not even a stale page.
    for path in settings.data_dir.iterdir():
        assert password.encode() not in path.read_bytes(), path
    assert caplog.records, "expected the service to log something"
    for record in caplog.records:
        assert password not in record.getMessage()
        assert password not in str(vars(record))
