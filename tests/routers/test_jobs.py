"""Jobs: async flow, Server-Sent Events, cancel, and the bounded queue."""

from __future__ import annotations

import json

from tests.conftest import wait_for_job
from tests.utils.images import box_mask, data_url, scene

ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a harbour", "steps": 6, "width": 64, "height": 64, "seed": 2}
# Long enough to cancel mid-way on 2 CPU cores (about 150 steps at 256 px).
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 3}


def read_events(client, job_id: str) -> list[tuple[str, dict]]:
    events, name = [], None
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line.split(":", 1)[1])))
    return events


def test_respond_async_returns_202_with_location_then_the_result(client):
    r = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/jobs/{job_id}"
    assert r.json()["status"] in ("queued", "running")
    status = wait_for_job(client, job_id)
    assert status["status"] == "succeeded"
    assert status["progress"]["step"] == status["progress"]["total"] == 6
    image = status["result"]["images"][0]
    assert client.get(image["url"]).status_code == 200
    sync = client.post("/txt2img", json=FAST).json()
    assert sync["images"][0]["sha256"] == image["sha256"]


def test_sse_streams_progress_then_the_final_result(client):
    job_id = client.post("/txt2img", json={**FAST, "steps": 12}, headers=ASYNC).json()["job_id"]
    events = read_events(client, job_id)
    names = [name for name, _ in events]
    assert names[-1] == "succeeded"
    progress = [data["progress"] for name, data in events if name == "progress"
                and data["stage"] == "denoising"]
    assert progress and progress[-1] == {"step": 12, "total": 12}
    steps = [p["step"] for p in progress]
    assert steps == sorted(steps)
    final = events[-1][1]
    assert final["result"]["images"][0]["url"].startswith("/blobs/")


def test_progress_total_counts_the_steps_the_scheduler_really_runs(client):
    # Heun is second order: 5 steps run 9 denoising evaluations.
    job_id = client.post("/txt2img", json={**FAST, "steps": 5, "scheduler": "heun"},
                         headers=ASYNC).json()["job_id"]
    progress = [data["progress"] for name, data in read_events(client, job_id)
                if name == "progress" and data["stage"] == "denoising"]
    assert progress[-1]["step"] == progress[-1]["total"] == 9


def test_inpaint_progress_counts_only_the_steps_strength_leaves(client):
    body = {"prompt": "x", "image": data_url(scene(64, 64)), "steps": 10, "strength": 0.5,
            "mask": data_url(box_mask((64, 64), (8, 8, 30, 30))), "width": 64, "height": 64}
    job_id = client.post("/inpaint", json=body, headers=ASYNC).json()["job_id"]
    status = wait_for_job(client, job_id)
    assert status["status"] == "succeeded"
    assert (status["progress"]["step"], status["progress"]["total"]) == (5, 5)


def test_sse_for_a_finished_job_sends_its_final_state(client):
    job_id = client.post("/txt2img", json=FAST, headers=ASYNC).json()["job_id"]
    wait_for_job(client, job_id)
    events = read_events(client, job_id)
    assert [name for name, _ in events] == ["succeeded"]


def test_cancel_stops_a_running_job_and_the_worker_serves_the_next(client):
    job_id = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    wait_for_job(client, job_id, until=lambda s: s["progress"]["step"] >= 2)
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    status = wait_for_job(client, job_id)
    assert status["status"] == "cancelled"
    assert status["progress"]["step"] < status["progress"]["total"] == 150
    assert status["error"]["code"] == "cancelled"
    record = client.get(f"/records/{status['record_id']}").json()
    assert record["status"] == "cancelled" and record["outputs"] == []
    assert record["finished_at"] is not None
    assert client.post("/txt2img", json=FAST).status_code == 200
    assert client.delete(f"/jobs/{job_id}").status_code == 409


def test_cancelling_a_queued_job_records_it_cancelled(client):
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    queued = client.post("/txt2img", json=FAST, headers=ASYNC).json()["job_id"]
    assert client.delete(f"/jobs/{queued}").json()["status"] == "cancelled"
    client.delete(f"/jobs/{running}")
    wait_for_job(client, running)
    record = client.get(f"/jobs/{queued}").json()
    assert record["status"] == "cancelled"
    assert client.get(f"/records/{record['record_id']}").json()["status"] == "cancelled"


def test_full_queue_answers_429_with_retry_after_and_records_it(make_client):
    client = make_client(queue_max=1, retry_after_s=7)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    wait_for_job(client, running, until=lambda s: s["status"] == "running")
    waiting = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert waiting.status_code == 202
    refused = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert refused.json()["error"]["code"] == "queue_full"
    rejected = client.get("/records", params={"status": "rejected"}).json()
    assert rejected["total"] == 1 and rejected["items"][0]["error_code"] == "queue_full"
    client.delete(f"/jobs/{running}")
    assert wait_for_job(client, waiting.json()["job_id"])["status"] == "succeeded"


def test_unknown_job_is_a_404_envelope(client):
    for method in ("get", "delete"):
        r = getattr(client, method)("/jobs/does-not-exist")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/jobs/does-not-exist/events").status_code == 404


def test_finished_job_is_answered_from_its_record_after_a_restart(make_client):
    first = make_client()
    body = first.post("/txt2img", json=FAST).json()
    second = make_client()  # a new process image: same database, empty memory
    status = second.get(f"/jobs/{body['job_id']}").json()
    assert status["status"] == "succeeded"
    assert status["result"]["images"][0]["sha256"] == body["images"][0]["sha256"]
