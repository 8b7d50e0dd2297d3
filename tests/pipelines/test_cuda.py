"""CUDA behaviour: fp16 weights under BILDWERK_DEVICE=auto, and memory given back after
a cancel. Skipped on machines without a GPU."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import wait_for_job

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
FAST = {"prompt": "a lighthouse", "steps": 4, "width": 64, "height": 64, "seed": 3}


def test_auto_device_runs_fp16_weights_on_cuda(make_client):
    client = make_client(device="auto")
    assert client.get("/ready").json()["checks"]["device"] == "cuda"
    first = client.post("/txt2img", json=FAST).json()["images"][0]["sha256"]
    assert client.post("/txt2img", json=FAST).json()["images"][0]["sha256"] == first
    loaded = client.app.state.registry.load("tiny-sd15")
    unet = loaded.pipelines["txt2img"].unet
    assert unet.dtype == torch.float16 and unet.device.type == "cuda"
    assert loaded.pipelines["inpaint"].unet is unet  # one set of weights for every task


def test_cancel_gives_activation_memory_back(make_client):
    client = make_client(device="cuda", max_steps=1000)
    client.post("/txt2img", json=FAST)  # load weights
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    slow = {"prompt": "x", "steps": 1000, "width": 1024, "height": 1024, "num_images": 4,
            "seed": 1}
    job_id = client.post("/txt2img", json=slow, headers={"Prefer": "respond-async"}
                         ).json()["job_id"]
    wait_for_job(client, job_id, until=lambda s: s["progress"]["step"] >= 2)
    client.delete(f"/jobs/{job_id}")
    assert wait_for_job(client, job_id)["status"] == "cancelled"
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= baseline + 1024 * 1024
    assert client.post("/txt2img", json=FAST).status_code == 200
