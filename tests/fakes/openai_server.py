"""A fake OpenAI images API on 127.0.0.1 that speaks the real wire format: JSON for
``/v1/images/generations``, multipart for ``/v1/images/edits``, base64 or URL answers.
Tests script its answers and read back what it received."""

from __future__ import annotations

import base64
import io
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
    kind: str = "ok"  # ok | url | error | hang | garbage | empty
    status: int = 200
    message: str = ""
    seconds: float = 0.0


@dataclass
class FakeOpenAI:
    base_url: str = ""
    script: deque = field(default_factory=deque)
    received: list = field(default_factory=list)

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

    @app.get("/files/{name}")
    async def file(name: str) -> Response:
        width, height = (int(v) for v in name.removesuffix(".png").split("x"))
        return Response(_png((width, height)), media_type="image/png")

    return app


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
        server.should_exit = True
        thread.join(5)
