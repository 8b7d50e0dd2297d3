"""POST /upscale (the list of upscalers is app/routers/upscalers.py, for any key)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.deps import BlobsDep, ClientDep, JobsDep, SettingsDep, UpscaleDep
from app.routers._body import parse_body, request_body
from app.routers._respond import GENERATION_RESPONSES, job_response
from app.schemas.errors import error_responses
from app.schemas.upscale import UPSCALE_EXAMPLES, UpscaleRequest, UpscaleResult

router = APIRouter(tags=["upscaling"])

_UPSCALE_BODY = request_body(UpscaleRequest, files=("image",), examples=UPSCALE_EXAMPLES)


@router.post("/upscale", response_model=UpscaleResult,
             responses={**GENERATION_RESPONSES, **error_responses(
                 _404="Unknown upscaler (GET /upscalers lists them).")},
             summary="Upscale an image", openapi_extra={"requestBody": _UPSCALE_BODY})
async def upscale(request: Request, service: UpscaleDep, jobs: JobsDep, blobs: BlobsDep,
                  settings: SettingsDep, client: ClientDep) -> Response:
    """Enlarge `image` with `upscaler` (`Lanczos`, `Nearest` or a model from GET
    /upscalers) by `scale`, or to exactly `width`×`height`. Models run tile by tile
    (`BILDWERK_UPSCALE_TILE_SIZE`), so memory stays bounded on large images; a model asked
    for another scale than its own runs until the image is large enough, then Lanczos
    gives the exact size. Transparency is kept. Recorded like every job; `Prefer:
    respond-async` and `Accept: image/png` work as on the generation routes."""
    body = await parse_body(request, UpscaleRequest)
    loop = asyncio.get_running_loop()
    accepted = await run_in_threadpool(service.accept, body, loop, client)
    return await job_response(request, accepted, jobs, blobs, settings.sync_timeout_s)
