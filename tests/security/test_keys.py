"""API keys: secrets are shown once and stored only hashed; the `bildwerk keys` CLI."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from app.errors import InvalidInput, NotFound
from app.persistence.database import Database
from app.security.keys import ApiKeyRepository, hash_secret, new_secret
from tests.security.conftest import bearer


@pytest.fixture
def env(tmp_path, monkeypatch, database_url):
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BILDWERK_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    return database_url


@pytest.fixture
def repo(database_url):
    db = Database(database_url)
    db.migrate()
    yield ApiKeyRepository(db)
    db.dispose()


def keys(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, ["keys", *args])
    assert result.exit_code == code, result.output
    return result


def dump(db: Database) -> str:
    with db.engine.connect() as conn:
        return repr(conn.execute(text("SELECT * FROM api_keys")).all())


def test_secrets_are_random_tokens_stored_only_as_their_hash(repo):
    key, secret = repo.create("blender", ["read", "generate"])
    assert re.fullmatch(r"bw_[A-Za-z0-9_-]{43}", secret)  # 32 random bytes
    assert new_secret() != new_secret()
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    table = dump(repo.db)
    assert secret not in table and secret[3:] not in table
    assert hash_secret(secret) in table
    assert key.prefix == secret[:11] and key.scopes == ("generate", "read")
    assert repo.authenticate(secret) == key
    assert repo.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert repo.authenticate(key.prefix) is None and repo.authenticate("") is None
    repo.revoke(key.id)
    assert repo.authenticate(secret) is None
    assert repo.get(key.id).revoked


def test_scopes_and_names_are_checked(repo):
    with pytest.raises(InvalidInput, match="unknown scope"):
        repo.create("x", ["generate", "write"])
    with pytest.raises(InvalidInput, match="at least one scope"):
        repo.create("x", [])
    with pytest.raises(InvalidInput, match="name"):
        repo.create("  ", ["read"])
    with pytest.raises(NotFound):
        repo.revoke("nope")


def test_create_list_and_revoke_through_the_cli(env):
    created = keys("create", "blender-studio", "--scope", "generate", "--scope", "read")
    secret = created.stdout.strip()
    assert re.fullmatch(r"bw_[A-Za-z0-9_-]{43}", secret)  # stdout: the secret alone
    key_id = re.search(r"created key (\w+)", created.stderr).group(1)
    assert "not shown again" in created.stderr

    listed = keys("list").stdout
    assert key_id in listed and "blender-studio" in listed and "generate,read" in listed
    assert secret not in listed and secret[11:] not in listed
    assert secret[:11] in listed  # the non-secret prefix identifies it

    db = Database(Settings(_env_file=None).resolved_database_url)
    try:
        assert secret not in dump(db)
    finally:
        db.dispose()

    assert "revoked key" in keys("revoke", key_id).stdout
    line = next(row for row in keys("list").stdout.splitlines() if row.startswith(key_id))
    assert not line.rstrip().endswith(" -")  # the revoked column holds a time

    assert "not found" in keys("revoke", "no-such-key", code=2).output
    assert "unknown scope" in keys("create", "x", "--scope", "write", code=2).output
    assert "at least one scope" in keys("create", "x", code=2).output


def test_a_key_revoked_through_the_cli_is_refused_at_once(env, make_client):
    secret = keys("create", "kiosk", "--scope", "generate").stdout.strip()
    client = make_client()  # the same database as the CLI
    assert client.get("/schedulers", headers=bearer(secret)).status_code == 200
    key_id = keys("list").stdout.splitlines()[1].split()[0]
    keys("revoke", key_id)
    r = client.get("/schedulers", headers=bearer(secret))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    # A key was created once, so loopback without a key keeps only its loopback scopes
    # (BILDWERK_LOOPBACK_SCOPES, generate by default), admin stays shut.
    assert client.get("/schedulers").status_code == 200
    assert client.post("/models/refresh").status_code == 403
