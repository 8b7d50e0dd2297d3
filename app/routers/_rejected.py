"""A generation request whose body does not validate is recorded too (status ``rejected``,
the reason, the prompt and whatever inputs could be decoded): the hook the validation
error handler (:mod:`app.errors`) and :func:`app.routers._body.parse_body` call."""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from app.deps import client_of
from app.errors import BildwerkError

# the routes whose refused bodies are recorded, and the endpoint their records name
RECORDED_PATHS = {"/txt2img": "txt2img", "/img2img": "img2img", "/inpaint": "inpaint",
                  "/inpainting/": "inpainting", "/inpainting": "inpainting",
                  "/img2seq": "img2seq", "/upscale": "upscale"}


async def record_refused_body(request: Request, body: object, error: BildwerkError) -> None:
    endpoint = RECORDED_PATHS.get(request.url.path)
    admission = getattr(request.app.state, "admission", None)
    if endpoint is None or admission is None:
        return
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            body = {}
    client = client_of(request, getattr(request.state, "principal", None))
    await run_in_threadpool(admission.rejections.record, endpoint, body, client, error)
