"""Typed results from records: what ``GET /jobs/{id}`` answers for a job that is no
longer in memory (or ran before a restart). A finished job's own result is built once by
:func:`app.services.runner.build_result`; this builds the same types from what the record
kept."""

from __future__ import annotations

from app.persistence.orm import RecordRow
from app.schemas.generation import GenerationResult
from app.schemas.sequences import SequenceResult


def result_from_record(row: RecordRow) -> GenerationResult | SequenceResult:
    params = row.params or {}
    if row.endpoint == "img2seq":
        return _sequence_from_record(row)
    return GenerationResult.model_validate({
        "job_id": row.job_id, "record_id": row.id, "status": row.status,
        "endpoint": row.endpoint, "provider": row.provider, "model": row.model or "",
        "images": [{"sha256": o.sha256, "url": f"/blobs/{o.sha256}", "width": o.width,
                    "height": o.height, "seed": o.seed, "content_type": "image/png"}
                   for o in row.outputs],
        "prompt": row.prompt_used or row.prompt, "negative_prompt": row.negative_prompt or "",
        "parameters": params, "timings": row.timings or {},
        "mask_applied": ({"sha256": row.mask_applied_sha256,
                          "url": f"/blobs/{row.mask_applied_sha256}"}
                         if row.mask_applied_sha256 else None),
        "attempts": row.attempts or [], "usage": row.usage,
        "prompting": params.get("prompting"),
    })


def _sequence_from_record(row: RecordRow) -> SequenceResult:
    params = row.params or {}
    frames = [o for o in row.outputs if o.kind == "frame"]
    blends = [_split_blend(o.prompt or "") for o in frames]
    return SequenceResult.model_validate({
        "job_id": row.job_id, "record_id": row.id, "status": row.status,
        "endpoint": row.endpoint, "provider": row.provider, "model": row.model or "",
        "frames": [{"index": i, "name": o.name, "sha256": o.sha256, "url": f"/blobs/{o.sha256}",
                    "width": o.width, "height": o.height, "seed": o.seed,
                    "strength": o.strength, "prompt": p, "prompt_to": to, "prompt_weight": w}
                   for i, (o, (p, to, w)) in enumerate(zip(frames, blends, strict=True))],
        "packages": [{"kind": o.name.rsplit(".", 1)[-1] if o.name else "", "name": o.name,
                      "sha256": o.sha256, "url": f"/blobs/{o.sha256}",
                      "content_type": o.content_type, "size": 0}
                     for o in row.outputs if o.kind == "package"],
        "fps": params.get("fps", 8), "parameters": params, "timings": row.timings or {},
    })


def _split_blend(text: str) -> tuple[str, str | None, float]:
    """Undo the record's ``"a -> b @ 0.2500"`` notation for a blended frame prompt."""
    if " -> " in text and " @ " in text:
        head, weight = text.rsplit(" @ ", 1)
        start, end = head.split(" -> ", 1)
        try:
            value = float(weight)
        except ValueError:  # a prompt the user typed that merely looks like the notation
            return text, None, 0.0
        if 0.0 <= value <= 1.0 and len(weight) == 6:  # written as f"{w:.4f}"
            return start, end, value
    return text, None, 0.0


def status_from_record(row: RecordRow) -> dict:
    data = {
        "job_id": row.job_id, "record_id": row.id, "endpoint": row.endpoint,
        "status": row.status, "stage": row.status, "progress": {"step": 0, "total": 0},
        "created_at": row.created_at, "started_at": row.started_at,
        "finished_at": row.finished_at, "result": None, "error": None,
    }
    if row.status == "succeeded" or (row.status in ("cancelled", "interrupted")
                                     and row.outputs):  # the frames a sequence finished
        data["result"] = result_from_record(row)
    if row.error_code:
        data["error"] = {"code": row.error_code, "message": row.error_message or "",
                         "param": None}
    return data


