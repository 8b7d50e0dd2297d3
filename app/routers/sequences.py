"""POST /img2seq: one image into an ordered image sequence, streamed frame by frame."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.deps import BlobsDep, ClientDep, JobsDep, SequencesDep, SettingsDep
from app.routers._body import parse_body, request_body
from app.routers._respond import GENERATION_RESPONSES, job_response
from app.schemas.sequences import IMG2SEQ_EXAMPLES, Img2SeqRequest, SequenceResult

router = APIRouter(tags=["generation"])

_BODY = request_body(Img2SeqRequest, files=("image",), examples=IMG2SEQ_EXAMPLES)


@router.post("/img2seq", response_model=SequenceResult, responses=GENERATION_RESPONSES,
             summary="One image into an image sequence", openapi_extra={"requestBody": _BODY})
async def img2seq(request: Request, sequences: SequencesDep, jobs: JobsDep, blobs: BlobsDep,
                  settings: SettingsDep, client: ClientDep) -> Response:
    """Make `frames` frames from `image`: `loopback` feeds each output into the next frame
    (with optional `motion`), `independent` starts each frame from the init image. Frames
    are named `frame_0001.png`…; `packages` adds a zip, sprite sheet, strip, GIF, WebP or
    MP4. With `Prefer: respond-async`, follow `/jobs/{id}/events`: a `frame` event carries
    each finished frame's URL. A cancelled sequence keeps and returns its finished frames."""
    body = await parse_body(request, Img2SeqRequest)
    loop = asyncio.get_running_loop()
    accepted = await run_in_threadpool(sequences.accept_img2seq, body, loop, client)
    return await job_response(request, accepted, jobs, blobs, settings.sync_timeout_s)
