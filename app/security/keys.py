"""API keys: making secrets, hashing them, and the ``api_keys`` table.

A secret is ``bw_`` + ``secrets.token_urlsafe(32)`` (256 random bits). The database keeps
its SHA-256 and its first 11 characters (``bw_`` + 8), never the secret itself: the prefix
finds the candidate rows and lets ``bildwerk keys list`` show which key is which, the hash
is compared in constant time.

Why a fast hash and not scrypt/argon2: those slow down guessing *low-entropy* passwords. A
256-bit random token cannot be guessed however fast the hash is, so one SHA-256 is the
accepted practice for API tokens (GitHub, Stripe and others do the same) and keeps each
request's check to microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from app.errors import InvalidInput, NotFound
from app.persistence.database import Database
from app.persistence.orm import ApiKeyRow

log = logging.getLogger("bildwerk.auth")

SCOPES = ("generate", "read", "admin")
SECRET_PREFIX = "bw_"
PREFIX_LEN = len(SECRET_PREFIX) + 8
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per key and process


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_prefix(secret: str) -> str:
    return secret[:PREFIX_LEN]


def check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """The scopes in canonical order; unknown ones or none at all are an error."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope(s) {', '.join(unknown)}; "
                           f"choose from {', '.join(SCOPES)}", param="scopes")
    if not scopes:
        raise InvalidInput(f"a key needs at least one scope ({', '.join(SCOPES)})",
                           param="scopes")
    return [s for s in SCOPES if s in scopes]


def _utc(when: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC; PostgreSQL aware times."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


@dataclass(frozen=True)
class ApiKey:
    """A key as the server and `bildwerk keys list` see it: everything but the secret."""

    id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKeyRow) -> ApiKey:
        return cls(id=row.id, name=row.name, prefix=row.prefix, scopes=tuple(row.scopes),
                   created_at=_utc(row.created_at), last_used_at=_utc(row.last_used_at),
                   revoked_at=_utc(row.revoked_at))

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class ApiKeyRepository:
    """The only place that queries ``api_keys``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()
        self._had_keys = False  # once true it stays true: keys are never deleted
        self.clock = time.monotonic

    def create(self, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[ApiKey, str]:
        """A new key and its secret. The secret is returned this once and never stored."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput("a key needs a name of 1 to 100 characters", param="name")
        scopes = check_scopes(scopes)
        secret = new_secret()
        row = ApiKeyRow(id=uuid.uuid4().hex[:16], name=name, prefix=secret_prefix(secret),
                        secret_hash=hash_secret(secret), scopes=scopes,
                        created_at=datetime.now(UTC))
        with self.db.session() as s:
            s.add(row)
        return ApiKey.of(row), secret

    def list(self) -> list[ApiKey]:
        with self.db.session() as s:
            rows = s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at,
                                                        ApiKeyRow.id)).all()
            return [ApiKey.of(r) for r in rows]

    def get(self, key_id: str) -> ApiKey:
        with self.db.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"API key {key_id} not found", param="key_id")
            return ApiKey.of(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (kept, so that its records still name it). Idempotent."""
        with self.db.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"API key {key_id} not found", param="key_id")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return ApiKey.of(row)

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None (unknown, malformed or revoked)."""
        if not secret.startswith(SECRET_PREFIX) or len(secret) > 256:
            return None
        digest = hash_secret(secret)
        with self.db.session() as s:
            rows = s.scalars(select(ApiKeyRow).where(
                ApiKeyRow.prefix == secret_prefix(secret))).all()
        found = None
        for row in rows:  # compare every candidate, in constant time each
            if hmac.compare_digest(row.secret_hash, digest):
                found = row
        if found is None or found.revoked_at is not None:
            return None
        return ApiKey.of(found)

    def has_active_keys(self) -> bool:
        with self.db.session() as s:
            return s.scalars(select(ApiKeyRow.id).where(ApiKeyRow.revoked_at.is_(None))
                             .limit(1)).first() is not None

    def has_keys(self) -> bool:
        """Whether any key was ever created, revoked ones included. In ``auto`` mode this,
        not "an active key", closes keyless loopback access: revoking the last key must not
        silently reopen the server (keys are never deleted). Asked on every keyless
        request, so the answer is remembered once it is yes (a key made by the CLI in another
        process is still seen at once)."""
        if not self._had_keys:
            with self.db.session() as s:
                self._had_keys = s.scalars(select(ApiKeyRow.id).limit(1)).first() is not None
        return self._had_keys

    def touch(self, key_id: str) -> None:
        """Note that the key was used: written at most once a minute per key."""
        now = self.clock()
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < TOUCH_EVERY_S:
                return
            self._touched[key_id] = now
        try:
            with self.db.session() as s:
                s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id)
                          .values(last_used_at=datetime.now(UTC)))
        except SQLAlchemyError as exc:  # bookkeeping: never fail the request for it
            log.warning("could not note the use of API key %s: %s", key_id, exc)
