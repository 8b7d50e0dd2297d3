"""POST /inpainting/: the museum kiosk's existing route, kept as its original server had it
(the forgiving parts are in :mod:`app.services.kiosk`).

Body: ``{"prompt", "image": data-URL, "mask": RGBA data-URL, "model": 0|1,
"guidance_scale"}``; answer: raw ``image/png`` bytes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.deps import BlobsDep, ClientDep, JobsDep, KioskDep, SettingsDep
from app.routers._respond import LIMITED_429
from app.schemas.errors import BAD_BODY, error_responses
from app.schemas.generation import KIOSK_EXAMPLES, KioskInpaintRequest

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
                           http_request: Request, kiosk: KioskDep, jobs: JobsDep,
                           blobs: BlobsDep, settings: SettingsDep,
                           client: ClientDep) -> Response:
    """Inpaint like the kiosk's original server: crop the painted region with padding,
    generate at the model's resolution, paste back. `model: 1` asks for DALL·E. The wish is
    translated to English first (`BILDWERK_KIOSK_TRANSLATE`, on by default); the record keeps
    it as typed and as translated.

    Where the original server was forgiving, so is this route (`/inpaint` stays strict):
    unknown fields are ignored; a mask of another size is resized to the image (nearest)
    and the record notes it; an empty mask (`""`, or nothing painted) answers the image
    unchanged; a wish with a quote or line break in the backend's hand-written (unescaped)
    JSON is read back by its fixed field order. The image may be larger than a model's limit (up to
    `BILDWERK_MAX_INPUT_SIDE`, 8192 px): only the crop around the painting is processed."""
    loop = asyncio.get_running_loop()
    repaired = bool(getattr(http_request.state, "kiosk_body_repaired", False))
    answer = await run_in_threadpool(kiosk.accept, body, loop, client, repaired)
    headers = {"X-Bildwerk-Record-Id": answer.record_id}
    if answer.png is not None:
        return Response(answer.png, media_type="image/png", headers=headers)
    result = await jobs.wait_result(answer.accepted.job, settings.sync_timeout_s,
                                    http_request.is_disconnected)
    return Response(blobs.read(result.images[0].sha256), media_type="image/png",
                    headers=headers)
