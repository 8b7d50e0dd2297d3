"""The delivery log: one row per attempt (``webhook_deliveries``), read by
``GET /jobs/{id}/webhooks``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from app.persistence.database import Database
from app.persistence.orm import WebhookDeliveryRow


def _utc(when: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC; PostgreSQL aware times."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


@dataclass
class DeliveryAttempt:
    job_id: str
    record_id: str
    message_id: str
    event: str
    attempt: int
    url: str
    ok: bool
    status_code: int | None
    error: str | None
    attempted_at: datetime
    finished_at: datetime
    next_attempt_at: datetime | None = None


class DeliveryLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, attempt: DeliveryAttempt) -> None:
        with self.db.session() as s:
            s.add(WebhookDeliveryRow(**asdict(attempt)))

    def of_job(self, job_id: str) -> list[dict]:
        """Every attempt for the job, oldest first."""
        with self.db.session() as s:
            rows = s.scalars(select(WebhookDeliveryRow)
                             .where(WebhookDeliveryRow.job_id == job_id)
                             .order_by(WebhookDeliveryRow.id)).all()
            return [{"message_id": r.message_id, "event": r.event, "attempt": r.attempt,
                     "url": r.url, "ok": r.ok, "status_code": r.status_code,
                     "error": r.error, "attempted_at": _utc(r.attempted_at),
                     "finished_at": _utc(r.finished_at),
                     "next_attempt_at": _utc(r.next_attempt_at)} for r in rows]
