"""The ``webhook`` field of the generation requests, and GET /jobs/{id}/webhooks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.base import RequestModel, UtcDateTime

WebhookEvent = Literal["started", "progress", "completed", "failed", "cancelled"]


class WebhookSpec(RequestModel):
    """Where to POST the job's events, signed by the Standard Webhooks spec (headers
    `webhook-id`, `webhook-timestamp`, `webhook-signature`) with the caller's webhook
    secret (`bildwerk keys webhook-secret KEY_ID`). See docs/webhooks.md."""

    url: str = Field(..., min_length=1, max_length=2048,
                     description="An http:// or https:// URL. Private, loopback and "
                     "link-local addresses are refused (422) unless the server allows the "
                     "host (BILDWERK_WEBHOOK_ALLOWED_HOSTS).",
                     examples=["https://hooks.example.com/bildwerk"])
    events: list[WebhookEvent] | None = Field(
        None, min_length=1, max_length=5,
        description="Which events to send. Default: started, completed, failed, cancelled "
        "(progress only when asked for: at most one a second, never retried).")


class WebhookDelivery(BaseModel):
    """One attempt to deliver one event."""

    message_id: str = Field(description="The `webhook-id` header (the same on every "
                            "attempt of one event).")
    event: str
    attempt: int = Field(description="1 for the first attempt.")
    url: str
    ok: bool = Field(description="The receiver answered 2xx.")
    status_code: int | None = Field(description="The receiver's status; null when none "
                                    "came (see error).")
    error: str | None
    attempted_at: UtcDateTime
    finished_at: UtcDateTime
    next_attempt_at: UtcDateTime | None = Field(description="When the next attempt is "
                                                "due; null when none follows.")


class WebhookDeliveries(BaseModel):
    job_id: str
    deliveries: list[WebhookDelivery]
