"""GET /jobs/{id}, GET /jobs/{id}/events (SSE), GET /jobs/{id}/webhooks, DELETE /jobs/{id}."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from sse_starlette import EventSourceResponse

from app.deps import JobsDep
from app.errors import NotFound
from app.schemas.errors import error_responses
from app.schemas.jobs import JobStatus
from app.schemas.webhooks import WebhookDeliveries
from app.security.auth import PrincipalDep

router = APIRouter(prefix="/jobs", tags=["jobs"])
_NOT_FOUND = error_responses(_404="Unknown job.")


@router.get("/{job_id}", response_model=JobStatus, responses=_NOT_FOUND,
            summary="A job's status, progress and result")
def get_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> dict:
    return jobs.status(job_id, owner=principal.owner)


@router.get("/{job_id}/events", responses={
    200: {"description": "Server-Sent Events: `status`, `progress` (stage, step/total), then "
          "one final `succeeded`, `failed` or `cancelled` event carrying the result or error. "
          "Jobs started with step previews (the compatibility APIs' progress images and "
          "partial images) also send `preview` events: `index`, `step`, `total`, "
          "`png_base64`.",
          "content": {"text/event-stream": {}}}, **_NOT_FOUND},
    summary="Follow a job as Server-Sent Events")
async def job_events(job_id: str, request: Request, jobs: JobsDep,
                     principal: PrincipalDep) -> EventSourceResponse:
    status = jobs.status(job_id, owner=principal.owner)  # 404 before the stream starts
    job = jobs.get(job_id)

    async def stream():
        if job is None and jobs.bus is not None and status["status"] in ("queued", "running"):
            # Held by another ingress (several processes): its events come over the bus.
            async for event, data in jobs.follow_elsewhere(job_id, request.is_disconnected):
                if event in ("succeeded", "failed", "cancelled", "interrupted"):
                    data = JobStatus.model_validate(data).model_dump(mode="json")
                yield {"event": event, "data": json.dumps(jsonable_encoder(data))}
            return
        if job is None or job.finished:
            # Through the response model, so timestamps carry their zone (UTC).
            data = JobStatus.model_validate(status).model_dump(mode="json")
            yield {"event": status["status"], "data": json.dumps(data)}
            return
        queue = job.subscribe()
        sent_frames: set[int] = set()
        try:
            yield {"event": "status", "data": json.dumps(job.snapshot())}
            for frame in list(job.frame_events):  # finished before we subscribed
                sent_frames.add(frame["index"])
                yield {"event": "frame", "data": json.dumps(jsonable_encoder(frame))}
            if job.finished:  # finished between the check and the subscription
                yield {"event": job.status,
                       "data": json.dumps(jsonable_encoder(jobs.job_status(job)))}
                return
            while True:
                event, data = await queue.get()
                if event == "frame" and data["index"] in sent_frames:
                    continue
                yield {"event": event, "data": json.dumps(jsonable_encoder(data))}
                if event in ("succeeded", "failed", "cancelled", "interrupted"):
                    return
                if await request.is_disconnected():
                    return
        finally:
            job.unsubscribe(queue)

    return EventSourceResponse(stream(), ping=15)


@router.get("/{job_id}/preview", response_class=Response, responses={
    200: {"description": "The job's latest step preview, the size its image will have.",
          "content": {"image/png": {}}},
    **error_responses(_404="Unknown job, or no preview yet (the job asked for none, has "
                      "not reached one, or finished: its result replaces it).")},
    summary="A running job's latest step preview")
def job_preview(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    """For jobs sent with `previews` > 0 (and the compatibility APIs' progress images).
    Poll it, or follow the `preview` events of /jobs/{id}/events. `X-Preview-Step` says
    which step it shows."""
    jobs.status(job_id, owner=principal.owner)  # 404: unknown, or another key's job
    job = jobs.get(job_id)
    preview = job.preview if job is not None else None
    if preview is None:
        raise NotFound(f"job {job_id} has no step preview now", param="job_id")
    return Response(preview.png, media_type="image/png", headers={
        "X-Preview-Step": f"{preview.step}/{preview.total}", "Cache-Control": "no-store"})


@router.get("/{job_id}/webhooks", response_model=WebhookDeliveries, responses=_NOT_FOUND,
            summary="A job's webhook deliveries")
def job_webhooks(job_id: str, request: Request, jobs: JobsDep,
                 principal: PrincipalDep) -> dict:
    """Every attempt to deliver the job's webhook events, oldest first: the event, the
    attempt's number, the receiver's status code or the error, and when. Empty when the
    request had no `webhook`."""
    jobs.status(job_id, owner=principal.owner)  # 404: unknown, or another key's job
    deliveries = request.app.state.services.webhooks.log.of_job(job_id)
    return {"job_id": job_id, "deliveries": deliveries}


@router.delete("/{job_id}", response_model=JobStatus, responses={
    **_NOT_FOUND, **error_responses(_409="The job already finished.")},
    summary="Cancel a job")
def cancel_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> dict:
    """Cancel a queued or running job. A running job stops after its current step; its
    record ends `cancelled`."""
    return jobs.cancel(job_id, owner=principal.owner)
