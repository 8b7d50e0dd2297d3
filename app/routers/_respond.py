"""Shared response shaping for generation routes: sync or async, JSON or PNG."""

from __future__ import annotations

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from app.persistence.blobs import BlobStore
from app.schemas.errors import BAD_BODY, error_responses
from app.schemas.jobs import JobStatus
from app.services.admission import Accepted
from app.services.jobs import JobService

RESPOND_ASYNC = "respond-async"

LIMITED_429 = ("Too much at once, see `Retry-After`: `queue_full` (the device queue), "
               "`too_many_jobs` (this caller's jobs queued or running) or `rate_limited`.")

GENERATION_RESPONSES: dict = {
    200: {"description": "The finished generation (JSON), or the first image when the "
          "request has `Accept: image/png`.",
          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    202: {"description": "Accepted (`Prefer: respond-async`): follow `Location`.",
          "model": JobStatus},
    **BAD_BODY,
    **error_responses(
        _409="The job was cancelled while the request waited.",
        _413="Body or image beyond the limits.", _415="Unsupported content type.",
        _422="Invalid input.", _429=LIMITED_429,
        _500="The model failed to load or the generation failed.",
        _503="The server is shutting down (`shutting_down`), or the job was interrupted by "
             "a shutdown; retry after `Retry-After`.",
        _504="The synchronous wait ran out; the job goes on at `/jobs/{id}` "
             "(`job_timeout`). Or the job ran past `BILDWERK_JOB_TIMEOUT_S` and was stopped "
             "(`job_time_limit`)."),
}


def wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == RESPOND_ASYNC for p in prefer.split(","))


def wants_png(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept


async def job_response(request: Request, accepted: Accepted, jobs: JobService,
                       blobs: BlobStore, timeout: float):
    """202 with the job's status (``Prefer: respond-async``), the first image's bytes
    (``Accept: image/png``), or the typed result, which the route declares."""
    job = accepted.job
    if wants_async(request):
        return JSONResponse(
            jsonable_encoder(JobService.job_status(job)), status_code=202,
            headers={"Location": f"/jobs/{job.id}", "Preference-Applied": RESPOND_ASYNC})
    result = await jobs.wait_result(job, timeout, request.is_disconnected)
    images = getattr(result, "images", None) or getattr(result, "frames", None) or []
    if wants_png(request) and images:
        first = images[0]
        headers = {"X-Bildwerk-Job-Id": job.id, "X-Bildwerk-Record-Id": accepted.record_id}
        if getattr(first, "seed", None) is not None:  # an upscale has none
            headers["X-Bildwerk-Seed"] = str(first.seed)
        return Response(blobs.read(first.sha256), media_type="image/png", headers=headers)
    return result  # the route's response_model (GenerationResult, ...) applies
