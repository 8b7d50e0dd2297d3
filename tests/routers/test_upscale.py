"""POST /upscale and GET /upscalers: built-ins and model upscalers (tiny random ESRGAN and
Real-ESRGAN compact files in the test models dir), recorded like every job."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import wait_for_job
from tests.utils.images import data_url, decode, png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

# Image handling, not storage: these run on SQLite alone (records, jobs and keys are
# checked on both databases by the other tests here and in tests/persistence).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def upscale(client, image: Image.Image, **params):
    return client.post("/upscale", json={"image": data_url(image), **params})


def output(client, response) -> Image.Image:
    assert response.status_code == 200, response.text
    return decode(client.get(response.json()["images"][0]["url"]).content)


def test_a_file_added_after_start_is_found_and_the_list_shows_the_loaded_scale(
        make_client, tmp_path):
    from tests.utils.upscalers import compact_state_dict, save_state_dict

    models = tmp_path / "models"
    client = make_client(models_dir=models, default_model=None)
    assert client.get("/upscalers").json()[-1]["name"] == "Nearest"
    # a x2 model whose name says nothing of its scale
    save_state_dict(compact_state_dict(2, seed=9), models / "upscalers" / "mystery.pth")
    r = upscale(client, scene(20, 10), upscaler="Mystery")
    assert output(client, r).size == (40, 20)  # its own scale, found without a refresh
    listed = {u["name"]: u for u in client.get("/upscalers").json()}
    assert listed["mystery"]["loaded"] and listed["mystery"]["scale"] == 2


def test_the_list_has_the_builtins_and_the_model_files(client):
    listed = {u["name"]: u for u in client.get("/upscalers").json()}
    assert listed["Lanczos"]["kind"] == listed["Nearest"]["kind"] == "builtin"
    assert listed["4x-TinyESRGAN"] == {"name": "4x-TinyESRGAN", "kind": "model", "scale": 4,
                                       "path": "4x-TinyESRGAN.pth", "loaded": False,
                                       "size_bytes": listed["4x-TinyESRGAN"]["size_bytes"]}
    assert "notes" not in listed  # not a model file
    # the folder is no diffusion model
    assert "upscalers" not in {m["id"] for m in client.get("/models").json()}


@SQLITE_ONLY
def test_nearest_matches_pillow_and_keeps_transparency(client):
    image = scene(30, 20).convert("RGBA")
    image.putalpha(Image.new("L", image.size, 90))
    out = output(client, upscale(client, image, upscaler="nearest", scale=2))
    assert out.mode == "RGBA" and out.size == (60, 40)
    expected = image.resize((60, 40), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


@SQLITE_ONLY
@pytest.mark.parametrize(("name", "params", "size"), [
    ("4x-TinyESRGAN", {}, (128, 96)),  # the model's own scale
    ("4x-TinyESRGAN", {"scale": 3}, (96, 72)),  # one pass, then Lanczos down
    ("RealESRGAN_x4-tiny-compact", {"width": 50, "height": 40}, (50, 40)),
    ("tiny-compact-x2", {"scale": 4}, (128, 96)),  # two passes
])
def test_a_model_upscaler_gives_exactly_the_size_asked_for(client, name, params, size):
    r = upscale(client, scene(32, 24), upscaler=name, **params)
    assert output(client, r).size == size
    assert r.json()["model"] == name
    loaded = {u["name"]: u["loaded"] for u in client.get("/upscalers").json()}
    assert loaded[name]


def test_same_input_same_bytes_and_the_record_keeps_input_and_output(client):
    image = scene(40, 40)
    a = upscale(client, image, upscaler="4x-TinyESRGAN", scale=2).json()
    b = upscale(client, image, upscaler="4x-TinyESRGAN", scale=2).json()
    assert a["images"][0]["sha256"] == b["images"][0]["sha256"]
    record = client.get(f"/records/{a['record_id']}").json()
    assert record["endpoint"] == "upscale" and record["status"] == "succeeded"
    assert record["model"] == "4x-TinyESRGAN"
    assert client.get(f"/blobs/{record['input_image_sha256']}").content == png_bytes(image)
    assert [o["sha256"] for o in record["outputs"]] == [a["images"][0]["sha256"]]
    png = Image.open(io.BytesIO(client.get(a["images"][0]["url"]).content))
    assert png.text["parameters"] == ("Postprocess upscaler: 4x-TinyESRGAN, "
                                      "Postprocess upscale by: 2")


def test_progress_counts_tiles_and_png_answer(make_client):
    client = make_client(upscale_tile_size=16, upscale_tile_overlap=4)
    r = client.post("/upscale", headers={"Prefer": "respond-async"}, json={
        "image": data_url(scene(40, 40)), "upscaler": "tiny-compact-x2"})
    assert r.status_code == 202, r.text
    status = wait_for_job(client, r.json()["job_id"])
    assert status["status"] == "succeeded"
    progress = status["progress"]
    assert progress["step"] == progress["total"] >= 4  # tiles of 16 px on 40 px
    png = client.post("/upscale", headers={"Accept": "image/png"}, json={
        "image": data_url(scene(10, 10)), "upscaler": "Lanczos"})
    assert png.headers["content-type"] == "image/png"
    assert decode(png.content).size == (20, 20)  # built-ins default to x2


@SQLITE_ONLY
def test_multipart_upload_works(client):
    r = client.post("/upscale", data={"upscaler": "Lanczos", "scale": "1.5"},
                    files={"image": ("in.png", png_bytes(scene(20, 20)), "image/png")})
    assert output(client, r).size == (30, 30)


@SQLITE_ONLY
@pytest.mark.parametrize(("params", "status", "param"), [
    ({"upscaler": "no-such"}, 404, "upscaler"),
    ({"upscaler": "1x-restore"}, 422, "upscaler"),  # a restoration model, not an upscaler
    ({"upscaler": "garbage"}, 422, "upscaler"),
    ({"upscaler": "Lanczos", "scale": 0}, 422, "scale"),
    ({"upscaler": "Lanczos", "width": 100}, 422, None),  # width without height
    ({"upscaler": "Lanczos", "scale": 16, "width": 10, "height": 10}, 422, None),
])
def test_bad_requests_are_refused_with_the_reason(client, params, status, param):
    r = upscale(client, scene(32, 24), **params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_an_output_beyond_the_limit_is_refused_before_any_work(make_client):
    client = make_client(upscale_max_output_pixels=100 * 100)
    r = upscale(client, scene(32, 24), upscaler="Lanczos", scale=4)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
