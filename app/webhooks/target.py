"""What a plan carries about its webhook: plain data (it pickles with the plan)."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = ("started", "progress", "completed", "failed", "cancelled")
DEFAULT_EVENTS = ("started", "completed", "failed", "cancelled")  # all but progress


@dataclass(frozen=True)
class WebhookTarget:
    """A checked webhook: where to POST, which events, and whose secret signs them
    (``key_id``: the caller's API key; None: a caller without a key, signed with the
    server's keyless secret)."""

    url: str
    events: tuple[str, ...]
    key_id: str | None = None
