"""Edges found in review of img2seq and the registry, each pinned through the API."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import wait_for_job
from tests.routers.test_jobs import read_events
from tests.utils.images import data_url, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

FAST = {"prompt": "a mill", "steps": 3, "width": 64, "height": 64, "seed": 2}
SEQ = {"image": data_url(scene(64, 64)), "prompt": "x", "frames": 2, "steps": 4,
       "width": 64, "height": 64}


@pytest.mark.parametrize("motion", ['{"pan_x": NaN}', '{"zoom": Infinity}',
                                    '{"pan_y": [0, -Infinity]}'])
def test_non_finite_numbers_are_a_422(client, motion):
    body = json.dumps({**SEQ})[:-1] + f', "motion": {motion}}}'
    r = client.post("/img2seq", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("motion")


def test_clip_skip_deeper_than_the_text_encoder_is_a_422(client):
    for model in ("tiny-sd15", "tiny-sdxl"):
        r = client.post("/txt2img", json={**FAST, "model": model, "clip_skip": 12})
        assert r.status_code == 422 and r.json()["error"]["param"] == "clip_skip"
    assert client.post("/txt2img", json={**FAST, "clip_skip": 2}).status_code == 200


def test_gif_above_50_fps_is_refused(client):
    r = client.post("/img2seq", json={**SEQ, "fps": 60, "packages": ["gif"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "fps"


def test_late_sse_subscribers_still_get_every_frame(client):
    job_id = client.post("/img2seq", json={**SEQ, "frames": 4},
                         headers={"Prefer": "respond-async"}).json()["job_id"]
    wait_for_job(client, job_id, until=lambda s: (s["progress"].get("frame") or 0) >= 2)
    frames = [d["name"] for n, d in read_events(client, job_id) if n == "frame"]
    assert frames == [f"frame_{i:04d}.png" for i in range(1, 5)]


@pytest.fixture
def own(models_dir, tmp_path):
    dest = tmp_path / "own"
    shutil.copytree(models_dir, dest, ignore=shutil.ignore_patterns("tiny-sd2*", "tiny-sdxl*"))
    return dest


def test_merge_never_overwrites_files_on_disk(make_client, own):
    (own / "junk.safetensors").write_bytes(b"not a model, but somebody's file")
    client = make_client(models_dir=own)
    r = client.post("/models/merge", json={"a": "tiny-sd15", "b": "bildwerk-tiny",
                                           "name": "junk"})
    assert r.status_code == 409
    assert (own / "junk.safetensors").read_bytes() == b"not a model, but somebody's file"
    body = {"a": "tiny-sd15", "b": "bildwerk-tiny", "name": "twice"}
    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: client.post("/models/merge", json=body).status_code,
                                range(2)))
    assert codes == [201, 409]
    assert not list(own.glob(".*.tmp"))


def test_merge_with_a_dotted_lora_name_and_a_broken_source(make_client, own):
    loras = own / "loras"
    shutil.copy(loras / "style-diffusers.safetensors", loras / "my.style v2.safetensors")
    client = make_client(models_dir=own)
    r = client.post("/models/merge", json={"a": "tiny-sd15", "b": "bildwerk-tiny",
                                           "name": "dotted",
                                           "loras": [{"name": "my.style v2"}]})
    assert r.status_code == 201, r.text
    r = client.post("/models/merge", json={"a": "tiny-sd15", "b": "broken", "name": "nope"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "model_load_failed"
    assert r.json()["error"]["param"] == "b"


def test_vaes_count_toward_the_memory_budget(make_client):
    client = make_client(memory_budget_mb=5)
    client.post("/txt2img", json={**FAST, "vae": "tiny-vae"})
    registry = client.app.state.registry
    assert registry.resident_bytes == registry.loaded_info("tiny-sd15").resident_bytes + \
        registry.vae_cache.resident_bytes > registry.loaded_info("tiny-sd15").resident_bytes
    assert client.post("/txt2img", json={**FAST, "model": "tiny-single"}).status_code == 200
    assert registry.resident_bytes <= 5 * 2**20


def test_duplicate_weight_files_do_not_inflate_the_estimate(make_client, own):
    shutil.copytree(own / "tiny-sd15", own / "with-fp16")
    unet = own / "with-fp16" / "unet"
    shutil.copy(unet / "diffusion_pytorch_model.safetensors",
                unet / "diffusion_pytorch_model.fp16.safetensors")
    client = make_client(models_dir=own, memory_budget_mb=5)
    assert client.post("/txt2img", json={**FAST, "model": "with-fp16"}).status_code == 200


def test_a_refresh_unloads_models_whose_files_vanished(make_client, own):
    shutil.copytree(own / "tiny-sd15", own / "temporary")
    client = make_client(models_dir=own)
    assert client.post("/models/temporary/load").json()["loaded"]
    shutil.rmtree(own / "temporary")
    ids = {m["id"] for m in client.post("/models/refresh").json()}
    assert "temporary" not in ids
    assert not client.app.state.registry.is_loaded("temporary")
