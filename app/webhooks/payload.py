"""A job's events as Standard Webhooks payloads::

    {"type": "job.completed", "timestamp": "2026-11-30T12:00:00.123456Z",
     "data": {"job_id": ..., "record_id": ..., "endpoint": "txt2img",
              "status": "succeeded", "stage": "succeeded",
              "progress": {"step": 25, "total": 25},
              "outputs": [{"kind": "image", "sha256": ..., "url": "/blobs/...",
                           "content_type": "image/png"}],
              "error": null}}

``outputs`` lists the images (txt2img, img2img, inpaint, upscale), or the frames and
packages of an img2seq (also the frames a cancelled one finished); ``url`` is relative to
the server. ``error`` is ``{code, message, param}`` for ``failed`` and ``cancelled``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.encoders import jsonable_encoder

# A job's event (app/jobs/job.py) -> the webhook event. A job interrupted by a shutdown
# ends ``interrupted``: that is sent as ``failed`` (data.status says ``interrupted``).
FINAL = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled",
         "interrupted": "failed"}


def webhook_event(job_event: str, data: dict) -> str | None:
    if job_event == "status":
        return "started" if data.get("status") == "running" else None
    if job_event == "progress":
        return "progress"
    return FINAL.get(job_event)


def outputs(result) -> list[dict]:
    if result is None:
        return []
    result = jsonable_encoder(result)
    found = []
    for field, kind in (("images", "image"), ("frames", "frame"), ("packages", "package")):
        for item in result.get(field) or []:
            out = {"kind": item.get("kind", kind) if kind == "package" else kind,
                   "sha256": item.get("sha256"), "url": item.get("url"),
                   "content_type": item.get("content_type", "image/png")}
            if "index" in item:
                out["index"] = item["index"]
            found.append(out)
    return found


def build(event: str, data: dict, when: datetime | None = None) -> dict:
    """The payload of webhook ``event`` from the job event's ``data``."""
    when = when or datetime.now(UTC)
    body = {"job_id": data.get("job_id"), "record_id": data.get("record_id"),
            "endpoint": data.get("endpoint"), "status": data.get("status"),
            "stage": data.get("stage"), "progress": data.get("progress"),
            "outputs": outputs(data.get("result")), "error": data.get("error")}
    return {"type": f"job.{event}",
            "timestamp": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": jsonable_encoder(body)}
