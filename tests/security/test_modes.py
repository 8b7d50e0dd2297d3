"""Who gets in without a key: auth modes auto (loopback while no key exists), keys, open."""

from __future__ import annotations

import logging

import pytest

from tests.security.conftest import bearer, make_key


def assert_401(r) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"


def test_without_keys_loopback_gets_in_and_other_hosts_get_401(make_client, remote, caplog):
    with caplog.at_level(logging.WARNING, logger="bildwerk"):
        client = make_client()
    warnings = [r for r in caplog.records if r.name == "bildwerk.auth"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "no API keys exist" in warnings[0].getMessage()
    assert "bildwerk keys create" in warnings[0].getMessage()
    assert "BILDWERK_AUTH_MODE=open" in warnings[0].getMessage()

    assert client.get("/records").status_code == 200
    assert client.post("/models/refresh").status_code == 200  # loopback acts as admin
    outside = remote(client)
    assert_401(outside.get("/records"))
    assert_401(outside.get("/models"))
    assert outside.get("/health").status_code == 200  # public


def test_once_a_key_exists_loopback_keeps_only_the_loopback_scopes(client):
    """The kiosk's backend cannot send a key: after the first key is created (even a
    read-only one, even revoked), a keyless loopback caller keeps generate (the default
    BILDWERK_LOOPBACK_SCOPES), sees only keyless records, and nothing of admin."""
    assert client.get("/records").status_code == 200
    key_id, secret = make_key(client, "first", "read")
    r = client.get("/records")
    assert r.status_code == 403 and "BILDWERK_LOOPBACK_SCOPES" in r.json()["error"]["message"]
    assert client.post("/models/refresh").status_code == 403
    made = client.post("/txt2img", json={"prompt": "kiosk", "width": 64, "height": 64,
                                         "steps": 1})
    assert made.status_code == 200, made.text
    assert client.get(made.json()["images"][0]["url"]).status_code == 200  # its own blob
    assert client.get(f"/jobs/{made.json()['job_id']}").status_code == 200
    assert client.get("/records", headers=bearer(secret)).status_code == 200
    assert client.get("/records", headers={"X-API-Key": secret}).status_code == 200
    # Revoking the last key does not reopen admin access (keys are never deleted).
    client.app.state.keys.revoke(key_id)
    assert_401(client.get("/records", headers=bearer(secret)))
    assert client.get("/records").status_code == 403


def test_a_keyless_loopback_caller_sees_no_keys_jobs_or_blobs(client):
    _, secret = make_key(client, "artist", "generate", "read")
    theirs = client.post("/txt2img", headers=bearer(secret), json={
        "prompt": "private", "width": 64, "height": 64, "steps": 1})
    assert theirs.status_code == 200, theirs.text
    body = theirs.json()
    assert client.get(f"/jobs/{body['job_id']}").status_code == 404
    assert client.delete(f"/jobs/{body['job_id']}").status_code == 404
    assert client.get(body["images"][0]["url"]).status_code == 404
    # nor may it name the key's blob as its input
    r = client.post("/img2img", json={"prompt": "x", "image": body["images"][0]["sha256"],
                                      "steps": 2, "width": 64, "height": 64})
    assert r.status_code == 422 and "no stored blob" in r.json()["error"]["message"]


def test_empty_loopback_scopes_make_loopback_need_a_key(make_client):
    client = make_client(loopback_scopes=[])
    make_key(client, "first", "read")
    assert_401(client.get("/records"))
    assert_401(client.post("/txt2img", json={"prompt": "x", "width": 64, "height": 64,
                                             "steps": 1}))


def test_a_key_sent_is_always_checked(client):
    assert_401(client.get("/records", headers=bearer("bw_not-a-key")))
    assert_401(client.get("/records", headers={"X-API-Key": "nonsense"}))
    # HTTP Basic's password is a key too (AUTOMATIC1111 clients send it so): checked.
    assert_401(client.get("/records", headers={"Authorization": "Basic dXNlcjpwdw=="}))
    # Another scheme is not a key: without keys in the database loopback still gets in.
    assert client.get("/records", headers={"Authorization": "Digest username=\"u\""}
                      ).status_code == 200


def test_open_mode_lets_every_host_in_and_says_so_loudly(make_client, remote, caplog):
    with caplog.at_level(logging.WARNING, logger="bildwerk"):
        client = make_client(auth_mode="open")
    banner = [r for r in caplog.records if r.name == "bildwerk.auth"]
    assert len(banner) == 1 and banner[0].levelno == logging.WARNING
    assert "BILDWERK_AUTH_MODE=open" in banner[0].getMessage()
    assert "WITHOUT an API key" in banner[0].getMessage()
    outside = remote(client)
    make_key(client, "someone", "read")  # keys existing changes nothing in open mode
    assert outside.get("/records").status_code == 200
    assert outside.post("/models/no-such-model/load").status_code == 404  # admin: let in
    r = outside.post("/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 200, r.text
    assert outside.get(r.json()["images"][0]["url"]).status_code == 200
    assert_401(outside.get("/records", headers=bearer("bw_wrong")))


def test_keys_mode_requires_a_key_on_loopback_too(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="bildwerk"):
        client = make_client(auth_mode="keys")
    assert any("no active API key exists" in r.getMessage() for r in caplog.records
               if r.name == "bildwerk.auth")
    assert_401(client.get("/records"))
    assert_401(client.get("/models"))
    assert client.get("/ready").status_code == 200
    _, secret = make_key(client, "ops", "admin")
    assert client.get("/records", headers=bearer(secret)).status_code == 200
    assert client.post("/models/refresh", headers=bearer(secret)).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "127.8.9.10", "::ffff:127.0.0.1",
                                  "testclient"])
def test_loopback_addresses(host):
    from app.security.auth import is_loopback

    assert is_loopback(host)


@pytest.mark.parametrize("host", ["203.0.113.5", "10.0.0.1", "::ffff:10.0.0.1", "",
                                  None, "example.org", "fe80::1"])
def test_other_addresses(host):
    from app.security.auth import is_loopback

    assert not is_loopback(host)


def test_last_used_is_written_at_most_once_a_minute(client, monkeypatch):
    key_id, secret = make_key(client, "busy", "read")
    keys = client.app.state.keys
    assert keys.get(key_id).last_used_at is None
    assert client.get("/records", headers=bearer(secret)).status_code == 200
    first = keys.get(key_id).last_used_at
    assert first is not None
    assert client.get("/records", headers=bearer(secret)).status_code == 200
    assert keys.get(key_id).last_used_at == first  # within the minute: not written
    later = keys.clock() + 61
    monkeypatch.setattr(keys, "clock", lambda: later)
    assert client.get("/records", headers=bearer(secret)).status_code == 200
    assert keys.get(key_id).last_used_at > first


def test_loopback_scopes_are_read_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    from app.config import Settings

    monkeypatch.setenv("BILDWERK_LOOPBACK_SCOPES", "none")
    assert Settings().loopback_scopes == []
    monkeypatch.setenv("BILDWERK_LOOPBACK_SCOPES", "generate, read")
    assert Settings().loopback_scopes == ["generate", "read"]
    monkeypatch.setenv("BILDWERK_LOOPBACK_SCOPES", "write")
    with pytest.raises(ValidationError, match="unknown scopes"):
        Settings()
