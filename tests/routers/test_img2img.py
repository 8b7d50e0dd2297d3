"""POST /img2img: the whole image is repainted towards the prompt, as far as `strength`
says, at the image's own size unless width/height say otherwise. (That a lower strength
stays closer to the input needs a model that draws: tests/training/test_micro_model.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.imaging.fit import fit_image
from tests.conftest import wait_for_job
from tests.utils.images import data_url, decode, pixels, png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

SIZE = (100, 76)  # not a multiple of 8: the output is 96x72


def img2img(client, picture: Image.Image, **params):
    body = {"prompt": "an oil painting", "image": data_url(picture), "steps": 10, "seed": 5}
    body.update(params)
    return client.post("/img2img", json=body)


def first_image(client, response) -> Image.Image:
    assert response.status_code == 200, response.text
    return decode(client.get(response.json()["images"][0]["url"]).content)


def test_output_has_the_input_size_rounded_to_eight_and_same_seed_same_bytes(client):
    image = scene(*SIZE)
    a, b = img2img(client, image), img2img(client, image)
    c = img2img(client, image, seed=6)
    assert first_image(client, a).size == (96, 72)
    shas = [r.json()["images"][0]["sha256"] for r in (a, b, c)]
    assert shas[0] == shas[1] != shas[2]
    body = a.json()
    assert body["endpoint"] == "img2img" and body["parameters"]["strength"] == 0.75


def test_only_steps_times_strength_steps_run(client):
    r = client.post("/img2img", headers={"Prefer": "respond-async"}, json={
        "prompt": "x", "image": data_url(scene(64, 64)), "steps": 10, "strength": 0.3,
        "seed": 1})
    assert r.status_code == 202, r.text
    status = wait_for_job(client, r.json()["job_id"])
    assert status["status"] == "succeeded"
    assert status["progress"]["total"] == 3


@pytest.mark.parametrize("mode", ["resize", "crop", "fill"])
def test_resize_mode_fits_the_image_to_the_requested_size(client, mode):
    out = first_image(client, img2img(client, scene(*SIZE), width=64, height=128,
                                      resize_mode=mode))
    assert out.size == (64, 128)


def test_fill_keeps_the_whole_image_and_crop_the_centre():
    image = scene(100, 50)
    filled = fit_image(image, (100, 100), "fill")
    assert np.array_equal(pixels(filled)[25:75], pixels(image))
    cropped = fit_image(image, (50, 50), "crop")
    assert np.array_equal(pixels(cropped), pixels(image.crop((25, 0, 75, 50))))


def test_multipart_upload_is_recorded_with_its_input(client):
    image = scene(64, 64)
    raw = png_bytes(image)
    r = client.post("/img2img", data={"prompt": "a harbour", "steps": "4", "seed": "2",
                                      "strength": "0.5"},
                    files={"image": ("in.png", raw, "image/png")})
    assert r.status_code == 200, r.text
    record = client.get(f"/records/{r.json()['record_id']}").json()
    assert record["endpoint"] == "img2img" and record["status"] == "succeeded"
    stored = client.get(f"/blobs/{record['input_image_sha256']}").content
    assert stored == raw


@pytest.mark.parametrize(("params", "param"), [
    ({"strength": 0}, "strength"), ({"strength": 1.5}, "strength"),
    ({"resize_mode": "stretch"}, "resize_mode"), ({"image": "not-an-image"}, "image"),
    ({"width": 65}, "width")])
def test_bad_input_is_a_422_naming_the_field(client, params, param):
    r = img2img(client, scene(64, 64), **params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param
