"""Step previews on the native API: `previews: N` gives `preview` events on
/jobs/{id}/events and the latest picture at GET /jobs/{id}/preview; with TAESD in the
models dir, previews are decoded by it."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time

import pytest
import torch
from PIL import Image

from app.pipelines.preview import FULL_SIZE, full_size, latent_preview
from tests.conftest import wait_for_job

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ASYNC = {"Prefer": "respond-async"}
BODY = {"prompt": "a harbour at night", "width": 64, "height": 64, "seed": 3,
        "model": "tiny-sd15"}


def sse(client, job_id: str) -> list[tuple[str, dict]]:
    events, event = [], None
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event:
                events.append((event, json.loads(line.split(":", 1)[1])))
                if event in ("succeeded", "failed", "cancelled"):
                    break
    return events


@SQLITE_ONLY
def test_previews_arrive_as_events_and_the_latest_is_served_while_the_job_runs(make_client):
    client = make_client(max_steps=1000)
    job = client.post("/txt2img", json={**BODY, "steps": 400, "previews": 10},
                      headers=ASYNC).json()
    deadline, preview = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        preview = client.get(f"/jobs/{job['job_id']}/preview")
        if preview.status_code == 200:
            break
        assert preview.status_code == 404 and preview.json()["error"]["code"] == "not_found"
        time.sleep(0.05)
    assert preview is not None and preview.status_code == 200
    assert preview.headers["content-type"] == "image/png"
    step, total = map(int, preview.headers["x-preview-step"].split("/"))
    assert 1 <= step < total == 400
    assert Image.open(io.BytesIO(preview.content)).size == (64, 64)  # the image's size
    client.delete(f"/jobs/{job['job_id']}")
    wait_for_job(client, job["job_id"])
    assert client.get(f"/jobs/{job['job_id']}/preview").status_code == 404  # result replaces it


@SQLITE_ONLY
def test_a_job_with_previews_streams_them_and_one_without_sends_none(client):
    job = client.post("/txt2img", json={**BODY, "steps": 12, "previews": 3},
                      headers=ASYNC).json()
    events = sse(client, job["job_id"])
    previews = [data for event, data in events if event == "preview"]
    assert events[-1][0] == "succeeded"
    if previews:  # a fast job may finish its first previews before we subscribe
        steps = [p["step"] for p in previews]
        assert steps == sorted(steps) and all(s < 12 for s in steps)
        png = base64.b64decode(previews[-1]["png_base64"])
        assert Image.open(io.BytesIO(png)).size == (64, 64)
    plain = client.post("/txt2img", json={**BODY, "steps": 12}, headers=ASYNC).json()
    assert not [e for e, _ in sse(client, plain["job_id"]) if e == "preview"]


def test_the_number_of_previews_is_bounded(client):
    r = client.post("/txt2img", json={**BODY, "steps": 4, "previews": 21})
    assert r.status_code == 422 and r.json()["error"]["param"].endswith("previews")


@SQLITE_ONLY
def test_taesd_in_the_models_dir_decodes_the_previews(make_client, models_dir, tmp_path):
    from diffusers import AutoencoderTiny

    own = tmp_path / "models"
    shutil.copytree(models_dir, own, ignore=shutil.ignore_patterns("broken"))
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                    decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(own / "taesd")
    client = make_client(models_dir=own, max_steps=1000, taesd_previews="on")  # auto: CUDA
    job = client.post("/txt2img", json={**BODY, "steps": 400, "previews": 10},
                      headers=ASYNC).json()
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job['job_id']}/preview").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.delete(f"/jobs/{job['job_id']}")
    model = client.get("/models/tiny-sd15").json()
    assert "taesd previews" in model["optimizations"]
    assert "taesd" not in [m["id"] for m in client.get("/models").json()]  # not a model

    loaded = client.app.state.registry.load("tiny-sd15")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    decoded = latent_preview(loaded.main, latents)
    assert decoded.size == (64, 64) and decoded.info[FULL_SIZE]  # TAESD: the image's size
    assert full_size(decoded) is decoded
    loaded.main.preview_decoder, decoder = None, loaded.main.preview_decoder
    try:
        linear = latent_preview(loaded.main, latents)  # without it: the linear map, 1/8
        assert linear.size == (8, 8) and full_size(linear).size == (64, 64)
    finally:
        loaded.main.preview_decoder = decoder
