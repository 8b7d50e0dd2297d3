"""A fake OpenAI API on 127.0.0.1 that speaks the real wire format: JSON for
``/v1/images/generations``, multipart for ``/v1/images/edits``, base64 or URL answers, and
``/v1/chat/completions`` (chat completion objects) for the prompt expanders.
Tests script its answers and read back what it received.

Chat answers (:meth:`Scripted` kinds): ``ok`` builds ``{"prompts": [...]}`` with as many
items as the last ``Count: N`` line of the user messages (or ``Scripted.count``), each
prompt starting with the ``Wish:`` line's text; ``repairable`` is the same JSON in a
```json fence with trailing commas; ``malformed`` is cut-off JSON; ``refusal`` sets
``message.refusal``; ``error`` answers ``status`` with OpenAI's error envelope; ``hang``
waits ``seconds`` (without blocking other requests); ``text`` answers ``Scripted.text``
as the message content; ``garbage`` is a body that is not JSON.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

COLOR = (200, 30, 40)  # what the fake paints, so a pasted result is recognisable


@dataclass
class Scripted:
    # images: ok | url | error | hang | garbage | empty
    # chat: ok | repairable | malformed | refusal | error | hang | text | garbage | empty
    kind: str = "ok"
    status: int = 200
    message: str = ""
    seconds: float = 0.0
    count: int | None = None  # chat: items in an ok/repairable answer (default: Count: N)
    text: str = ""  # chat: the content of a "text" answer


@dataclass
class FakeOpenAI:
    base_url: str = ""
    script: deque = field(default_factory=deque)
    received: list = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def then(self, *answers: Scripted) -> FakeOpenAI:
        self.script.extend(answers)
        return self


def _png(size: tuple[int, int], color=COLOR) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _app(fake: FakeOpenAI) -> FastAPI:
    app = FastAPI()

    async def answer(body: dict, files: dict, path: str, headers: dict) -> Response:
        fake.received.append({"path": path, "body": body, "files": files, "headers": headers})
        step = fake.script.popleft() if fake.script else Scripted()
        width, height = (int(v) for v in str(body.get("size", "256x256")).split("x"))
        n = int(body.get("n", 1))
        if step.kind == "hang":
            time.sleep(step.seconds)
        if step.kind == "error":
            return JSONResponse({"error": {"message": step.message or "bad", "type":
                                           "invalid_request_error", "code": None}},
                                status_code=step.status)
        if step.kind == "garbage":
            return JSONResponse({"created": 1, "data": [{"b64_json": "@@not base64@@"}]})
        if step.kind == "empty":
            return JSONResponse({"created": 1, "data": []})
        if step.kind == "url":
            return JSONResponse({"created": 1, "data": [
                {"url": f"{fake.base_url}/files/{width}x{height}.png"}] * n})
        data = [{"b64_json": base64.b64encode(_png((width, height))).decode(),
                 "revised_prompt": body.get("prompt")}] * n
        payload = {"created": 1, "data": data}
        if body.get("model") == "gpt-image-1":
            payload["usage"] = {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
                                "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}}
        return JSONResponse(payload)

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Response:
        return await answer(await request.json(), {}, request.url.path, dict(request.headers))

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> Response:
        form = await request.form()
        body, files = {}, {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                files[key] = await value.read()
            else:
                body[key] = value
        return await answer(body, files, request.url.path, dict(request.headers))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        fake.received.append({"path": request.url.path, "body": body, "files": {},
                              "headers": dict(request.headers)})
        step = fake.script.popleft() if fake.script else Scripted()
        return await _chat_answer(fake, body, step)

    @app.get("/files/{name}")
    async def file(name: str) -> Response:
        width, height = (int(v) for v in name.removesuffix(".png").split("x"))
        return Response(_png((width, height)), media_type="image/png")

    return app


def _wish_and_count(body: dict) -> tuple[str, int]:
    """The ``Wish:`` and ``Count:`` lines of the latest user message that has them."""
    for message in reversed(body.get("messages") or []):
        content = message.get("content") if message.get("role") == "user" else None
        count = re.search(r"^Count: (\d+)", content or "", re.MULTILINE)
        if count:
            wish = re.search(r"^Wish: (.+)$", content, re.MULTILINE)
            return (wish.group(1).strip() if wish else "something"), int(count.group(1))
    return "something", 1


def prompts_answer(wish: str, count: int) -> dict:
    """A valid ``{"prompts": [...]}`` answer with ``count`` items about ``wish``."""
    return {"prompts": [{
        "title": f"Fake Idea {i + 1}",
        "description": f"Picture {i + 1} of {wish}.",
        "metatags": ["Fake", f"Variant {i + 1}", "fake", " #Test "],
        "prompt": f"{wish}, fake variant {i + 1}, golden hour, highly detailed",
        "negative_prompt": "blurry, lowres" if i else "",
    } for i in range(count)]}


async def _chat_answer(fake: FakeOpenAI, body: dict, step: Scripted) -> Response:
    if step.kind == "hang":
        deadline = time.monotonic() + step.seconds
        while time.monotonic() < deadline and not fake.release.is_set():
            await asyncio.sleep(0.02)
    if step.kind == "error":
        return JSONResponse({"error": {"message": step.message or "bad", "type":
                                       "invalid_request_error", "code": None}},
                            status_code=step.status)
    if step.kind == "garbage":
        return Response(b"<html>definitely not json", media_type="application/json")
    wish, count = _wish_and_count(body)
    answer = json.dumps(prompts_answer(wish, step.count if step.count is not None else count))
    content, refusal = answer, None
    if step.kind == "repairable":
        content = "```json\n" + answer.replace("]", ",]").replace("}", ",}") + "\n```"
    elif step.kind == "malformed":
        content = answer[: len(answer) // 2]
    elif step.kind == "text":
        content = step.text
    elif step.kind == "refusal":
        content, refusal = None, step.message or "I'm sorry, I can't help with that."
    elif step.kind == "empty":
        content = None
    return JSONResponse({
        "id": f"chatcmpl-fake-{len(fake.received)}", "object": "chat.completion",
        "created": 1, "model": f"{body.get('model')}-fake", "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": refusal,
                                 "annotations": []}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200,
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    })


@contextmanager
def fake_openai():
    """Run the fake on a free port for the duration of the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake = FakeOpenAI(base_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(_app(fake), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        thread.join(5)
