"""POST /inpainting/: the museum kiosk's existing route, kept exactly as it is today.

Body: ``{"prompt", "image": data-URL, "mask": RGBA data-URL, "model": 0|1,
"guidance_scale"}``; answer: raw ``image/png`` bytes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.deps import BlobsDep, ClientDep, GenerationDep, JobsDep, ProvidersDep, SettingsDep
from app.routers._respond import LIMITED_429
from app.schemas.errors import BAD_BODY, error_responses
from app.schemas.generation import KIOSK_EXAMPLES, InpaintRequest, KioskInpaintRequest

router = APIRouter(tags=["compatibility"])


@router.post("/inpainting/", response_class=Response, summary="Kiosk inpainting (legacy)",
             responses={200: {"content": {"image/png": {}},
                              "description": "The inpainted image, same size as the input."},
                        **BAD_BODY,
                        **error_responses(_413="Image beyond the limits.",
                                          _422="Invalid input or provider unavailable.",
                                          _429=LIMITED_429,
                                          _503="Shutting down; see `Retry-After`.")})
async def kiosk_inpainting(body: Annotated[KioskInpaintRequest,
                                           Body(openapi_examples=KIOSK_EXAMPLES)],
                           http_request: Request, generation: GenerationDep,
                           providers: ProvidersDep,
                           jobs: JobsDep, blobs: BlobsDep, settings: SettingsDep,
                           client: ClientDep) -> Response:
    """Inpaint like the kiosk's original server: crop the painted region with padding,
    generate at the model's resolution, paste back. `model: 1` asks for DALL·E. The wish is
    translated to English first (`BILDWERK_KIOSK_TRANSLATE`, on by default); the record keeps
    it as typed and as translated."""
    # model 1 is DALL·E; model 0 the local model, or the "kiosk" chain when configured
    # (e.g. local, then openai).
    provider = "openai" if body.model == 1 else (
        "kiosk" if "kiosk" in providers.chains else None)
    request = InpaintRequest(prompt=body.prompt, image=body.image, mask=body.mask,
                             provider=provider, translate=settings.kiosk_translate,
                             expand_prompt=settings.kiosk_expand, style=settings.kiosk_style,
                             guidance_scale=7.0 if body.guidance_scale is None
                             else body.guidance_scale,
                             inpaint_area="masked")
    loop = asyncio.get_running_loop()
    accepted = await run_in_threadpool(generation.accept_inpaint, request, loop, client,
                                       "inpainting")
    result = await jobs.wait_result(accepted.job, settings.sync_timeout_s,
                                    http_request.is_disconnected)
    return Response(blobs.read(result.images[0].sha256), media_type="image/png",
                    headers={"X-Bildwerk-Record-Id": accepted.record_id})
