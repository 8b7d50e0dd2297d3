"""Limits enforced before any work starts: prompt length, jobs per caller, the rate limit;
and the CORS allowlist."""

from __future__ import annotations

import time
import uuid

import pytest

from app import ratelimit
from tests.conftest import wait_for_job
from tests.utils.images import box_mask, data_url, scene

ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a mill", "steps": 2, "width": 64, "height": 64, "seed": 1}
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 3}
IMAGE, MASK = data_url(scene(64, 64)), data_url(box_mask((64, 64), (8, 8, 40, 40)))
KIOSK = "https://kiosk.example"


def records_total(client) -> int:
    return client.get("/records").json()["total"]


def key(client, name: str) -> dict:
    _, secret = client.app.state.keys.create(name, ["generate", "read"])
    return {"X-API-Key": secret}


# -- prompt length ------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint, body, param", [
    ("/txt2img", {**FAST, "prompt": "x" * 51}, "prompt"),
    ("/txt2img", {**FAST, "negative_prompt": "x" * 51}, "negative_prompt"),
    ("/inpaint", {**FAST, "image": IMAGE, "mask": MASK, "prompt": "x" * 51}, "prompt"),
    ("/inpainting/", {"prompt": "x" * 51, "image": IMAGE, "mask": MASK}, "prompt"),
    ("/img2seq", {"image": IMAGE, "frames": 2, "steps": 2,
                  "prompt_schedule": {"0": "ok", "1": "x" * 51}}, "prompt_schedule.1"),
    ("/prompt-expand", {"idea": "x" * 51}, "idea"),
    ("/prompt-expand", {"script": "a lake\n" + "y" * 501}, "script"),
])
def test_prompts_over_max_prompt_chars_are_422_and_only_the_refusal_is_recorded(
        make_client, endpoint, body, param):
    client = make_client(max_prompt_chars=50)
    r = client.post(endpoint, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and error["param"] == param
    assert "BILDWERK_MAX_PROMPT_CHARS" in error["message"]
    records = client.get("/records").json()["items"]
    if endpoint == "/prompt-expand":
        assert records == []  # nothing ran
        return
    [record] = records  # an image route records the refusal, and nothing else
    assert record["status"] == "rejected" and "BILDWERK_MAX_PROMPT_CHARS" in record[
        "error_message"] and record["outputs"] == []


def test_prompts_at_the_limit_pass_and_a_script_may_be_ten_times_longer(make_client):
    client = make_client(max_prompt_chars=50)
    assert client.post("/txt2img", json={**FAST, "prompt": "x" * 50}).status_code == 200
    script = "\n".join(["a lake in the hills " * 2] * 12)  # 491 characters, 12 scenes
    assert 50 < len(script) <= 500
    assert client.post("/prompt-expand", json={"script": script}).status_code == 200


# -- jobs per caller ----------------------------------------------------------------------
def test_a_caller_may_have_max_queued_per_key_jobs_then_429_too_many_jobs(make_client):
    client = make_client(max_queued_per_key=2, retry_after_s=9)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    waiting = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert waiting.status_code == 202
    refused = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "9"
    assert refused.json()["error"]["code"] == "too_many_jobs"
    assert records_total(client) == 3  # the refusal is recorded, without its inputs
    refusal = client.get("/records", params={"status": "rejected"}).json()["items"]
    assert [r["error_code"] for r in refusal] == ["too_many_jobs"]
    # A job cancelled while waiting stops counting at once.
    client.delete(f"/jobs/{waiting.json()['job_id']}")
    again = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert again.status_code == 202
    # Other routes that queue count too; a finished job frees its place.
    seq = {"image": IMAGE, "prompt": "x", "frames": 2, "steps": 2}
    assert client.post("/img2seq", json=seq, headers=ASYNC).status_code == 429
    client.delete(f"/jobs/{running}")
    wait_for_job(client, again.json()["job_id"])
    assert client.post("/img2seq", json=seq, headers=ASYNC).status_code == 202


def test_the_job_limit_counts_per_api_key(make_client):
    client = make_client(max_queued_per_key=1)
    alice, bob = key(client, "alice"), key(client, "bob")
    running = client.post("/txt2img", json=SLOW, headers={**ASYNC, **alice}).json()["job_id"]
    r = client.post("/txt2img", json=FAST, headers={**ASYNC, **alice})
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs"
    bobs = client.post("/txt2img", json=FAST, headers={**ASYNC, **bob})
    assert bobs.status_code == 202
    assert client.delete(f"/jobs/{running}", headers=alice).status_code == 200


def test_zero_means_no_job_limit(make_client):
    client = make_client(max_queued_per_key=0, queue_max=8)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    codes = [client.post("/txt2img", json=FAST, headers=ASYNC).status_code for _ in range(6)]
    assert codes == [202] * 6
    client.delete(f"/jobs/{running}")


# -- rate limit ---------------------------------------------------------------------------
def test_the_rate_limit_answers_429_with_retry_after_and_spares_health(make_client):
    client = make_client(rate_limit="3/minute")
    for _ in range(3):
        assert client.post("/prompt-expand", json={"idea": "a lake"}).status_code == 200
    r = client.post("/prompt-expand", json={"idea": "a lake"})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # The generation routes share the caller's budget; nothing was recorded or queued.
    before = records_total(client)
    r = client.post("/txt2img", json=FAST)
    assert r.status_code == 429 and "retry-after" in r.headers
    assert records_total(client) == before
    for path in ("/health", "/ready", "/styles", "/models", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_the_window_frees_after_retry_after(make_client):
    client = make_client(rate_limit="2/second")
    body = {"idea": "a lake"}
    assert [client.post("/prompt-expand", json=body).status_code for _ in range(3)] == [
        200, 200, 429]
    time.sleep(1.1)
    assert client.post("/prompt-expand", json=body).status_code == 200


def test_the_rate_limit_counts_per_api_key(make_client):
    client = make_client(rate_limit="1/minute")
    alice, bob = key(client, "alice"), key(client, "bob")
    assert client.post("/prompt-expand", json={"idea": "x"}, headers=alice).status_code == 200
    assert client.post("/prompt-expand", json={"idea": "x"}, headers=alice).status_code == 429
    assert client.post("/prompt-expand", json={"idea": "x"}, headers=bob).status_code == 200


@pytest.fixture
def redis_url() -> str:
    url = "redis://127.0.0.1:6379/0"
    limiter = ratelimit.RateLimiter("1/second", url)
    if not limiter.reachable():
        pytest.skip(f"Redis unreachable at {url}")
    return url


def test_the_rate_limit_can_count_in_redis(make_client, redis_url, monkeypatch):
    monkeypatch.setattr(ratelimit, "NAMESPACE", f"bildwerk-test-{uuid.uuid4().hex}")
    first = make_client(rate_limit="2/minute", rate_limit_storage=redis_url)
    second = make_client(rate_limit="2/minute", rate_limit_storage=redis_url)
    body = {"idea": "a lake"}
    assert first.post("/prompt-expand", json=body).status_code == 200
    assert second.post("/prompt-expand", json=body).status_code == 200  # shared counter
    r = first.post("/prompt-expand", json=body)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_an_unreachable_limiter_store_lets_requests_through(make_client, caplog):
    client = make_client(rate_limit="1/minute", rate_limit_storage="redis://127.0.0.1:1/0")
    assert client.post("/prompt-expand", json={"idea": "x"}).status_code == 200
    assert client.post("/prompt-expand", json={"idea": "x"}).status_code == 200
    assert "rate limiter storage failed" in caplog.text


def test_a_bad_rate_limit_setting_fails_at_startup(make_settings):
    with pytest.raises(ValueError, match="BILDWERK_RATE_LIMIT"):
        make_settings(rate_limit="lots")


# -- CORS ---------------------------------------------------------------------------------
def test_cors_answers_allowed_origins_only(make_client):
    client = make_client(cors_origins=[KIOSK, "http://127.0.0.1:5173/"])
    allowed = client.get("/health", headers={"Origin": KIOSK})
    assert allowed.headers["access-control-allow-origin"] == KIOSK
    assert "access-control-allow-credentials" not in allowed.headers
    trailing = client.get("/health", headers={"Origin": "http://127.0.0.1:5173"})
    assert trailing.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    r = client.post("/inpainting/", headers={"Origin": KIOSK},
                    json={"prompt": "x", "image": IMAGE, "mask": MASK})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == KIOSK
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"location", "retry-after", "x-bildwerk-record-id"} <= exposed


def test_a_preflight_from_the_kiosk_is_answered(make_client):
    client = make_client(cors_origins=[KIOSK])
    r = client.options("/inpainting/", headers={
        "Origin": KIOSK, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization, x-api-key, prefer"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == KIOSK
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    for header in ("content-type", "authorization", "x-api-key", "prefer"):
        assert header in allowed
    refused = client.options("/inpainting/", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_errors_carry_cors_headers_so_the_page_can_read_them(make_client):
    client = make_client(cors_origins=[KIOSK], max_body_bytes=1024, rate_limit="1/minute")
    too_big = client.post("/txt2img", headers={"Origin": KIOSK},
                          json={**FAST, "prompt": "x" * 2000})
    assert too_big.status_code == 413
    assert too_big.headers["access-control-allow-origin"] == KIOSK
    client.post("/prompt-expand", json={"idea": "x"}, headers={"Origin": KIOSK})
    limited = client.post("/prompt-expand", json={"idea": "x"}, headers={"Origin": KIOSK})
    assert limited.status_code == 429 and limited.headers["access-control-allow-origin"] == KIOSK


def test_without_origins_no_cors_headers_are_sent(client):
    r = client.get("/health", headers={"Origin": KIOSK})
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/txt2img", headers={"Origin": KIOSK,
                                            "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("value, expected", [
    ("https://a.example, http://127.0.0.1:5173/", ["https://a.example", "http://127.0.0.1:5173"]),
    ('["https://a.example"]', ["https://a.example"]),
    ("*", ["*"]),
    ("", []),
])
def test_cors_origins_from_the_environment(monkeypatch, value, expected):
    from app.config import Settings

    monkeypatch.setenv("BILDWERK_CORS_ORIGINS", value)
    assert Settings(_env_file=None).cors_origins == expected


def test_a_cors_origin_with_a_path_is_refused(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("BILDWERK_CORS_ORIGINS", "https://a.example/kiosk")
    with pytest.raises(ValueError, match="not an origin"):
        Settings(_env_file=None)
