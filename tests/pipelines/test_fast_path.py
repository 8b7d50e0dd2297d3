"""The fast path (app/pipelines/fast_path.py): what a loaded model runs with, reported by
GET /models and `bildwerk doctor`, and what each option does to the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from app.config import Settings
from app.pipelines.device import resolve_runtime
from app.pipelines.fast_path import FastPath, choose_threads, cpu_has_bf16

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
BODY = {"prompt": "a lighthouse at dusk", "steps": 4, "width": 64, "height": 64, "seed": 11,
        "model": "tiny-sd15"}


def generate(client) -> np.ndarray:
    r = client.post("/txt2img", json=BODY)
    assert r.status_code == 200, r.text
    png = client.get(r.json()["images"][0]["url"]).content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@SQLITE_ONLY
def test_a_loaded_model_reports_what_it_runs_with(client):
    assert client.get("/models/tiny-sd15").json()["optimizations"] is None  # not loaded
    generate(client)
    model = client.get("/models/tiny-sd15").json()
    assert model["loaded"] and "sdpa" in model["optimizations"]
    assert "channels_last" not in model["optimizations"]  # auto: CUDA only


@SQLITE_ONLY
def test_channels_last_on_the_cpu_keeps_the_picture(make_client):
    plain = generate(make_client())
    fast_client = make_client(channels_last="on")
    fast = generate(fast_client)
    assert "channels_last" in fast_client.get("/models/tiny-sd15").json()["optimizations"]
    assert psnr(plain, fast) >= 40, psnr(plain, fast)  # other kernels, same picture


@SQLITE_ONLY
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_bf16_on_a_cpu_that_has_it_loads_bf16_weights_and_still_makes_the_picture(
        make_client):
    plain = generate(make_client())
    bf16_client = make_client(cpu_dtype="bf16")
    image = generate(bf16_client)
    registry = bf16_client.app.state.registry
    loaded = registry.load("tiny-sd15")
    for task, pipe in loaded.pipelines.items():  # from_pipe must not cast them back to fp32
        assert pipe.unet.dtype == torch.bfloat16, task
        assert pipe.unet is loaded.main.unet  # one set of weights for every task
    assert "bf16 weights" in bf16_client.get("/models/tiny-sd15").json()["optimizations"]
    # bf16 changes pixels (docs/performance.md gives the error on real architectures);
    # the random tiny model still gives the same picture, not noise.
    assert psnr(plain, image) >= 20, psnr(plain, image)


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr("app.pipelines.fast_path.cpu_has_bf16", lambda: False)
    with pytest.raises(RuntimeError, match="no native bf16"):
        resolve_runtime("cpu", cpu_dtype="bf16")
    assert resolve_runtime("cpu").dtype == torch.float32


@pytest.mark.parametrize("model_bytes, cores, workers, images, threads", [
    (50 << 20, 8, 1, 1, 1),  # one image of a small model: its steps are too short to split
    (50 << 20, 8, 1, 4, 8),  # a batch of them: every core
    (50 << 20, 8, 2, 4, 4),
    (2 << 30, 8, 1, 1, 8),  # a large model: every core
    (2 << 30, 8, 2, 1, 4),  # shared by two workers: never oversubscribed
    (2 << 30, 1, 4, 1, 1),
    (0, 4, 1, 1, 4),  # unknown size: all cores
])
def test_torch_threads_follow_the_model_size_the_images_and_the_workers(
        model_bytes, cores, workers, images, threads):
    assert choose_threads(model_bytes, cores, workers, images) == threads


def test_a_fixed_thread_count_wins_and_the_job_sets_it():
    before = torch.get_num_threads()
    try:
        runtime = resolve_runtime("cpu")
        assert FastPath(torch_threads=2).use_threads(50 << 20, runtime) == 2
        assert torch.get_num_threads() == 2
        assert FastPath().use_threads(50 << 20, runtime) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_settings_choose_channels_last_by_device_and_tiling_on_cuda_only(tmp_path):
    cpu = resolve_runtime("cpu")
    cuda_like = type(cpu)(torch.device("cuda"), torch.float16)  # not used to run anything
    auto = Settings(_env_file=None, data_dir=tmp_path)
    assert FastPath.from_settings(auto, cpu).channels_last is False
    assert FastPath.from_settings(auto, cuda_like).channels_last is True
    assert FastPath.from_settings(auto, cpu).vae_tile_above == 0
    assert FastPath.from_settings(auto, cuda_like).vae_tile_above == 1536
    # TAESD previews cost about half a step on the CPU (bench/fast_path.py): CUDA only
    assert not FastPath.from_settings(auto, cpu).taesd_previews
    assert FastPath.from_settings(auto, cuda_like).taesd_previews
    on = Settings(_env_file=None, data_dir=tmp_path, channels_last="on", compile="default")
    path = FastPath.from_settings(on, cpu)
    assert path.channels_last and path.compile == "default"
    assert path.compile_cache == tmp_path / "compile-cache"


def test_doctor_names_the_fast_path(tmp_path):
    from app.doctor import _fast_path

    section = dict(_fast_path(Settings(_env_file=None, data_dir=tmp_path, compile="default")
                              ).lines)
    assert section["torch.compile"] == "default" and section["weights"] == "fp32"
    assert section["channels_last"] == "off" and "by model size" in section["torch threads"]
    assert section["batching"] == "up to 8 images per call, waits 20 ms while busy"
    off = dict(_fast_path(Settings(_env_file=None, data_dir=tmp_path, max_batch=1)).lines)
    assert off["batching"] == "off"
