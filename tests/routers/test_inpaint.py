"""POST /inpaint: only the masked area changes, the output keeps the input's size."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image

from tests.utils.images import box_mask, data_url, decode, kiosk_mask, pixels, png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

SIZE = (100, 76)  # deliberately not a multiple of 8
BOX = (30, 20, 59, 45)


def inpaint(client, image: Image.Image, mask: Image.Image, **params):
    body = {"prompt": "a red roof", "image": data_url(image), "mask": data_url(mask),
            "steps": 4, "seed": 11, "width": 64, "height": 64, **params}
    return client.post("/inpaint", json=body)


def fetch(client, ref: dict) -> Image.Image:
    return decode(client.get(ref["url"]).content)


@pytest.mark.parametrize("area", ["masked", "full"])
@pytest.mark.parametrize("blur", [0, 6])
def test_pixels_outside_the_blurred_mask_are_unchanged(client, area, blur):
    image, mask = scene(*SIZE), box_mask(SIZE, BOX)
    r = inpaint(client, image, mask, inpaint_area=area, mask_blur=blur)
    assert r.status_code == 200, r.text
    body = r.json()
    out = fetch(client, body["images"][0])
    assert out.size == SIZE
    applied = np.asarray(fetch(client, body["mask_applied"]))
    outside = applied == 0
    assert outside.sum() > 0.4 * applied.size  # most of the picture is outside
    assert np.array_equal(pixels(out)[outside], pixels(image)[outside])
    inside = np.asarray(mask) > 0
    assert (applied[inside] == 255).all()  # the painted area is always fully applied
    assert not np.array_equal(pixels(out)[inside], pixels(image)[inside])
    if blur == 0:
        assert np.array_equal(applied > 0, inside)


def test_kiosk_alpha_mask_and_white_mask_mean_the_same_area(client):
    image = scene(*SIZE)
    white = inpaint(client, image, box_mask(SIZE, BOX)).json()
    alpha = inpaint(client, image, kiosk_mask(SIZE, BOX)).json()
    assert white["mask_applied"]["sha256"] == alpha["mask_applied"]["sha256"]
    assert white["images"][0]["sha256"] == alpha["images"][0]["sha256"]


def test_invert_mask_changes_the_other_side(client):
    image, mask = scene(*SIZE), box_mask(SIZE, BOX)
    body = inpaint(client, image, mask, invert_mask=True, mask_blur=0,
                   inpaint_area="full").json()
    out = pixels(fetch(client, body["images"][0]))
    inside = np.asarray(mask) > 0
    assert np.array_equal(out[inside], pixels(image)[inside])


def test_same_seed_same_bytes(client):
    image, mask = scene(*SIZE), box_mask(SIZE, BOX)
    a = inpaint(client, image, mask).json()["images"][0]["sha256"]
    b = inpaint(client, image, mask).json()["images"][0]["sha256"]
    c = inpaint(client, image, mask, seed=12).json()["images"][0]["sha256"]
    assert a == b != c


def test_nine_channel_inpaint_model_keeps_outside_pixels(client):
    image, mask = scene(*SIZE), box_mask(SIZE, BOX)
    body = inpaint(client, image, mask, model="tiny-sd15-inpaint").json()
    assert body["model"] == "tiny-sd15-inpaint"
    out = pixels(fetch(client, body["images"][0]))
    outside = np.asarray(fetch(client, body["mask_applied"])) == 0
    assert np.array_equal(out[outside], pixels(image)[outside])


def test_inpaint_model_refuses_txt2img_clearly(client):
    r = client.post("/txt2img", json={"prompt": "x", "steps": 1,
                                      "model": "tiny-sd15-inpaint"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "model"


def test_multipart_upload(client):
    image, mask = scene(*SIZE), box_mask(SIZE, BOX)
    r = client.post("/inpaint", data={"prompt": "a pond", "steps": "3", "seed": "4",
                                      "width": "64", "height": "64"},
                    files={"image": ("map.png", png_bytes(image), "image/png"),
                           "mask": ("mask.png", png_bytes(mask), "image/png")})
    assert r.status_code == 200, r.text
    assert fetch(client, r.json()["images"][0]).size == SIZE


def test_image_by_stored_blob_sha(client):
    image, mask = scene(*SIZE), box_mask(SIZE, BOX)
    first = inpaint(client, image, mask).json()
    record = client.get(f"/records/{first['record_id']}").json()
    again = client.post("/inpaint", json={
        "prompt": "a red roof", "image": record["input_image_sha256"],
        "mask": record["mask_sha256"], "steps": 4, "seed": 11, "width": 64, "height": 64})
    assert again.status_code == 200, again.text
    assert again.json()["images"][0]["sha256"] == first["images"][0]["sha256"]


def _truncated_png() -> str:
    raw = png_bytes(scene(*SIZE))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


@pytest.mark.parametrize("field, value, status, code", [
    ("image", "data:image/png;base64,@@@not-base64@@@", 422, "invalid_image"),
    ("image", "", 422, "invalid_image"),
    ("image", _truncated_png(), 422, "invalid_image"),
    ("image", base64.b64encode(b"plain text, not an image").decode(), 422, "invalid_image"),
    ("image", "0" * 64, 422, "invalid_image"),  # a sha256 that is not stored
    ("mask", data_url(box_mask((64, 64), (0, 0, 10, 10))), 422, "mask_size_mismatch"),
    ("mask", data_url(Image.new("L", SIZE, 0)), 422, "invalid_input"),  # nothing to change
])
def test_bad_images_get_4xx_envelopes_and_the_server_keeps_serving(client, field, value,
                                                                    status, code):
    body = {"prompt": "x", "image": data_url(scene(*SIZE)),
            "mask": data_url(box_mask(SIZE, BOX)), "steps": 1, field: value}
    r = client.post("/inpaint", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["param"] == field
    ok = client.post("/txt2img", json={"prompt": "still alive", "steps": 1, "width": 64,
                                       "height": 64})
    assert ok.status_code == 200


def test_an_upload_over_the_input_limit_gets_413(make_client):
    client = make_client(max_input_side=256)
    big = scene(300, 200)
    r = inpaint(client, big, box_mask(big.size, (10, 10, 50, 50)))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["param"] == "image"


def test_a_map_larger_than_the_processing_limit_is_inpainted_in_its_crop(make_client):
    """Only the crop around the mask is processed (at the model's size), so the upload may
    be larger than what a model takes whole; the crop is pasted back, the rest unchanged."""
    client = make_client(max_pixels=128 * 128, max_width=128)
    big = scene(300, 200)
    mask = box_mask(big.size, (200, 120, 240, 160))
    r = inpaint(client, big, mask, width=64, height=64, mask_blur=0, padding=8)
    assert r.status_code == 200, r.text
    out = fetch(client, r.json()["images"][0])
    assert out.size == big.size
    outside = np.asarray(mask) == 0
    assert np.array_equal(pixels(out)[outside], pixels(big)[outside])


def test_processing_the_whole_oversized_image_gets_413(make_client):
    client = make_client(max_pixels=128 * 128, max_width=128)
    big = scene(300, 200)
    r = inpaint(client, big, box_mask(big.size, (10, 10, 50, 50)), inpaint_area="full",
                width=None, height=None)  # the whole image, at its own size
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["param"] == "width"


def test_decompression_bomb_is_refused_without_decoding(make_client):
    client = make_client()
    bomb = Image.new("1", (20000, 20000), 0)  # 50 MB of pixels, a few KB as PNG
    r = client.post("/inpaint", json={"prompt": "x", "image": data_url(bomb),
                                      "mask": data_url(bomb)})
    assert r.status_code == 413, r.text


def test_wrong_content_type_gets_415(client):
    r = client.post("/inpaint", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_body_over_the_limit_gets_413(make_client):
    client = make_client(max_body_bytes=4096)
    r = inpaint(client, scene(200, 200), box_mask((200, 200), BOX))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
