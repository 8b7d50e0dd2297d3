"""Hostile request bodies and callers (issue 13, findings 1, 2, 5, 6 and 7): the key is
checked before a body is read, bodies are bounded in size, time and JSON shape before they
are parsed, deep nesting is a 422, a refused job stores nothing, and /prompt-expand counts
against the caller's limits.

Memory and /health latency under these bodies are measured by bench/hostile.py, not here."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest

from tests.security.conftest import bearer, make_key
from tests.utils.images import box_mask, data_url, png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

ASYNC = {"Prefer": "respond-async"}
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 1}
FAST = {"prompt": "fast", "steps": 1, "width": 64, "height": 64, "seed": 2}
IMAGE = data_url(scene(64, 64, seed=3))
MASK = data_url(box_mask((64, 64), (10, 10, 40, 40)))


def nested(n: int) -> str:
    return "[" + ",".join(["[]"] * n) + "]"


@pytest.fixture
def keyed(make_client):
    """An app that requires a key from everyone, and a ``generate`` key for it."""
    client = make_client(auth_mode="keys")
    _, secret = make_key(client, "gen", "generate")
    return client, bearer(secret)


@pytest.mark.parametrize("path", ["/txt2img", "/prompt-expand", "/inpainting/", "/inpaint",
                                  "/img2seq", "/records/some-id/feedback", "/models/merge"])
def test_without_a_key_a_broken_body_is_401_not_422(keyed, path):
    client, _ = keyed
    r = client.post(path, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_an_unknown_key_is_refused_before_the_body_is_looked_at(keyed):
    client, _ = keyed
    r = client.post("/txt2img", content=nested(100_000),
                    headers={**bearer("bw_not_a_key"), "content-type": "application/json"})
    assert r.status_code == 401


@pytest.mark.parametrize(("field", "body"), [
    ("packages", lambda big: {"packages": big}),
    ("motion.zoom", lambda big: {"motion": {"zoom": big}}),
    ("strength", lambda big: {"strength": big}),
    ("prompt_schedule", lambda big: {"prompt_schedule": {str(i): "x" for i in range(5000)}}),
])
def test_a_huge_list_in_an_img2seq_body_is_422_naming_the_field(keyed, field, body):
    client, auth = keyed
    payload = {"image": IMAGE, "prompt": "a harbour", **body(json.loads(nested(200_000)))}
    r = client.post("/img2seq", json=payload, headers=auth)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and error["param"] == field
    assert "at most 1024 entries" in error["message"]


def test_deep_nesting_in_a_json_body_is_422(keyed):
    client, auth = keyed
    body = '{"prompt": "x", "image": "' + IMAGE + '", "motion": {"zoom": ' + "[" * 1100 + \
        "]" * 1100 + "}}"
    r = client.post("/img2seq", content=body, headers={**auth,
                                                       "content-type": "application/json"})
    assert r.status_code == 422 and "nests deeper than 16" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/img2seq", "/inpaint"])
def test_deeply_nested_multipart_fields_are_422_not_500(keyed, path):
    client, auth = keyed
    files = {"image": ("a.png", png_bytes(scene(64, 64)), "image/png"),
             "mask": ("m.png", png_bytes(box_mask((64, 64), (1, 1, 9, 9))), "image/png")}
    if path == "/img2seq":
        files.pop("mask")
    r = client.post(path, headers=auth, files=files,
                    data={"prompt": "x", "motion": "[" * 1100, "loras": "[" * 1100})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    # the server keeps serving
    assert client.get("/health").status_code == 200


def test_a_form_field_that_merely_starts_with_a_bracket_is_text(keyed):
    client, auth = keyed
    r = client.post("/inpaint", headers={**auth, **ASYNC}, data={
        "prompt": "[a harbour] at dusk", "steps": "2", "seed": "1"}, files={
        "image": ("a.png", png_bytes(scene(64, 64)), "image/png"),
        "mask": ("m.png", png_bytes(box_mask((64, 64), (1, 1, 9, 9))), "image/png")})
    assert r.status_code == 202, r.text


def test_a_body_over_the_json_cap_of_a_route_without_images_is_413(make_client):
    client = make_client(max_json_body_bytes=4096)
    r = client.post("/txt2img", json={"prompt": "x" * 5000})
    assert r.status_code == 413
    assert "BILDWERK_MAX_JSON_BODY_BYTES" in r.json()["error"]["message"]
    # image routes keep the larger cap
    r = client.post("/inpaint", json={"prompt": "x", "image": IMAGE, "mask": MASK, "steps": 2},
                    headers=ASYNC)
    assert r.status_code == 202, r.text


def test_a_refused_job_stores_nothing_of_its_upload(make_client):
    client = make_client(queue_max=1)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{running}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post("/txt2img", json=FAST, headers=ASYNC).status_code == 202  # waits
    upload = png_bytes(scene(64, 64, seed=77))
    refused = client.post("/inpaint", headers=ASYNC, json={
        "prompt": "x", "image": data_url_of(upload), "mask": MASK, "steps": 2})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert client.get(f"/blobs/{hashlib.sha256(upload).hexdigest()}").status_code == 404
    rejected = client.get("/records", params={"status": "rejected"}).json()["items"]
    assert len(rejected) == 1 and rejected[0]["endpoint"] == "inpaint"
    assert rejected[0]["input_image_sha256"] is None
    client.delete(f"/jobs/{running}")


def data_url_of(raw: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(raw).decode()


def test_prompt_expand_counts_against_the_callers_job_limit(make_client):
    client = make_client(max_queued_per_key=1)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    r = client.post("/prompt-expand", json={"idea": "a lighthouse", "count": 1})
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs"
    client.delete(f"/jobs/{running}")
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{running}").json()["status"] not in ("cancelled", "succeeded"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post("/prompt-expand", json={"idea": "a lighthouse",
                                               "count": 1}).status_code == 200


def test_prompt_expand_is_rate_limited_by_default(make_client):
    client = make_client()
    assert client.app.state.settings.prompt_rate_limit == "30/minute"
    answers = [client.post("/prompt-expand", json={"idea": "a lighthouse", "count": 1,
                                                   "seed": i}).status_code
               for i in range(31)]
    assert answers[:30] == [200] * 30
    assert answers[30] == 429
    r = client.post("/prompt-expand", json={"idea": "a lighthouse", "count": 1})
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    # the generation routes are not limited by it
    assert client.post("/txt2img", json=FAST).status_code == 200


def test_a_trickling_body_is_cut_off_after_the_body_timeout(servers):
    server = servers(BILDWERK_BODY_TIMEOUT_S="1")
    host, port = server.base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 8:
        try:
            sock.send(b" ")
        except OSError:
            break
        sock.settimeout(0.5)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        if not data:
            break
        answer += data
        if b"request_timeout" in answer:  # the body may come in a later packet than the head
            break
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer
    assert time.monotonic() - started < 5
    assert server.get("/health").status_code == 200
