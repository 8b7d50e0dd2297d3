"""``stream=true``: a job's step previews and result as OpenAI's Server-Sent Events.

Events (``event:`` is the type, ``data:`` the SDK's event object as JSON):

1. up to ``partial_images`` ``<kind>.partial_image`` events, one per step preview the
   job makes (``GenerationService.accept_*(…, previews=N)``: N previews spread over the
   denoising; a short run makes fewer, never one on the last step). Edits' previews show
   the region being processed (the crop at the processing size, not pasted into the
   image), as they come from the pipeline;
2. one ``<kind>.completed`` event per image once the job succeeded;
3. or, if the job fails after the stream began, one ``error`` event with OpenAI's error
   object, which the SDK raises as ``openai.APIError``.

``kind`` is ``image_generation`` or ``image_edit``. Errors found before the job is queued
(a bad size, an unknown model) are ordinary error answers, not streams. A client that
disconnects ends the stream; the job goes on and is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool
from PIL import Image

from app.compat.openai_images.answers import AnswerFormat, completed_event, partial_event
from app.compat.openai_images.errors import openai_error
from app.errors import BildwerkError
from app.jobs.job import TERMINAL, Job
from app.persistence.blobs import BlobStore
from app.services.jobs import JobService


def _sse(event: dict) -> dict:
    return {"event": event["type"], "data": json.dumps(event)}


def _size(png: bytes) -> str:
    with Image.open(io.BytesIO(png)) as image:
        return f"{image.width}x{image.height}"


async def image_events(kind: str, job: Job, queue: asyncio.Queue, jobs: JobService,
                       blobs: BlobStore, fmt: AnswerFormat, partial_images: int,
                       timeout: float) -> AsyncIterator[dict]:
    """The SSE events of ``job``, whose events ``queue`` receives (subscribed as soon as
    the job was accepted; unsubscribed here), see the module's description."""
    deadline = time.monotonic() + timeout
    sent, last = 0, -1

    async def partial(png: bytes) -> dict:
        return _sse(await run_in_threadpool(partial_event, kind, png, sent, _size(png), fmt))

    try:
        preview = job.preview  # one made before we subscribed (a fast job)
        if partial_images and preview is not None and queue.empty():
            last = preview.index
            yield await partial(preview.png)
            sent += 1
        while time.monotonic() < deadline:
            if job.finished and queue.empty():
                await asyncio.sleep(0)  # let the loop deliver events the worker sent before
                if queue.empty():
                    break
            try:
                event, data = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                continue
            if event == "preview" and data["index"] > last and sent < partial_images:
                last = data["index"]
                yield await partial(base64.b64decode(data["png_base64"]))
                sent += 1
            elif event in TERMINAL:
                break
        result = await jobs.wait_result(job, max(0.0, deadline - time.monotonic()))
        for index in range(len(result.images)):
            yield _sse(await run_in_threadpool(completed_event, kind, result, index, blobs,
                                               fmt))
    except BildwerkError as exc:
        _, body = openai_error(exc.status_code, exc.code, exc.message, exc.param)
        yield {"event": "error", "data": json.dumps({"type": "error", **body})}
    finally:
        job.unsubscribe(queue)
