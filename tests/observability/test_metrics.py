"""GET /metrics: the Prometheus text format, who may read it, and the series moving with
real jobs (app/observability/metrics.py). The metrics are process-wide, so every check is
a difference from what the test saw first."""

from __future__ import annotations

import time

from tests.conftest import wait_for_job
from tests.observability.helpers import SERIES, samples, value
from tests.security.conftest import REMOTE, bearer, make_key

ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a harbour", "steps": 2, "width": 64, "height": 64, "seed": 2}
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 3}
DURATION = "bildwerk_job_duration_seconds_count"
QUEUED = "bildwerk_job_queue_seconds_count"


def scrape(client, **kwargs) -> str:
    r = client.get("/metrics", **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def poll(client, check, timeout: float = 60.0) -> str:
    """Scrape until ``check(text)`` holds (the worker updates a gauge just after the job's
    status changes)."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(client)
        if check(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_metrics_serve_every_series_in_the_prometheus_format(client):
    client.get("/health")
    text = poll(client, lambda t: value(t, "http_requests_total", handler="/health"))
    for name in (*SERIES, "http_requests_total", "http_request_duration_seconds"):
        assert f"# TYPE {name} " in text, name
    assert samples(text)  # parses as the text exposition format
    assert value(text, "http_requests_total", handler="/health") >= 1


def test_metrics_need_admin_or_a_keyless_loopback_caller(client, make_client):
    from fastapi.testclient import TestClient

    assert client.get("/metrics").status_code == 200  # loopback, no key exists yet
    _, generate = make_key(client, "blender", "generate")
    _, admin = make_key(client, "ops", "admin")
    outside = TestClient(client.app, client=REMOTE)
    assert outside.get("/metrics").status_code == 401
    denied = outside.get("/metrics", headers=bearer(generate))
    assert denied.status_code == 403 and "'admin'" in denied.json()["error"]["message"]
    assert outside.get("/metrics", headers=bearer(admin)).status_code == 200
    # a Prometheus on the same host, without a key, once keys exist (auth mode auto)
    assert client.get("/metrics").status_code == 200
    # a non-admin key is not enough even from loopback
    assert client.get("/metrics", headers=bearer(generate)).status_code == 403
    strict = make_client(auth_mode="keys")
    assert strict.get("/metrics").status_code == 401
    _, strict_admin = make_key(strict, "ops", "admin")
    assert strict.get("/metrics", headers=bearer(strict_admin)).status_code == 200


def test_metrics_can_be_turned_off(make_client):
    client = make_client(metrics=False)
    assert client.get("/metrics").status_code == 404
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_a_txt2img_counts_in_the_job_histograms(client):
    labels = {"endpoint": "txt2img", "model": "tiny-sd15", "status": "succeeded"}
    before = scrape(client)
    r = client.post("/txt2img", json=FAST)
    assert r.status_code == 200, r.text
    after = scrape(client)
    assert value(after, DURATION, **labels) == value(before, DURATION, **labels) + 1
    assert value(after, QUEUED) >= value(before, QUEUED) + 1
    # the HTTP middleware counts a request once its answer is sent
    assert value(poll(client, lambda t: value(t, "http_requests_total", handler="/txt2img")),
                 "http_requests_total", handler="/txt2img", method="POST") >= 1


def test_running_and_waiting_jobs_show_then_leave(client):
    base = scrape(client)
    running0 = value(base, "bildwerk_jobs_running")
    depth0 = value(base, "bildwerk_queue_depth", model="tiny-sd15")
    cancelled0 = value(base, DURATION, endpoint="txt2img", status="cancelled")
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    wait_for_job(client, running, until=lambda s: s["progress"]["step"] >= 1)
    queued = client.post("/txt2img", json=FAST, headers=ASYNC).json()["job_id"]
    text = scrape(client)
    assert value(text, "bildwerk_jobs_running") == running0 + 1
    assert value(text, "bildwerk_queue_depth", model="tiny-sd15") == depth0 + 1
    assert client.delete(f"/jobs/{queued}").status_code == 200
    assert client.delete(f"/jobs/{running}").status_code == 200
    assert wait_for_job(client, running)["status"] == "cancelled"
    text = poll(client, lambda t: value(t, "bildwerk_jobs_running") == running0)
    assert value(text, "bildwerk_jobs_running") == running0
    assert value(text, "bildwerk_queue_depth", model="tiny-sd15") == depth0
    assert value(text, DURATION, endpoint="txt2img", status="cancelled") == cancelled0 + 1


def test_a_model_load_is_timed(client):
    before = value(scrape(client), "bildwerk_model_load_seconds_count", model="tiny-sd21")
    r = client.post("/models/tiny-sd21/load")
    assert r.status_code == 200, r.text
    after = value(scrape(client), "bildwerk_model_load_seconds_count", model="tiny-sd21")
    assert after == before + 1


def test_model_labels_come_from_the_plan():
    from app.observability.metrics import job_model, plan_model

    class Entry:
        id = "tiny-sd15"

    class Work:
        entry, chain, remote_model = Entry(), ("local",), None

    class Plan:
        work, remote, endpoint = Work(), False, "txt2img"

    class RemoteWork:
        entry, chain, remote_model = None, ("openai",), "gpt-image-1"

    class RemotePlan:
        work, remote, endpoint = RemoteWork(), True, "txt2img"

    class Job:
        def __init__(self, model=None):
            self.model = model

    assert plan_model(Plan()) == "tiny-sd15"
    assert plan_model(RemotePlan()) == "gpt-image-1"
    assert job_model(Job("tiny-sd15")) == "tiny-sd15"
    assert job_model(Job()) == "unknown"
