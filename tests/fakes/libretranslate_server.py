"""A fake LibreTranslate server on 127.0.0.1 (stdlib http.server in a thread).

Speaks ``POST /translate`` with the parameters in the query string (how deep-translator sends
them), as a form or as JSON: ``q, source, target, format, api_key`` → ``{"translatedText": ...}``.
Answers come from a scripted dictionary; ``mode`` switches to failures ("error" → 500,
"forbidden" → 403, "hang" → no answer until ``hang_s`` passes or the server stops). Every request
is recorded in ``received``.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class FakeLibreTranslate:
    base_url: str = ""
    answers: dict[str, str] = field(default_factory=dict)  # q → translatedText
    mode: str = "ok"  # ok | error | forbidden | hang
    hang_s: float = 30.0
    received: list[dict] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


def _handler(fake: FakeLibreTranslate) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ctype = self.headers.get("Content-Type", "")
            if raw and "json" in ctype:
                params.update(json.loads(raw))
            elif raw:
                params.update(parse_qsl(raw.decode()))
            fake.received.append({"path": url.path, "params": params,
                                  "content_type": ctype, "headers": dict(self.headers)})
            if url.path != "/translate":
                return self._send(404, {"error": "Not Found"})
            if fake.mode == "hang":
                fake.stopping.wait(fake.hang_s)
                return None
            if fake.mode == "error":
                return self._send(500, {"error": "scripted failure"})
            if fake.mode == "forbidden":
                return self._send(403, {"error": "Invalid API key"})
            if not params.get("q"):
                return self._send(400, {"error": "Invalid request: missing q parameter"})
            text = fake.answers.get(params["q"], params["q"])
            return self._send(200, {"translatedText": text})

    return Handler


@contextmanager
def fake_libretranslate(answers: dict[str, str] | None = None):
    """Run the fake on a free port for the duration of the block; always shuts down."""
    fake = FakeLibreTranslate(answers=dict(answers or {}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-libretranslate",
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stopping.set()  # release hanging handlers
        server.shutdown()
        server.server_close()
        thread.join(5)
