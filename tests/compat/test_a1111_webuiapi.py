"""The AUTOMATIC1111 API driven by the real ``webuiapi`` client (and by AI-Render's request,
sent with ``requests`` as AI-Render sends it) against a real server process on SQLite.

One server for the module; its models dir holds ``tiny-sd15`` (the default) and
``tiny-sd15-b`` (other weights), so that ``util_set_model`` has something to switch to.
The first test runs while no API key exists (AI-Render from loopback sends none); the
``key`` fixture then creates one, and the webuiapi tests send it with ``set_auth``.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from tests.utils.families import build_tiny_sd15
from tests.utils.images import box_mask, data_url, pixels, scene
from tests.utils.server import ROOT, Server

# BILDWERK_LOOPBACK_SCOPES none: once the key exists, a keyless call from this loopback
# test gets the 401 a client on another host gets.
OWN = {"BILDWERK_EMBEDDED_MODEL_ID": "bildwerk-tiny", "BILDWERK_LOOPBACK_SCOPES": "none"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedded_template: Path):
    root = tmp_path_factory.mktemp("a1111-webuiapi")
    models = root / "models"
    build_tiny_sd15(models / "tiny-sd15", seed=101)
    build_tiny_sd15(models / "tiny-sd15-b", seed=102)
    data = root / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    server = Server(data, models, **OWN).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (
        "BILDWERK_DATABASE_URL", "BILDWERK_DEFAULT_MODEL", "BILDWERK_AUTH_MODE")}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "webuiapi", "--scope", "generate",
         "--scope", "read"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**env, **OWN, "BILDWERK_DATA_DIR": str(server.data_dir),
             "BILDWERK_MODELS_DIR": str(server.models_dir), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def api(server: Server, key: str) -> webuiapi.WebUIApi:
    port = int(server.base.rsplit(":", 1)[1])
    client = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)
    client.set_auth("blender", key)
    return client


def record(server: Server, key: str, record_id: str) -> dict:
    r = httpx.get(f"{server.base}/records/{record_id}", auth=("any", key), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_ai_render_from_loopback_without_a_key(server: Server):
    """sd_backends/automatic1111_api.py: GET upscalers, then POST img2img with its own
    fields, sampler_index only, a data-URL PNG of the render, no credentials."""
    upscalers = requests.get(server.base + "/sdapi/v1/upscalers",
                             headers={"Accept": "application/json"}, timeout=5)
    assert upscalers.status_code == 200
    assert "Lanczos" in [u["name"] for u in upscalers.json() if u["name"] != "None"]
    params = {"prompt": "a castle", "negative_prompt": "", "width": 64, "height": 64,
              "image_similarity": 0.5, "seed": 2034567890, "cfg_scale": 7, "steps": 4,
              "sampler": "Euler a"}
    params["denoising_strength"] = round(1 - params["image_similarity"], 2)
    params["sampler_index"] = params["sampler"]
    params["init_images"] = [data_url(scene(64, 64).convert("RGBA"))]
    r = requests.post(server.base + "/sdapi/v1/img2img", json=params, timeout=60, headers={
        "User-Agent": "Blender/4.2.0", "Accept": "*/*", "Accept-Encoding": "gzip, deflate, br"})
    assert r.status_code == 200, r.text
    assert r.json()["images"][0][:4] == "iVBO"  # raw base64 of a PNG
    bad = requests.post(server.base + "/sdapi/v1/img2img",
                        json={**params, "sampler_index": "DPM fast"}, timeout=60)
    assert bad.status_code == 404 and bad.json()["detail"] == "Sampler not found"
    upscaled = requests.post(server.base + "/sdapi/v1/extra-single-image", timeout=60, json={
        "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0,
        "codeformer_visibility": 0, "codeformer_weight": 0, "upscaling_resize": 2,
        "upscaling_resize_w": 128, "upscaling_resize_h": 128, "upscaling_crop": True,
        "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
        "upscale_first": True, "image": "data:image/png;base64," + r.json()["images"][0]})
    assert upscaled.status_code == 200, upscaled.text
    assert upscaled.json()["image"][:4] == "iVBO"


def test_a_webuiapi_session(api: webuiapi.WebUIApi, server: Server, key: str):
    assert "Euler a" in api.util_get_sampler_names()
    assert "karras" in api.util_get_scheduler_names()
    titles = api.util_get_model_names()
    assert any(t.startswith("tiny-sd15-b") for t in titles)
    api.util_set_model("tiny-sd15-b")
    current = api.util_get_current_model()
    assert current.startswith("tiny-sd15-b")

    result = api.txt2img(prompt="a red circle", negative_prompt="blurry", seed=5, width=64,
                         height=64, batch_size=2, cfg_scale=6,
                         override_settings={"CLIP_stop_at_last_layers": 2})
    assert len(result.images) == 2 and result.image.size == (64, 64)
    assert result.info["all_seeds"] == [5, 6] and result.info["sampler_name"] == "Euler a"
    assert result.parameters["prompt"] == "a red circle"
    done = record(server, key, result.info["record_id"])
    assert done["model"] == "tiny-sd15-b" and done["params"]["clip_skip"] == 2
    assert done["client"]["api"] == "sdapi" and done["client"]["key_name"] == "webuiapi"

    again = api.txt2img(prompt="a red circle", negative_prompt="blurry", seed=5, width=64,
                        height=64, batch_size=2, cfg_scale=6,
                        override_settings={"CLIP_stop_at_last_layers": 2})
    for first, second in zip(again.images, result.images, strict=True):
        assert np.array_equal(pixels(first), pixels(second))  # same request, same bytes
    alone = api.txt2img(prompt="a red circle", negative_prompt="blurry", seed=5, width=64,
                        height=64, cfg_scale=6,
                        override_settings={"CLIP_stop_at_last_layers": 2})
    # Seed 5 alone is the batch's first image; a batch of 2 runs other CPU kernels than a
    # batch of 1, so equal up to rounding (the bytes are promised per request, docs/api.md).
    diff = np.abs(pixels(alone.image).astype(int) - pixels(result.image).astype(int))
    assert diff.max() <= 2, diff.max()

    info = api.png_info(result.image)
    assert info.info.startswith("a red circle\nNegative prompt: blurry\n")
    assert info.json["parameters"]["Seed"] == "5"

    base = scene(64, 64)
    edited = api.img2img(images=[base], mask_image=box_mask((64, 64), (20, 20, 43, 43)),
                         prompt="a blue square", seed=3, width=64, height=64,
                         denoising_strength=0.9, mask_blur=2, inpaint_full_res_padding=4)
    far = np.ones((64, 64), bool)
    far[12:52, 12:52] = False
    assert np.array_equal(pixels(edited.image)[far], pixels(base)[far])
    assert record(server, key, edited.info["record_id"])["endpoint"] == "inpaint"

    upscaled = api.extra_single_image(image=base, upscaler_1="Lanczos", upscaling_resize=2)
    assert upscaled.image.size == (128, 128)

    assert api.get_progress()["state"]["job_count"] == 0
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert any(u["name"] == "Nearest" for u in api.get_upscalers())
    assert api.get_loras() == [] and api.get_sd_vae() == []
    assert api.interrupt() == {} and api.skip() is None


def test_progress_and_interrupt_through_webuiapi(api: webuiapi.WebUIApi, server: Server,
                                                 key: str):
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(result=api.txt2img(
        prompt="a slow one", seed=9, width=128, height=128, steps=150)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    progress: dict = {}
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if progress["progress"] > 0.01 and progress["current_image"]:
            break
        time.sleep(0.1)
    assert progress.get("current_image"), progress
    assert progress["state"]["sampling_steps"] == 150 and progress["eta_relative"] >= 0
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.format == "PNG" and preview.size[0] > 0
    api.interrupt()
    thread.join(60)
    result = answer["result"]
    assert result.images == []
    assert record(server, key, result.info["record_id"])["status"] == "cancelled"


def test_a_wrong_password_is_401(server: Server, key: str):
    port = int(server.base.rsplit(":", 1)[1])
    wrong = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    wrong.set_auth("blender", "bw_wrong")
    with pytest.raises(RuntimeError) as caught:
        wrong.txt2img(prompt="x", width=64, height=64, steps=2)
    assert caught.value.args[0] == 401
    r = requests.get(server.base + "/sdapi/v1/sd-models", timeout=10)  # keys exist now
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
