"""POST /inpainting/ with the bodies the museum kiosk's own code sends, and what its
original server tolerated: extra fields, large maps, empty masks, masks of another size.
Every request, refused ones too, leaves a record."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.security.conftest import bearer, make_key
from tests.utils.images import data_url, decode, kiosk_mask, pixels, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

SIZE = (120, 90)
BOX = (40, 30, 70, 55)


def big_map(side: int) -> Image.Image:
    """A map-like picture of ``side`` px, cheap to encode: smooth fields, roads, a river."""
    x = np.linspace(0, 1, side, dtype=np.float32)
    fields = np.stack([60 + 80 * x[None, :] + 0 * x[:, None], 110 + 60 * x[:, None] + 0 * x,
                       np.full((side, side), 70, np.float32)], axis=-1).astype(np.uint8)
    img = Image.fromarray(fields, "RGB")
    draw = ImageDraw.Draw(img)
    for i in range(0, side, side // 8):
        draw.line([(i, 0), (side - i, side)], fill=(200, 200, 190), width=3)
    draw.rectangle([0, side * 3 // 4, side, side * 3 // 4 + 20], fill=(40, 70, 160))
    return img


def kiosk_body(image: Image.Image, mask: Image.Image | str, **extra) -> dict:
    """What the kiosk backend sends: prompt, image and mask as PNG data-URLs."""
    return {"prompt": "Hier soll ein Windpark entstehen", "image": data_url(image),
            "mask": mask if isinstance(mask, str) else data_url(mask), **extra}


def record_of(client, response, headers: dict | None = None) -> dict:
    return client.get(f"/records/{response.headers['x-bildwerk-record-id']}",
                      headers=headers).json()


def assert_unpainted_unchanged(client, response, image: Image.Image,
                               headers: dict | None = None) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out = decode(response.content)
    assert out.size == image.size
    record = record_of(client, response, headers)
    applied = np.asarray(decode(client.get(f"/blobs/{record['mask_applied_sha256']}",
                                           headers=headers).content))
    outside = applied == 0
    assert np.array_equal(pixels(out)[outside], pixels(image)[outside])
    assert not np.array_equal(pixels(out)[~outside], pixels(image)[~outside])


@pytest.mark.parametrize("extra", [
    {}, {"realism": "10"}, {"model": 0, "guidance_scale": 7},
    {"model": 0, "guidance_scale": 7, "realism": "10", "style": {"any": ["thing"]}},
], ids=["three-fields", "realism", "model-and-guidance", "several-unknown"])
def test_every_body_the_kiosk_sends_is_inpainted(client, extra):
    image = scene(*SIZE, seed=5)
    r = client.post("/inpainting/", json=kiosk_body(image, kiosk_mask(SIZE, BOX), **extra))
    assert_unpainted_unchanged(client, r, image)
    assert record_of(client, r)["status"] == "succeeded"


def test_the_native_route_stays_strict_about_unknown_fields(client):
    image = scene(*SIZE)
    r = client.post("/inpaint", json=kiosk_body(image, kiosk_mask(SIZE, BOX), realism="10"))
    assert r.status_code == 422 and r.json()["error"]["param"] == "realism"


# image handling, not storage: SQLite alone (the records are checked on both elsewhere)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("side", [1843, 2112])
def test_maps_of_wide_screens_are_accepted_and_only_the_crop_is_processed(client, side):
    """96vw of a 1920-wide screen is 1843 px, of a 2560-wide one 2458 px: above the
    2048 px processing limit. Only the crop around the painting is processed."""
    image = big_map(side)
    box = (side // 2, side // 3, side // 2 + 90, side // 3 + 70)
    r = client.post("/inpainting/", json=kiosk_body(image, kiosk_mask(image.size, box)))
    assert_unpainted_unchanged(client, r, image)


def test_a_map_beyond_the_upload_limit_is_413(make_client):
    client = make_client(max_input_side=1024)
    image = big_map(1100)
    r = client.post("/inpainting/", json=kiosk_body(image, kiosk_mask(image.size, BOX)))
    assert r.status_code == 413 and r.json()["error"]["param"] == "image"
    assert "1024" in r.json()["error"]["message"]


@pytest.mark.parametrize("mask", ["", "transparent"], ids=["empty-string", "nothing-painted"])
def test_an_empty_mask_answers_the_image_unchanged(client, mask):
    image = scene(*SIZE, seed=9)
    raw = io.BytesIO()
    image.save(raw, format="PNG")
    if mask == "transparent":
        mask = data_url(Image.new("RGBA", SIZE, (0, 0, 0, 0)))
    r = client.post("/inpainting/", json=kiosk_body(image, mask))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert np.array_equal(pixels(decode(r.content)), pixels(image))
    record = record_of(client, r)
    assert record["status"] == "succeeded" and record["endpoint"] == "inpainting"
    assert "unchanged" in " ".join(record["params"]["notes"])
    assert record["outputs"][0]["sha256"] and record["input_image_sha256"]


def test_the_native_route_refuses_an_empty_mask(client):
    image = scene(*SIZE)
    r = client.post("/inpaint", json=kiosk_body(
        image, data_url(Image.new("RGBA", SIZE, (0, 0, 0, 0)))))
    assert r.status_code == 422 and r.json()["error"]["param"] == "mask"


def test_a_mask_of_another_size_is_resized_and_noted(client):
    """An older frontend with a non-square map sent a square mask."""
    image = scene(160, 90, seed=2)
    square = kiosk_mask((90, 90), (30, 30, 60, 60))  # stretched to 160x90: x 53..107
    r = client.post("/inpainting/", json=kiosk_body(image, square))
    assert_unpainted_unchanged(client, r, image)
    notes = record_of(client, r)["params"]["notes"]
    assert any("mask resized from 90x90 to 160x90" in note for note in notes)
    applied = np.asarray(decode(client.get(
        f"/blobs/{record_of(client, r)['mask_applied_sha256']}").content))
    columns = np.flatnonzero(applied.max(axis=0))
    assert 40 <= columns.min() <= 53 and 107 <= columns.max() <= 120  # the stretched box


def test_the_native_route_refuses_a_mask_of_another_size(client):
    r = client.post("/inpaint", json=kiosk_body(scene(160, 90), kiosk_mask((90, 90), BOX)))
    assert r.status_code == 422 and r.json()["error"]["code"] == "mask_size_mismatch"


def rejected(client, endpoint: str) -> list[dict]:
    r = client.get("/records", params={"status": "rejected", "endpoint": endpoint})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_a_refused_kiosk_request_is_recorded_with_its_prompt_and_inputs(client):
    image = scene(*SIZE, seed=4)
    r = client.post("/inpainting/", json=kiosk_body(image, kiosk_mask(SIZE, BOX), model=1))
    assert r.status_code == 422 and r.json()["error"]["code"] == "provider_unavailable"
    [record] = rejected(client, "inpainting")
    assert record["prompt"] == "Hier soll ein Windpark entstehen"
    assert record["error_code"] == "provider_unavailable"
    assert "OPENAI_API_KEY" in record["error_message"]
    stored = decode(client.get(f"/blobs/{record['input_image_sha256']}").content)
    assert np.array_equal(pixels(stored), pixels(image))
    assert record["mask_sha256"]


def test_a_body_that_does_not_validate_is_recorded_too(client):
    image = scene(*SIZE)
    r = client.post("/inpainting/", json=kiosk_body(image, kiosk_mask(SIZE, BOX), model=7))
    assert r.status_code == 422 and r.json()["error"]["param"] == "model"
    [record] = rejected(client, "inpainting")
    assert record["prompt"] == "Hier soll ein Windpark entstehen"
    assert record["error_code"] == "invalid_input" and "model" in record["error_message"]
    assert record["input_image_sha256"]  # the image decoded, so it is kept
    r = client.post("/inpaint", json=kiosk_body(image, "not an image", realism="10"))
    assert r.status_code == 422
    [native] = rejected(client, "inpaint")
    assert native["error_message"].startswith("realism")
    assert native["input_image_sha256"] and native["mask_sha256"] is None


def test_loopback_keeps_the_kiosk_working_after_a_key_is_created(client):
    _, secret = make_key(client, "curator", "admin")
    image = scene(*SIZE, seed=1)
    r = client.post("/inpainting/", json=kiosk_body(image, kiosk_mask(SIZE, BOX)))
    assert_unpainted_unchanged(client, r, image, bearer(secret))
    assert record_of(client, r, bearer(secret))["client"]["key_id"] is None


@pytest.mark.parametrize("body,where", [
    (b'{"prompt": "x", "image": ,}', "line 1, column 26"),
    (b'{\n  "prompt": "x"\n  "image": "y"\n}', "line 3, column 3"),
])
def test_invalid_json_is_a_400_that_says_where(client, body, where):
    r = client.post("/inpainting/", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_json" and error["param"] is None
    assert error["message"].startswith("body is not valid JSON: ") and where in error["message"]


def hand_written(prompt: str, image: str, mask: str, model: int | None = None) -> bytes:
    """The kiosk backend's body, formatted as a string without escaping, as its Java
    services do (PromptingService; AiChatUnityService adds model and guidance_scale)."""
    body = '{"prompt":"' + prompt + '","image":"' + image + '","mask":"' + mask + '"'
    if model is not None:
        body += f',"model":{model},"guidance_scale":7'
    return (body + "}").encode()


# image handling, not storage: SQLite alone (the records are checked on both elsewhere)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("wish,model", [
    ('Ein "grüner" Platz statt Parkplatz', None),
    ("Hier soll ein Windpark entstehen\nund ein See", 0),
    ('Back\\slash und "Zitat"', 0),
], ids=["quotes", "line-break", "backslash"])
def test_the_backends_unescaped_json_is_read_back(client, wish, model):
    image = scene(*SIZE, seed=6)
    raw = hand_written(wish, data_url(image), data_url(kiosk_mask(SIZE, BOX)), model)
    with pytest.raises(ValueError):
        json.loads(raw)  # what the backend sends is not JSON
    r = client.post("/inpainting/", content=raw, headers={"content-type": "application/json"})
    assert_unpainted_unchanged(client, r, image)
    record = record_of(client, r)
    assert record["prompt"] == wish
    assert any("read back" in note for note in record["params"]["notes"])


def test_other_invalid_json_on_the_kiosk_route_stays_a_400(client):
    raw = b'{"prompt":"x","image":"a","mask":"b","extra":"c"'
    r = client.post("/inpainting/", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    raw = hand_written('a "quoted" wish', "a", "b")  # the kiosk's shape, but on /inpaint
    r = client.post("/inpaint", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
