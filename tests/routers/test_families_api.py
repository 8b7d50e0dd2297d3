"""SD2.1 (v-prediction), SDXL (two text encoders) and their variants through the API."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.utils.images import box_mask, data_url, decode, pixels, scene

FAST = {"prompt": "a harbour", "steps": 3, "width": 64, "height": 64, "seed": 5}
SIZE, BOX = (72, 64), (20, 16, 47, 41)


def test_models_report_family_variant_and_prediction_type(client):
    models = {m["id"]: m for m in client.get("/models").json()}
    expect = {
        "tiny-sd15": ("sd15", "base", "epsilon"),
        "tiny-sd15-inpaint": ("sd15", "inpaint", "epsilon"),
        "tiny-sd21": ("sd21", "base", "v_prediction"),
        "tiny-sd21-inpaint": ("sd21", "inpaint", "epsilon"),
        "tiny-sdxl": ("sdxl", "base", "epsilon"),
        "tiny-sdxl-inpaint": ("sdxl", "inpaint", "epsilon"),
        "tiny-sdxl-refiner": ("sdxl", "refiner", "epsilon"),
    }
    for model_id, (family, variant, prediction) in expect.items():
        m = models[model_id]
        assert (m["family"], m["variant"], m["prediction_type"]) == (family, variant,
                                                                      prediction), model_id


@pytest.mark.parametrize("model", ["tiny-sd21", "tiny-sdxl"])
def test_txt2img_on_other_families_is_reproducible(client, model):
    a = client.post("/txt2img", json={**FAST, "model": model, "clip_skip": 2})
    assert a.status_code == 200, a.text
    b = client.post("/txt2img", json={**FAST, "model": model, "clip_skip": 2}).json()
    assert a.json()["images"][0]["sha256"] == b["images"][0]["sha256"]


@pytest.mark.parametrize("model", ["tiny-sd21-inpaint", "tiny-sdxl-inpaint", "tiny-sdxl"])
def test_inpaint_on_other_families_keeps_outside_pixels(client, model):
    image = scene(*SIZE, seed=4)
    r = client.post("/inpaint", json={**FAST, "model": model, "image": data_url(image),
                                      "mask": data_url(box_mask(SIZE, BOX))})
    assert r.status_code == 200, r.text
    out = pixels(decode(client.get(r.json()["images"][0]["url"]).content))
    outside = np.asarray(decode(client.get(r.json()["mask_applied"]["url"]).content)) == 0
    assert out.shape[:2] == SIZE[::-1]
    assert np.array_equal(out[outside], pixels(image)[outside])


def test_the_sdxl_refiner_refines_but_neither_generates_nor_inpaints(client):
    for path, extra in (("/txt2img", {}),
                        ("/inpaint", {"image": data_url(scene(*SIZE)),
                                      "mask": data_url(box_mask(SIZE, BOX))})):
        r = client.post(path, json={**FAST, "model": "tiny-sdxl-refiner", **extra})
        assert r.status_code == 422 and r.json()["error"]["param"] == "model"
        assert "refiner" in r.json()["error"]["message"]
    r = client.post("/img2seq", json={"image": data_url(scene(64, 64)), "prompt": "x",
                                      "frames": 2, "steps": 4, "model": "tiny-sdxl-refiner"})
    assert r.status_code == 200, r.text


def test_img2seq_on_sdxl(client):
    r = client.post("/img2seq", json={"image": data_url(scene(64, 64)), "prompt_schedule": {
        "0": "spring", "2": "winter"}, "frames": 3, "steps": 4, "model": "tiny-sdxl"})
    assert r.status_code == 200, r.text
    assert [f["prompt_weight"] for f in r.json()["frames"]] == [0.0, 0.5, 0.0]


def test_a_lora_for_another_family_is_a_clear_422(client):
    r = client.post("/txt2img", json={**FAST, "model": "tiny-sdxl",
                                      "loras": [{"name": "style-diffusers"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "loras"


def test_models_of_different_families_do_not_merge(client):
    r = client.post("/models/merge", json={"a": "tiny-sd15", "b": "tiny-sd21", "name": "x"})
    assert r.status_code == 422 and "families" in r.json()["error"]["message"]


def test_an_sdxl_merge_is_written_as_one_file_and_loads(make_client, models_dir, tmp_path):
    own = tmp_path / "own"
    shutil.copytree(models_dir, own, ignore=shutil.ignore_patterns("broken", "tiny-sd*"))
    shutil.copytree(models_dir / "tiny-sdxl", own / "tiny-sdxl")
    client = make_client(models_dir=own, default_model=None)
    r = client.post("/models/merge", json={"a": "tiny-sdxl", "b": "tiny-sdxl", "alpha": 0.5,
                                           "name": "xl-merge"})
    assert r.status_code == 201, r.text
    assert (r.json()["family"], r.json()["format"]) == ("sdxl", "single_file")
    merged = client.post("/txt2img", json={**FAST, "model": "xl-merge"}).json()
    original = client.post("/txt2img", json={**FAST, "model": "tiny-sdxl"}).json()
    a = pixels(decode(client.get(merged["images"][0]["url"]).content)).astype(int)
    b = pixels(decode(client.get(original["images"][0]["url"]).content)).astype(int)
    assert np.abs(a - b).max() <= 1
