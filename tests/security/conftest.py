"""Helpers for the auth tests: keys made in-process, and a client from another host."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

REMOTE = ("203.0.113.5", 50000)  # TEST-NET-3: certainly not loopback


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def remote() -> Callable[[TestClient], TestClient]:
    """A client of the same running app (its lifespan already ran in ``client``) that
    connects from a non-loopback address."""

    def make(client: TestClient) -> TestClient:
        return TestClient(client.app, client=REMOTE)

    return make


def make_key(client: TestClient, name: str, *scopes: str) -> tuple[str, str]:
    """(key id, secret) of a new key in the app's database."""
    key, secret = client.app.state.keys.create(name, list(scopes))
    return key.id, secret
