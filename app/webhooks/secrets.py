"""Signing secrets: one per API key, and one for the callers without a key (owner
``keyless``), in the ``webhook_secrets`` table.

A secret is ``whsec_`` + base64 of 32 random bytes, the Standard Webhooks format
(``standardwebhooks.Webhook(secret)`` takes it as it is). It is made on first use (a
delivery, or ``bildwerk keys webhook-secret``), so keys created before webhooks existed
get one too. It is stored in the clear: an HMAC is made with the secret itself, so unlike
an API key it cannot be kept as a hash; whoever reads the database can forge deliveries,
not call the API. ``rotate`` replaces it (deliveries retried afterwards use the new one).
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from app.persistence.database import Database
from app.persistence.orm import WebhookSecretRow
from app.persistence.records import KEYLESS

PREFIX = "whsec_"


def new_webhook_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def owner_of_key(key_id: str | None) -> str:
    return key_id or KEYLESS


class WebhookSecrets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def secret_for(self, key_id: str | None) -> str:
        """The secret that signs ``key_id``'s deliveries (None: a keyless caller's), made
        now if there is none yet."""
        owner = owner_of_key(key_id)
        with self.db.session() as s:
            row = s.get(WebhookSecretRow, owner)
            if row is not None:
                return row.secret
        try:
            with self.db.session() as s:
                s.add(WebhookSecretRow(owner=owner, secret=new_webhook_secret(),
                                       created_at=datetime.now(UTC)))
        except IntegrityError:
            pass  # made at the same moment by another request or process: use that one
        with self.db.session() as s:
            return s.get(WebhookSecretRow, owner).secret

    def rotate(self, key_id: str | None) -> str:
        """Replace the secret (receivers must be told the new one)."""
        owner = owner_of_key(key_id)
        secret = new_webhook_secret()
        with self.db.session() as s:
            row = s.get(WebhookSecretRow, owner)
            if row is None:
                s.add(WebhookSecretRow(owner=owner, secret=secret,
                                       created_at=datetime.now(UTC)))
            else:
                row.secret, row.created_at = secret, datetime.now(UTC)
        return secret
