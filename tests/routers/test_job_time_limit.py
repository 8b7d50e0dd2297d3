"""BILDWERK_JOB_TIMEOUT_S: a job that runs longer is stopped between steps and ends failed
with ``job_time_limit``; the worker goes on with the next job."""

from __future__ import annotations

from tests.conftest import wait_for_job
from tests.routers.test_img2seq_limits import BASE as SEQUENCE

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a harbour", "steps": 2, "width": 64, "height": 64, "seed": 2}
SLOW = {"prompt": "a long job", "steps": 150, "width": 512, "height": 512, "seed": 3}


def test_a_job_past_its_time_limit_fails_with_job_time_limit_and_the_next_runs(make_client):
    # 2 s: the first job (loading the model) fits even on a busy machine; SLOW never does.
    client = make_client(job_timeout_s=2)
    assert client.post("/txt2img", json=FAST).status_code == 200  # the model is loaded
    job = client.post("/txt2img", json=SLOW, headers=ASYNC).json()
    status = wait_for_job(client, job["job_id"])
    assert status["status"] == "failed", status
    assert status["error"]["code"] == "job_time_limit"
    assert "BILDWERK_JOB_TIMEOUT_S" in status["error"]["message"]
    assert status["progress"]["step"] < 150  # stopped mid-denoising, not at the end
    record = client.get(f"/records/{job['record_id']}").json()
    assert record["status"] == "failed" and record["error_code"] == "job_time_limit"
    assert record["outputs"] == [] and record["finished_at"] is not None
    # A waiting synchronous caller gets the same ending as its answer.
    r = client.post("/txt2img", json=SLOW)
    assert r.status_code == 504 and r.json()["error"]["code"] == "job_time_limit"
    # The worker is free again: the next job runs normally.
    after = client.post("/txt2img", json=FAST)
    assert after.status_code == 200 and after.json()["status"] == "succeeded"


def test_a_sequence_past_its_time_limit_keeps_the_frames_it_finished(make_client):
    client = make_client(job_timeout_s=3)
    assert client.post("/img2seq", json={**SEQUENCE, "frames": 1}).status_code == 200  # warm
    # Frames of a fraction of a second each, far more than 3 s of them.
    slow = {**SEQUENCE, "frames": 120, "steps": 10, "strength": 1.0}
    job = client.post("/img2seq", json=slow, headers=ASYNC).json()
    status = wait_for_job(client, job["job_id"])
    assert status["status"] == "failed" and status["error"]["code"] == "job_time_limit"
    record = client.get(f"/records/{job['record_id']}").json()
    assert record["error_code"] == "job_time_limit"
    frames = record["outputs"]
    assert 1 <= len(frames) < 120, len(frames)
    assert [o["name"] for o in frames] == [f"frame_{i:04d}.png" for i in
                                           range(1, len(frames) + 1)]
    assert record["seeds"] == [o["seed"] for o in frames]
    assert all(client.get(f"/blobs/{o['sha256']}").status_code == 200 for o in frames)
