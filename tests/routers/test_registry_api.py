"""The model registry through the HTTP API: LoRAs, VAEs, clip_skip, the memory budget,
admin routes, content hashes, injected OOM, merge/export and concurrency."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.conftest import wait_for_job
from tests.utils.images import decode, pixels

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

FAST = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 11}
ASYNC = {"Prefer": "respond-async"}
ROOT = Path(__file__).resolve().parents[2]


def image(client, **changes) -> np.ndarray:
    r = client.post("/txt2img", json={**FAST, **changes})
    assert r.status_code == 200, r.text
    return pixels(decode(client.get(r.json()["images"][0]["url"]).content)).astype(int)


def own_models_dir(models_dir: Path, tmp_path: Path) -> Path:
    """A private copy (for tests that write models), without the slow extras."""
    dest = tmp_path / "own-models"
    shutil.copytree(models_dir, dest, ignore=shutil.ignore_patterns("broken"))
    return dest


# -- LoRA, VAE, clip_skip: applied per request, never leaking -------------------------
def test_nothing_a_request_applies_leaks_into_the_next(client):
    plain = image(client)
    with_lora = image(client, loras=[{"name": "style-diffusers", "weight": 1.0}])
    assert np.abs(with_lora - plain).max() > 0
    assert np.array_equal(image(client), plain)
    with_vae = image(client, vae="tiny-vae")
    assert np.abs(with_vae - plain).max() > 0
    assert np.array_equal(image(client), plain)
    skipped = image(client, clip_skip=2)
    assert np.abs(skipped - plain).max() > 0
    assert np.array_equal(image(client), plain)
    everything = image(client, loras=[{"name": "style-kohya", "weight": 0.7},
                                      {"name": "detail-diffusers", "weight": 0.5}],
                       vae="tiny-vae", clip_skip=2, scheduler="dpmpp_2m")
    assert np.abs(everything - plain).max() > 0
    assert np.array_equal(image(client), plain)


def test_kohya_and_diffusers_files_of_one_lora_give_the_same_picture(client):
    kohya = image(client, loras=[{"name": "style-kohya", "weight": 0.8}])
    diffusers_ = image(client, loras=[{"name": "style-diffusers", "weight": 0.8}])
    assert np.abs(kohya - diffusers_).max() <= 2


def test_lora_weight_zero_is_no_lora_and_choices_are_recorded(client):
    assert np.array_equal(image(client, loras=[{"name": "style-diffusers", "weight": 0.0}]),
                          image(client))
    body = client.post("/txt2img", json={**FAST, "vae": "tiny-vae", "clip_skip": 2, "loras": [
        {"name": "detail-kohya", "weight": 0.5}]}).json()
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["loras"] == [{"name": "detail-kohya", "weight": 0.5}]
    assert record["vae"] == "tiny-vae" and record["params"]["clip_skip"] == 2


@pytest.mark.parametrize("change, fragment", [
    ({"loras": [{"name": "xl-style"}]}, "2048"),
    ({"loras": [{"name": "nope"}]}, "unknown LoRA"),
    ({"vae": "nope"}, "unknown VAE"),
])
def test_wrong_loras_and_vaes_are_clear_422s(client, change, fragment):
    r = client.post("/txt2img", json={**FAST, **change})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]["message"]
    assert r.json()["error"]["param"] in ("loras", "vae")


def test_inpaint_and_img2seq_take_loras_too(client):
    from tests.utils.images import box_mask, data_url, scene

    r = client.post("/inpaint", json={**FAST, "image": data_url(scene(64, 64)),
                                      "mask": data_url(box_mask((64, 64), (8, 8, 30, 30))),
                                      "loras": [{"name": "style-diffusers"}]})
    assert r.status_code == 200
    r = client.post("/img2seq", json={"image": data_url(scene(64, 64)), "prompt": "x",
                                      "frames": 2, "steps": 4, "loras": [{"name": "style-kohya"}],
                                      "vae": "tiny-vae"})
    assert r.status_code == 200 and len(r.json()["frames"]) == 2


def test_listings(client):
    loras = {entry["id"]: entry for entry in client.get("/loras").json()}
    assert loras["style-kohya"]["format"] == "kohya"
    assert loras["style-diffusers"]["format"] == "diffusers"
    assert loras["style-diffusers"]["context_dim"] == 32 and loras["style-diffusers"]["rank"] == 4
    assert loras["xl-style"]["context_dim"] == 2048
    vaes = client.get("/vaes").json()
    assert [v["id"] for v in vaes] == ["tiny-vae"] and vaes[0]["latent_channels"] == 4
    schedulers = {s["name"]: s for s in client.get("/schedulers").json()}
    assert schedulers["lcm"]["max_steps"] == 50


# -- memory budget, admin routes, hashes -----------------------------------------------
def test_the_memory_budget_evicts_the_least_recently_used_model(make_client):
    client = make_client(memory_budget_mb=5)  # one tiny model (~3.6 MB) fits, two do not
    assert client.post("/txt2img", json={**FAST, "model": "tiny-sd15"}).status_code == 200
    assert client.get("/models/tiny-sd15").json()["loaded"]
    assert client.post("/txt2img", json={**FAST, "model": "tiny-single"}).status_code == 200
    assert not client.get("/models/tiny-sd15").json()["loaded"]
    assert client.get("/models/tiny-single").json()["loaded"]


def test_a_model_over_the_budget_is_refused_clearly(make_client):
    client = make_client(memory_budget_mb=1)
    r = client.post("/txt2img", json=FAST)
    assert r.status_code == 503 and r.json()["error"]["code"] == "memory_budget_exceeded"


def test_load_unload_and_describe(client):
    info = client.post("/models/tiny-sd15/load").json()
    assert info["loaded"] and info["resident_bytes"] > 1_000_000
    assert info["family"] == "sd15" and info["variant"] == "base"
    info = client.post("/models/tiny-sd15/unload").json()
    assert not info["loaded"] and info["resident_bytes"] is None
    for method, path in (("get", "/models/nope"), ("post", "/models/nope/load"),
                         ("post", "/models/nope/unload")):
        r = getattr(client, method)(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_refresh_registers_new_checkpoints(make_client, models_dir, tmp_path):
    own = own_models_dir(models_dir, tmp_path)
    client = make_client(models_dir=own)
    assert "copy" not in {m["id"] for m in client.get("/models").json()}
    shutil.copytree(own / "tiny-sd15", own / "copy")
    assert "copy" in {m["id"] for m in client.post("/models/refresh").json()}
    assert client.post("/txt2img", json={**FAST, "model": "copy"}).status_code == 200


def test_models_carry_their_content_hash(client, models_dir):
    expected = hashlib.sha256((models_dir / "tiny-single.safetensors").read_bytes()).hexdigest()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = client.get("/models/tiny-single").json()
        if info["sha256"]:
            break
        time.sleep(0.1)
    assert info["sha256"] == expected and info["short_hash"] == expected[:10]


# -- failure: an injected out-of-memory error -------------------------------------------
# SQLite only: the failure path is the worker's and the registry's; the record it writes is
# the same on PostgreSQL (tests/persistence, tests/reliability).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_out_of_memory_error_fails_the_job_and_the_worker_serves_the_next(client,
                                                                             monkeypatch):
    registry = client.app.state.registry
    client.post("/models/tiny-single/load")
    unet = registry.load("tiny-sd15").main.unet
    calls = {"n": 0}
    real_forward = unet.forward

    def forward_that_runs_out(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward_that_runs_out)
    r = client.post("/txt2img", json={**FAST, "model": "tiny-sd15"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "out_of_memory"
    failed = client.get("/records", params={"status": "failed"}).json()["items"][0]
    assert failed["error_code"] == "out_of_memory"
    assert not client.get("/models/tiny-single").json()["loaded"]  # memory given back
    assert client.post("/txt2img", json={**FAST, "model": "tiny-sd15"}).status_code == 200


# -- merge and export ---------------------------------------------------------------------
def test_merge_writes_one_single_file_checkpoint_registered_at_once(make_client, models_dir,
                                                                    tmp_path):
    own = own_models_dir(models_dir, tmp_path)
    client = make_client(models_dir=own)
    r = client.post("/models/merge", json={"a": "tiny-sd15", "b": "bildwerk-tiny",
                                           "alpha": 0.5, "name": "half-half",
                                           "loras": [{"name": "style-diffusers",
                                                      "weight": 0.5}]})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "single_file" and r.json()["family"] == "sd15"
    path = own / "half-half.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        assert any(k.startswith("model.diffusion_model.") for k in fh.keys())
    merged = image(client, model="half-half")
    assert not np.array_equal(merged, image(client, model="tiny-sd15"))
    assert not np.array_equal(merged, image(client, model="bildwerk-tiny"))
    again = client.post("/models/merge", json={"a": "tiny-sd15", "b": "bildwerk-tiny",
                                               "name": "half-half"})
    assert again.status_code == 409


def test_weighted_sum_at_zero_and_add_difference_of_itself_keep_a(make_client, models_dir,
                                                                   tmp_path):
    own = own_models_dir(models_dir, tmp_path)
    client = make_client(models_dir=own)
    for body in ({"a": "tiny-sd15", "b": "bildwerk-tiny", "alpha": 0.0, "name": "same-a"},
                 {"a": "tiny-sd15", "b": "bildwerk-tiny", "c": "bildwerk-tiny",
                  "method": "add_difference", "alpha": 1.0, "name": "same-a-2"}):
        assert client.post("/models/merge", json=body).status_code == 201
        assert np.abs(image(client, model=body["name"]) - image(client, model="tiny-sd15")
                      ).max() <= 1


@pytest.mark.parametrize("body, status, param", [
    ({"a": "tiny-sd15", "b": "tiny-sd15-inpaint", "name": "x"}, 422, "b"),
    ({"a": "tiny-sd15", "b": "nope", "name": "x"}, 422, "model"),
    ({"a": "tiny-sd15", "b": "bildwerk-tiny", "method": "add_difference", "name": "x"}, 422,
     "c"),
    ({"a": "tiny-sd15", "b": "bildwerk-tiny", "name": "../escape"}, 422, "name"),
])
def test_bad_merges_are_refused(client, body, status, param):
    r = client.post("/models/merge", json=body)
    assert r.status_code == status and r.json()["error"]["param"] == param


def test_cli_merge(models_dir, tmp_path):
    own = own_models_dir(models_dir, tmp_path)
    env = {**os.environ, "BILDWERK_MODELS_DIR": str(own),
           "BILDWERK_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
           "BILDWERK_EMBEDDED_MODEL_ID": "bildwerk-tiny"}  # merges with the tiny model
    done = subprocess.run([sys.executable, "-m", "app.cli", "models", "merge", "tiny-sd15",
                           "bildwerk-tiny", "--name", "cli-merge", "--alpha", "0.3",
                           "--lora", "detail-kohya:0.5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (own / "cli-merge.safetensors").exists()
    listed = subprocess.run([sys.executable, "-m", "app.cli", "models", "list"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert "cli-merge" in listed.stdout


# -- concurrency --------------------------------------------------------------------------
def test_concurrent_requests_match_the_same_requests_run_alone(client):
    bodies = [{**FAST, "seed": s, "model": m} for s, m in
              ((1, "tiny-sd15"), (2, "tiny-single"), (3, "tiny-sd15"), (4, "bildwerk-tiny"))]
    alone = [client.post("/txt2img", json=b).json()["images"][0]["sha256"] for b in bodies]
    # "batch": false: two of them would otherwise share one call, equal only within
    # rounding (tests/routers/test_batching.py); this test is about isolation, bytewise.
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda b: client.post("/txt2img", json={**b, "batch": False},
                                                   headers=ASYNC).json()["job_id"], bodies))
    together = [wait_for_job(client, j)["result"]["images"][0]["sha256"] for j in jobs]
    assert together == alone
