"""A fake Gemini Developer API on 127.0.0.1 speaking the routes google-genai calls.

- ``POST /v1beta/models/{model}:predict`` (Imagen) answers
  ``{"predictions": [{"bytesBase64Encoded": ..., "mimeType": "image/png"}, ...]}``
  (one per ``parameters.sampleCount``).
- ``POST /v1beta/models/{model}:generateContent`` answers
  ``{"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeType",
  "data"}}]}, "finishReason": "STOP"}], "usageMetadata": {...}, "modelVersion": ...}``.

  For a JSON request (``generationConfig.responseMimeType == "application/json"``, what the
  prompt expanders send) the part is text instead: ``{"prompts": [...]}`` with as many
  items as the last ``Count: N`` line of the user turns (or ``Scripted.count``), each
  prompt starting with the ``Wish:`` line's text. JSON kinds: ``ok``; ``repairable``
  (fenced, trailing commas); ``malformed`` (cut off); ``text`` (``Scripted.text`` as is);
  ``blocked`` (``promptFeedback.blockReason``); ``empty`` (finish reason, no content).

Errors use Google's envelope ``{"error": {"code", "message", "status"}}``. Tests script
answers in order with :meth:`FakeGemini.then` (unscripted requests get ``ok``) and read
what was received (method, path, lower-cased headers, JSON body) from ``received``.
A stdlib threading server, so a hanging answer never blocks the others; leaving the
``with`` block releases hangs and shuts the server down.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

COLOR = (30, 160, 90)  # what the fake paints
SIZE = (64, 48)
USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 1290, "totalTokenCount": 1301,
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}],
         "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}]}

ROUTE = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>predict|generateContent)$")


@dataclass
class Scripted:
    """One answer. kind: ok | error | hang | garbage | blocked | text | filtered | empty,
    and for JSON requests also repairable | malformed."""

    kind: str = "ok"
    status: int = 200
    message: str = ""
    seconds: float = 0.0
    text: str = ""
    reason: str = "SAFETY"
    count: int | None = None  # JSON answers: number of items (default: the Count: line)


@dataclass
class Received:
    method: str
    path: str
    model: str
    route: str  # "predict" | "generateContent" | ""
    headers: dict[str, str]
    body: dict | None


@dataclass
class FakeGemini:
    base_url: str = ""
    script: deque = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def then(self, *answers: Scripted) -> FakeGemini:
        self.script.extend(answers)
        return self

    def next_answer(self) -> Scripted:
        try:
            return self.script.popleft()
        except IndexError:
            return Scripted()


def png(size: tuple[int, int] = SIZE, color=COLOR) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _b64png() -> str:
    return base64.b64encode(png()).decode()


def google_error(code: int, message: str) -> dict:
    status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(code, "UNKNOWN")
    return {"error": {"code": code, "message": message, "status": status}}


def _predict(body: dict, step: Scripted) -> dict:
    n = int(((body or {}).get("parameters") or {}).get("sampleCount", 1))
    if step.kind == "blocked":
        return {}  # Imagen answers an empty object when the prompt itself is filtered
    if step.kind == "filtered":
        return {"predictions": [{"raiFilteredReason": step.text or "filtered by RAI"}]}
    if step.kind == "empty":
        return {"predictions": []}
    return {"predictions": [{"bytesBase64Encoded": _b64png(), "mimeType": "image/png"}
                            for _ in range(n)]}


def _generate_content(model: str, step: Scripted) -> dict:
    common = {"usageMetadata": USAGE, "modelVersion": model, "responseId": "fake-1"}
    if step.kind == "blocked":
        return {"promptFeedback": {"blockReason": step.reason},
                "usageMetadata": {"promptTokenCount": 11, "totalTokenCount": 11},
                "modelVersion": model}
    if step.kind == "text":
        return {"candidates": [{"content": {"role": "model", "parts": [
            {"text": step.text or "I can't make that image."}]}, "finishReason": "STOP",
            "index": 0}], **common}
    if step.kind == "empty":
        return {"candidates": [{"finishReason": step.reason, "index": 0}], **common}
    parts = []
    if step.text:
        parts.append({"text": step.text})
    parts.append({"inlineData": {"mimeType": "image/png", "data": _b64png()}})
    return {"candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": "STOP", "index": 0}], **common}


def _wish_and_count(body: dict) -> tuple[str, int]:
    """The ``Wish:`` and ``Count:`` lines of the latest user turn that has them."""
    for content in reversed((body or {}).get("contents") or []):
        if content.get("role", "user") != "user":
            continue
        text = "".join(part.get("text", "") for part in content.get("parts") or [])
        count = re.search(r"^Count: (\d+)", text, re.MULTILINE)
        if count:
            wish = re.search(r"^Wish: (.+)$", text, re.MULTILINE)
            return (wish.group(1).strip() if wish else "something"), int(count.group(1))
    return "something", 1


def prompts_answer(wish: str, count: int) -> dict:
    """A valid ``{"prompts": [...]}`` answer with ``count`` items about ``wish``."""
    return {"prompts": [{
        "title": f"Gemini Idea {i + 1}",
        "description": f"Picture {i + 1} of {wish}.",
        "metatags": ["gemini", f"variant {i + 1}", "fake"],
        "prompt": f"{wish}, gemini variant {i + 1}, soft morning light, detailed",
        "negative_prompt": "blurry, lowres" if i else "",
    } for i in range(count)]}


def is_json_request(body: dict | None) -> bool:
    config = (body or {}).get("generationConfig") or {}
    return config.get("responseMimeType") == "application/json"


def _json_content(model: str, body: dict, step: Scripted) -> dict:
    if step.kind in ("blocked", "empty"):
        return _generate_content(model, step)
    wish, count = _wish_and_count(body)
    answer = json.dumps(prompts_answer(wish, step.count if step.count is not None else count))
    text = answer
    if step.kind == "repairable":
        text = "```json\n" + answer.replace("]", ",]").replace("}", ",}") + "\n```"
    elif step.kind == "malformed":
        text = answer[: len(answer) // 2]
    elif step.kind == "text":
        text = step.text
    usage = {"promptTokenCount": 150, "candidatesTokenCount": 90, "thoughtsTokenCount": 20,
             "totalTokenCount": 260}
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": f"{model}-fake", "responseId": "fake-2"}


def _handler(fake: FakeGemini) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (timeout test)
                pass

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json; charset=UTF-8")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            match = ROUTE.match(path)
            fake.received.append(Received(
                method="POST", path=path, model=match["model"] if match else "",
                route=match["method"] if match else "",
                headers={k.lower(): v for k, v in self.headers.items()}, body=body))
            if not match:
                self._json(404, google_error(404, f"no route {path}"))
                return
            step = fake.next_answer()
            if step.kind == "hang":
                fake.release.wait(step.seconds or 30)
            if step.kind == "error":
                self._json(step.status, google_error(step.status, step.message or "bad"))
            elif step.kind == "garbage":
                self._send(200, b"<html>definitely not json", "application/json")
            elif match["method"] == "predict":
                self._json(200, _predict(body or {}, step))
            elif is_json_request(body):
                self._json(200, _json_content(match["model"], body, step))
            else:
                self._json(200, _generate_content(match["model"], step))

    return Handler


@contextmanager
def fake_gemini() -> Iterator[FakeGemini]:
    """Run the fake on a free port for the duration of the block."""
    fake = FakeGemini()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    server.block_on_close = False
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
