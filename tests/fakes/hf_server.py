"""A fake Hugging Face Inference API (provider ``hf-inference``) on 127.0.0.1 speaking the wire
format of ``huggingface_hub.InferenceClient`` 2.x:

- ``POST /models/{owner}/{name}`` with ``Authorization: Bearer <token>``,
  ``Accept: image/png`` and ``Content-Type: application/json``;
- text_to_image: ``{"inputs": prompt, "parameters": {width, height, seed, ...}}``;
- image_to_image: ``{"inputs": <base64 image>, "parameters": {prompt, ...}}`` (raw image bytes
  as the body when there are no parameters);
- answers: raw ``image/png`` bytes, or an error JSON ``{"error": ...}`` (503 cold starts add
  ``"estimated_time"``).

Tests script the answers (a queue; an empty queue answers a coloured PNG of the requested
size) and read back every request in ``fake.received``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

COLOR = (40, 160, 90)  # what the fake paints, so a result is recognisable


@dataclass
class Answer:
    kind: str = "ok"  # ok | black | cold | error | hang | garbage
    status: int = 200
    message: str = ""
    estimated_time: float | None = None
    seconds: float = 0.0


def ok() -> Answer:
    return Answer("ok")


def black() -> Answer:
    """What a safety filter sends: a valid, all-black PNG."""
    return Answer("black")


def cold(estimated_time: float | None = 0.01, message: str = "Model is currently loading"
         ) -> Answer:
    """A 503 while the model loads; ``estimated_time=None`` leaves the hint out."""
    return Answer("cold", 503, message, estimated_time)


def error(status: int = 500, message: str = "Internal Server Error") -> Answer:
    return Answer("error", status, message)


def hang(seconds: float) -> Answer:
    """Answer only after ``seconds`` (longer than the client's timeout)."""
    return Answer("hang", seconds=seconds)


def garbage() -> Answer:
    """200 image/png whose bytes are not an image."""
    return Answer("garbage")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    json: dict | None
    body: bytes

    @property
    def parameters(self) -> dict:
        return (self.json or {}).get("parameters", {})


@dataclass
class FakeHF:
    base_url: str = ""
    script: deque = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)

    def then(self, *answers: Answer) -> FakeHF:
        self.script.extend(answers)
        return self


def png(size: tuple[int, int], color=COLOR) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _size(parameters: dict) -> tuple[int, int]:
    target = parameters.get("target_size") or {}
    width = int(parameters.get("width") or target.get("width") or 64)
    height = int(parameters.get("height") or target.get("height") or 64)
    return width, height


def _app(fake: FakeHF) -> FastAPI:
    app = FastAPI()

    @app.post("/models/{model:path}")
    async def infer(model: str, request: Request) -> Response:
        body = await request.body()
        payload = None
        if request.headers.get("content-type", "").startswith("application/json"):
            payload = json.loads(body)
        got = Received(request.url.path, dict(request.headers), payload, body)
        fake.received.append(got)
        step = fake.script.popleft() if fake.script else Answer()
        if step.kind == "hang":
            await asyncio.sleep(step.seconds)
        if step.kind == "cold":
            content: dict = {"error": step.message}
            if step.estimated_time is not None:
                content["estimated_time"] = step.estimated_time
            return JSONResponse(content, status_code=503)
        if step.kind == "error":
            return JSONResponse({"error": step.message}, status_code=step.status)
        if step.kind == "garbage":
            return Response(b"\x00not a png at all\xff" * 8, media_type="image/png")
        color = (0, 0, 0) if step.kind == "black" else COLOR
        return Response(png(_size(got.parameters), color), media_type="image/png")

    return app


def decode_inputs_image(received: Received) -> Image.Image:
    """The image an image_to_image request carried (base64 in JSON, or the raw body)."""
    data = base64.b64decode(received.json["inputs"]) if received.json else received.body
    return Image.open(io.BytesIO(data))


@contextmanager
def fake_hf() -> Iterator[FakeHF]:
    """Run the fake on a free port for the duration of the block; always shut down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake = FakeHF(base_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(_app(fake), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(5)
        raise RuntimeError("the fake Hugging Face server did not start")
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(5)
