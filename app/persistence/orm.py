"""SQLAlchemy 2 ORM tables. Schema changes go through Alembic (``migrations/``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class BlobRow(Base):
    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecordRow(Base):
    """One request: written when accepted, updated when it ends (failures included)."""

    __tablename__ = "records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    endpoint: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    loras: Mapped[list | None] = mapped_column(JSON, nullable=True)
    vae: Mapped[str | None] = mapped_column(String(255), nullable=True)
    scheduler: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt: Mapped[str] = mapped_column(Text)
    prompt_translated: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_expanded: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_used: Mapped[str | None] = mapped_column(Text, nullable=True)
    negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict] = mapped_column(JSON)
    seeds: Mapped[list | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[list | None] = mapped_column(JSON, nullable=True)
    usage: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # e.g. expanded prompts
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    client: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(  # the caller's key (never the secret)
        String(36), nullable=True, index=True)
    input_image_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("blobs.sha256"), nullable=True)
    mask_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("blobs.sha256"), nullable=True)
    mask_applied_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("blobs.sha256"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The process that ran it: host:pid:… here, ray:<replica>@host:pid on a Ray replica.
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The lease of a queued or running job (app/jobs/leases.py): who renews it, and until.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)
    # Feedback (POST /records/{id}/feedback): the latest one replaces the earlier one.
    feedback_rating: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    feedback_flags: Mapped[list | None] = mapped_column(JSON, nullable=True)
    feedback_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    feedback_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The key that gave it (None: a caller let in without a key, who acts as admin).
    feedback_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)

    outputs: Mapped[list[OutputRow]] = relationship(
        back_populates="record", order_by="OutputRow.index", cascade="all, delete-orphan",
        lazy="selectin")


class OutputRow(Base):
    """One stored output of a record: an ``image``, a sequence ``frame`` or a ``package``."""

    __tablename__ = "record_outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(36), ForeignKey("records.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), server_default="image")
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"), index=True)
    content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    strength: Mapped[float | None] = mapped_column(Float, nullable=True)

    record: Mapped[RecordRow] = relationship(back_populates="outputs")


class ApiKeyRow(Base):
    """An API key: only a SHA-256 of the secret and a short prefix of it are stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # "bw_" + 8 chars, shown
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookSecretRow(Base):
    """The secret that signs an owner's webhook deliveries (Standard Webhooks,
    ``whsec_…``): one per API key, and one for the callers without a key (owner
    ``keyless``). Kept in the clear: signing needs it (HMAC). Made on first use."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(36), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDeliveryRow(Base):
    """One attempt to deliver one webhook event of a job (app/webhooks/)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    record_id: Mapped[str] = mapped_column(String(36))
    message_id: Mapped[str] = mapped_column(String(64))  # the webhook-id header
    event: Mapped[str] = mapped_column(String(16))  # started, progress, completed, ...
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ...
    url: Mapped[str] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
