"""The add-on's HTTP client (clients/blender/bildwerk_blender/http_client.py) outside
Blender: it imports nothing from Blender, so its error lines, 429 retries and SSE reading
are checked here against a small stub server, with or without a Blender installed.
(The add-on's flows run against the real server in test_addon_flows.py.)"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.blender.conftest import CLIENT_DIR

_spec = importlib.util.spec_from_file_location(
    "bildwerk_blender_http_client", CLIENT_DIR / "bildwerk_blender" / "http_client.py")
http_client = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(http_client)
BildwerkClient, BildwerkError = http_client.BildwerkClient, http_client.BildwerkError


class Handler(BaseHTTPRequestHandler):
    routes: dict = {}  # (method, path) -> list of (status, headers, body), used in turn
    seen: list = []

    def log_message(self, *args):
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Handler.seen.append((self.command, self.path, dict(self.headers), body))
        answers = Handler.routes.get((self.command, self.path))
        if not answers:
            status, headers, payload = 404, {}, {"error": {"code": "not_found",
                                                           "message": "route not found",
                                                           "param": None}}
        else:
            status, headers, payload = answers.pop(0) if len(answers) > 1 else answers[0]
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def stub() -> Iterator[str]:
    Handler.routes, Handler.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _error(code: str, message: str, param=None) -> dict:
    return {"error": {"code": code, "message": message, "param": param}}


def test_url_is_checked_and_completed() -> None:
    assert BildwerkClient("127.0.0.1:8000/").base_url == "http://127.0.0.1:8000"
    with pytest.raises(BildwerkError, match="No Bildwerk server URL"):
        BildwerkClient("  ")
    with pytest.raises(BildwerkError, match="Not a server URL"):
        BildwerkClient("ftp://host")


def test_one_line_joins_and_truncates() -> None:
    assert http_client.one_line("a\n  b\tc") == "a b c"
    assert len(http_client.one_line("x" * 1000)) == http_client.MAX_MESSAGE


def test_server_down_is_one_clear_line() -> None:
    with pytest.raises(BildwerkError) as info:
        BildwerkClient("http://127.0.0.1:9", timeout=2).models()
    assert str(info.value) == ("Cannot reach Bildwerk at http://127.0.0.1:9: connection "
                               "refused (is the server running?)")


def test_error_envelope_becomes_the_message(stub: str) -> None:
    Handler.routes[("POST", "/txt2img")] = [(422, {}, _error(
        "invalid_input", "width: must be a multiple of 8", "width"))]
    with pytest.raises(BildwerkError) as info:
        BildwerkClient(stub).post_json("/txt2img", {"prompt": "x", "width": 65})
    assert str(info.value) == ("Bildwerk rejected the request (422 invalid_input): width: "
                               "must be a multiple of 8")
    assert (info.value.status, info.value.code, info.value.param) == (422, "invalid_input",
                                                                      "width")


def test_401_says_what_to_do_and_the_key_is_sent(stub: str) -> None:
    Handler.routes[("GET", "/models")] = [(401, {"WWW-Authenticate": "Bearer"},
                                           _error("unauthorized", "unknown API key"))]
    with pytest.raises(BildwerkError, match=r"^Bildwerk refused the API key \(401 "
                                            r"unauthorized\): set a valid key"):
        BildwerkClient(stub, "bw_secret").models()
    assert Handler.seen[0][2]["Authorization"] == "Bearer bw_secret"


def test_429_waits_for_retry_after_then_succeeds(stub: str) -> None:
    Handler.routes[("GET", "/models")] = [
        (429, {"Retry-After": "2"}, _error("queue_full", "the queue is full")),
        (200, {}, [{"id": "m"}])]
    waited: list[float] = []
    client = BildwerkClient(stub, sleep=waited.append)
    assert client.models() == [{"id": "m"}]
    assert len(Handler.seen) == 2
    assert 1.9 <= sum(waited) <= 2.5


def test_429_gives_up_after_the_retries(stub: str) -> None:
    Handler.routes[("POST", "/txt2img")] = [(429, {"Retry-After": "0"},
                                             _error("too_many_jobs", "too many jobs"))]
    with pytest.raises(BildwerkError) as info:
        BildwerkClient(stub, retries=2, sleep=lambda s: None).post_json("/txt2img", {})
    assert str(info.value) == "Bildwerk is busy (429 too_many_jobs) after 2 retries: too many jobs"
    assert len(Handler.seen) == 3


def test_cancel_while_waiting_for_a_busy_server(stub: str) -> None:
    Handler.routes[("GET", "/models")] = [(503, {"Retry-After": "30"},
                                           _error("shutting_down", "restarting"))]
    client = BildwerkClient(stub, should_stop=lambda: True, sleep=lambda s: None)
    with pytest.raises(http_client.Cancelled):
        client.models()


def _sse(*events: tuple[str, dict]) -> bytes:
    out = b": ping\r\n\r\n"
    for name, data in events:
        text = json.dumps(data, indent=1)  # several data: lines, joined again by the client
        out += f"event: {name}\r\n".encode()
        out += b"".join(f"data: {line}\r\n".encode() for line in text.splitlines()) + b"\r\n"
    return out


def test_a_job_followed_over_sse(stub: str) -> None:
    job = {"job_id": "j1", "record_id": "r1", "status": "queued"}
    result = {"record_id": "r1", "images": [{"sha256": "ab", "url": "/blobs/ab", "seed": 3}]}
    Handler.routes[("POST", "/txt2img")] = [(202, {"Location": "/jobs/j1"}, job)]
    Handler.routes[("GET", "/jobs/j1/events")] = [(200, {"Content-Type": "text/event-stream"},
                                                   _sse(("status", job),
                                                        ("progress", {"progress": {
                                                            "step": 1, "total": 2}}),
                                                        ("succeeded", {"status": "succeeded",
                                                                       "result": result})))]
    events: list[str] = []
    submitted: list[dict] = []
    final = BildwerkClient(stub).run_job("/txt2img", {"prompt": "x"},
                                         lambda e, d: events.append(e), submitted.append)
    assert final["result"] == result
    assert events == ["status", "progress", "succeeded"]
    assert submitted == [job]
    assert Handler.seen[0][2]["Prefer"] == "respond-async"


def test_a_broken_stream_falls_back_to_polling(stub: str) -> None:
    Handler.routes[("GET", "/jobs/j2/events")] = [(200, {"Content-Type": "text/event-stream"},
                                                   _sse(("status", {"status": "running"})))]
    Handler.routes[("GET", "/jobs/j2")] = [
        (200, {}, {"status": "running", "progress": {"step": 1, "total": 2}}),
        (200, {}, {"status": "cancelled", "result": {"frames": [{"index": 0}]}})]
    final = BildwerkClient(stub, sleep=lambda s: None).follow("j2")
    assert final["status"] == "cancelled" and final["result"]["frames"] == [{"index": 0}]


def test_a_failed_job_raises_its_error(stub: str) -> None:
    Handler.routes[("POST", "/img2seq")] = [(202, {}, {"job_id": "j3", "status": "queued"})]
    Handler.routes[("GET", "/jobs/j3/events")] = [(200, {"Content-Type": "text/event-stream"},
                                                   _sse(("failed", {"status": "failed", "error": {
                                                       "code": "out_of_memory",
                                                       "message": "CUDA out of memory"}})))]
    with pytest.raises(BildwerkError, match=r"^The job failed: CUDA out of memory "
                                            r"\(out_of_memory\)$"):
        BildwerkClient(stub).run_job("/img2seq", {})


def test_cancelling_a_finished_job_is_not_an_error(stub: str) -> None:
    Handler.routes[("DELETE", "/jobs/j4")] = [(409, {}, _error("conflict", "already done"))]
    assert BildwerkClient(stub).cancel("j4") is None


def test_an_answer_that_is_not_json(stub: str) -> None:
    Handler.routes[("GET", "/health")] = [(200, {"Content-Type": "text/html"}, b"<html>")]
    with pytest.raises(BildwerkError, match="did not answer JSON: is this a Bildwerk server"):
        BildwerkClient(stub).health()
