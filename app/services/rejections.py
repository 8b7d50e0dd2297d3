"""Every request is recorded, a refused one too: status ``rejected``, the reason (the
error's code and message), the prompt and parameters, and whatever input images could be
decoded.

A request refused for capacity (queue full, too many jobs, shutting down, rate limited)
keeps its prompt but stores no images: those refusals come in floods, and storing each
upload would let a flood fill the disk. Recording never hides the refusal: if the database
cannot take the record, the caller still gets the original error, and the failure is
logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from app.errors import BildwerkError, QueueFull, RateLimited, ShuttingDown, TooManyJobs
from app.persistence.blobs import BlobStore
from app.persistence.records import NewRecord, RecordRepository
from app.services.checks import InputChecks

log = logging.getLogger("bildwerk.rejections")

IMAGE_FIELDS = {"image": "input_image_sha256", "mask": "mask_sha256"}
CAPACITY = (QueueFull, TooManyJobs, ShuttingDown, RateLimited)
_TEXT_FIELDS = ("prompt", "negative_prompt", "provider", "model", "scheduler", "vae")


class Rejections:
    def __init__(self, records: RecordRepository, blobs: BlobStore,
                 checks: InputChecks) -> None:
        self.records = records
        self.blobs = blobs
        self.checks = checks

    def record(self, endpoint: str, body: object, client: dict | None,
               error: BildwerkError) -> str | None:
        """Record the refusal of ``body`` (a request model, or the raw JSON object of a
        body that did not validate); the record's id, or None when it could not be
        written."""
        fields = _fields_of(body)
        record_id = str(uuid.uuid4())
        try:
            stored = {} if isinstance(error, CAPACITY) else self._store_images(fields, client)
            params = {k: v for k, v in fields.items()
                      if k not in IMAGE_FIELDS and k not in _TEXT_FIELDS and _small(v)}
            self.records.create(NewRecord(
                id=record_id, job_id=str(uuid.uuid4()), endpoint=endpoint,
                provider=_text(fields.get("provider")) or "local",
                model=_text(fields.get("model")),
                prompt=_text(fields.get("prompt")) or "",
                negative_prompt=_text(fields.get("negative_prompt")), params=params,
                scheduler=_text(fields.get("scheduler")), client=client, **stored))
            self.records.finish(record_id, status="rejected", error_code=error.code,
                                error_message=error.message)
        except Exception:  # the caller gets the refusal whatever happens here
            log.exception("could not record the rejected %s request", endpoint)
            return None
        return record_id

    def _store_images(self, fields: Mapping, client: dict | None) -> dict[str, str]:
        stored = {}
        for name, record_field in IMAGE_FIELDS.items():
            value = fields.get(name)
            if not isinstance(value, str | bytes) or not value:
                continue
            try:
                decoded = self.checks.image(value, name, client)
            except BildwerkError:
                continue  # not an image, too large, another key's blob: nothing to keep
            stored[record_field] = self.blobs.put(decoded.raw, decoded.content_type)
        return stored


def _fields_of(body: object) -> dict:
    if hasattr(body, "model_dump"):
        return dict(body.model_dump())
    return dict(body) if isinstance(body, Mapping) else {}


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:4000]


def _small(value: object) -> bool:
    """Keep parameters that are plain and short (a rejected body may be anything)."""
    if isinstance(value, bool | int | float) or value is None:
        return True
    if isinstance(value, str):
        return len(value) <= 200
    if isinstance(value, list | dict):
        return len(repr(value)) <= 2000
    return False
