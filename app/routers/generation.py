"""POST /txt2img, POST /img2img and POST /inpaint."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.deps import BlobsDep, ClientDep, GenerationDep, JobsDep, SettingsDep
from app.routers._body import parse_body, request_body
from app.routers._respond import GENERATION_RESPONSES, job_response
from app.schemas.generation import (
    IMG2IMG_EXAMPLES,
    INPAINT_EXAMPLES,
    TXT2IMG_EXAMPLES,
    GenerationResult,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)

router = APIRouter(tags=["generation"])


@router.post("/txt2img", response_model=GenerationResult, responses=GENERATION_RESPONSES,
             summary="Text to image")
async def txt2img(body: Annotated[Txt2ImgRequest, Body(openapi_examples=TXT2IMG_EXAMPLES)],
                  request: Request, generation: GenerationDep,
                  jobs: JobsDep, blobs: BlobsDep, settings: SettingsDep,
                  client: ClientDep) -> Response:
    """Generate `num_images` images from a prompt. Waits for the result unless the request
    sends `Prefer: respond-async`."""
    loop = asyncio.get_running_loop()
    accepted = await run_in_threadpool(generation.accept_txt2img, body, loop, client,
                                        previews=body.previews)
    return await job_response(request, accepted, jobs, blobs, settings.sync_timeout_s)


_IMG2IMG_BODY = request_body(Img2ImgRequest, files=("image",), examples=IMG2IMG_EXAMPLES)


@router.post("/img2img", response_model=GenerationResult, responses=GENERATION_RESPONSES,
             summary="Image to image", openapi_extra={"requestBody": _IMG2IMG_BODY})
async def img2img(request: Request, generation: GenerationDep, jobs: JobsDep,
                  blobs: BlobsDep, settings: SettingsDep, client: ClientDep) -> Response:
    """Repaint the whole of `image` towards the prompt. `strength` says how far to move
    from it; the output is `width`×`height` (default: the image's size, rounded down to a
    multiple of 8), the image fitted by `resize_mode`. Accepts JSON (data-URL, base64 or
    blob sha256 for `image`) or multipart/form-data with a file."""
    body = await parse_body(request, Img2ImgRequest)
    loop = asyncio.get_running_loop()
    accepted = await run_in_threadpool(generation.accept_img2img, body, loop, client,
                                        previews=body.previews)
    return await job_response(request, accepted, jobs, blobs, settings.sync_timeout_s)


_INPAINT_BODY = request_body(InpaintRequest, files=("image", "mask"),
                             examples=INPAINT_EXAMPLES)


@router.post("/inpaint", response_model=GenerationResult, responses=GENERATION_RESPONSES,
             summary="Inpaint the masked area", openapi_extra={"requestBody": _INPAINT_BODY})
async def inpaint(request: Request, generation: GenerationDep, jobs: JobsDep,
                  blobs: BlobsDep, settings: SettingsDep, client: ClientDep) -> Response:
    """Repaint the masked area of `image`. Every pixel outside the (blurred) mask is
    returned unchanged and the output has the input's size. Accepts JSON (data-URL, base64
    or blob sha256 for `image`/`mask`) or multipart/form-data with files."""
    body = await parse_body(request, InpaintRequest)
    loop = asyncio.get_running_loop()
    accepted = await run_in_threadpool(generation.accept_inpaint, body, loop, client,
                                        previews=body.previews)
    return await job_response(request, accepted, jobs, blobs, settings.sync_timeout_s)
