"""Batching of compatible txt2img jobs: queued jobs that share model, size, steps,
scheduler, guidance, LoRAs, VAE and clip_skip run as one pipeline call, and each keeps its
own progress, cancel, record and result. A batched image matches the same request run
alone within rounding (PSNR >= 40 dB); a request alone, or one sent with "batch": false,
gives exactly the bytes it always gave."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import wait_for_job

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ASYNC = {"Prefer": "respond-async"}
BASE = {"width": 64, "height": 64, "steps": 6, "model": "tiny-sd15"}


def png(client, image: dict) -> np.ndarray:
    data = client.get(image["url"]).content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def queued_together(client, bodies: list[dict]) -> list[str]:
    """Submit ``bodies`` while the worker is busy with a job that runs alone, then free
    it: the bodies wait in the queue together. Returns their job ids."""
    blocker = client.post("/txt2img", json={**BASE, "prompt": "busy", "steps": 1000,
                                            "batch": False}, headers=ASYNC).json()
    wait_for_job(client, blocker["job_id"], until=lambda s: s["status"] == "running")
    ids = [client.post("/txt2img", json=body, headers=ASYNC).json()["job_id"]
           for body in bodies]
    client.delete(f"/jobs/{blocker['job_id']}")
    return ids


@SQLITE_ONLY
def test_compatible_jobs_share_a_call_and_each_matches_itself_run_alone(make_client):
    client = make_client(max_steps=1000)
    bodies = [{**BASE, "prompt": "a red barn", "seed": 11, "num_images": 2},
              {**BASE, "prompt": "a lighthouse at dusk", "seed": 5},
              {**BASE, "prompt": "a quiet harbour", "negative_prompt": "blurry", "seed": 9}]
    ids = queued_together(client, bodies)
    batched = [wait_for_job(client, job_id) for job_id in ids]
    for status, body in zip(batched, bodies, strict=True):
        assert status["status"] == "succeeded"
        result = status["result"]
        assert result["timings"]["batch_images"] == 4  # 2 + 1 + 1 shared the call
        assert result["prompt"] == body["prompt"]
        assert [img["seed"] for img in result["images"]] == \
            [body["seed"] + i for i in range(body.get("num_images", 1))]
        record = client.get(f"/records/{result['record_id']}").json()
        assert record["status"] == "succeeded" and record["seeds"] == \
            [img["seed"] for img in result["images"]]
        assert len(record["outputs"]) == len(result["images"])

    for status, body in zip(batched, bodies, strict=True):
        alone = client.post("/txt2img", json={**body, "batch": False}).json()
        assert "batch_images" not in alone["timings"]
        for mine, theirs in zip(status["result"]["images"], alone["images"], strict=True):
            assert psnr(png(client, mine), png(client, theirs)) >= 40.0
    # The images of one batch are each their own prompt's, not copies of each other.
    first, second = batched[0]["result"]["images"][0], batched[1]["result"]["images"][0]
    assert psnr(png(client, first), png(client, second)) < 30.0


@SQLITE_ONLY
def test_a_request_alone_gives_the_same_bytes_with_and_without_batching(client):
    body = {**BASE, "prompt": "a windmill", "seed": 42}
    default = client.post("/txt2img", json=body).json()
    exact = client.post("/txt2img", json={**body, "batch": False}).json()
    assert default["images"][0]["sha256"] == exact["images"][0]["sha256"]
    record = client.get(f"/records/{exact['record_id']}").json()
    assert record["params"]["batch"] is False  # asked for, and recorded


@SQLITE_ONLY
def test_jobs_that_differ_in_steps_or_ask_for_no_batch_run_alone(make_client):
    client = make_client(max_steps=1000)
    bodies = [{**BASE, "prompt": "one", "seed": 1},
              {**BASE, "prompt": "two", "seed": 2, "steps": 7},
              {**BASE, "prompt": "three", "seed": 3, "batch": False}]
    for job_id in queued_together(client, bodies):
        status = wait_for_job(client, job_id)
        assert status["status"] == "succeeded"
        assert "batch_images" not in status["result"]["timings"]


@SQLITE_ONLY
def test_a_job_cancelled_inside_a_batch_ends_at_once_and_the_others_finish(make_client):
    client = make_client(max_steps=1000)
    bodies = [{**BASE, "prompt": f"field {i}", "seed": i, "steps": 400} for i in range(3)]
    first, middle, last = queued_together(client, bodies)
    for job_id in (first, middle, last):  # all three running: one batch
        wait_for_job(client, job_id, until=lambda s: s["progress"]["step"] >= 2)
    assert client.delete(f"/jobs/{middle}").status_code in (200, 202)
    cancelled = wait_for_job(client, middle, timeout=10)
    assert cancelled["status"] == "cancelled"
    # It ended while its batch was still denoising.
    assert client.get(f"/jobs/{first}").json()["status"] == "running"
    record = client.get(f"/records/{cancelled['record_id']}").json()
    assert record["status"] == "cancelled" and record["outputs"] == []
    for job_id in (first, last):
        status = wait_for_job(client, job_id, timeout=120)
        assert status["status"] == "succeeded"
        assert status["result"]["timings"]["batch_images"] == 3
        assert status["progress"]["total"] == 400


@SQLITE_ONLY
def test_batching_can_be_turned_off(make_client):
    client = make_client(max_batch=1, max_steps=1000)
    bodies = [{**BASE, "prompt": "one", "seed": 1}, {**BASE, "prompt": "two", "seed": 2}]
    for job_id in queued_together(client, bodies):
        status = wait_for_job(client, job_id)
        assert "batch_images" not in status["result"]["timings"]


@SQLITE_ONLY
def test_a_batch_waits_briefly_for_more_only_after_a_batch(make_client):
    """A lone request on an idle server starts at once, even with a long batch wait."""
    client = make_client(batch_wait_ms=3000)
    body = client.post("/txt2img", json={**BASE, "prompt": "alone", "seed": 1}).json()
    assert "batch_images" not in body["timings"]
    assert body["timings"]["queued_s"] < 2.5  # it did not sit out the 3 s wait


@SQLITE_ONLY
def test_a_batch_that_runs_out_of_memory_runs_each_job_alone(make_client, monkeypatch):
    from app.pipelines.txt2img import Txt2ImgPipeline

    together, calls = Txt2ImgPipeline.together, []

    def no_room_for_two(self, requests, reporter):
        calls.append(len(requests))
        if len(requests) > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return together(self, requests, reporter)

    monkeypatch.setattr(Txt2ImgPipeline, "together", no_room_for_two)
    client = make_client(max_steps=1000)
    bodies = [{**BASE, "prompt": f"boat {i}", "seed": i} for i in range(3)]
    for job_id, body in zip(queued_together(client, bodies), bodies, strict=True):
        status = wait_for_job(client, job_id)
        assert status["status"] == "succeeded", status
        assert "batch_images" not in status["result"]["timings"]  # it ran alone
        alone = client.post("/txt2img", json={**body, "batch": False}).json()
        assert status["result"]["images"][0]["sha256"] == alone["images"][0]["sha256"]
    assert 3 in calls  # the three were tried as one batch first
