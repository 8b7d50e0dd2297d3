"""POST /inpainting/: the museum kiosk's existing client keeps working unchanged."""

from __future__ import annotations

import numpy as np

from tests.utils.images import data_url, decode, kiosk_mask, pixels, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

SIZE = (120, 90)
BOX = (40, 30, 70, 55)


def test_kiosk_body_returns_raw_png_of_the_input_size(client):
    image = scene(*SIZE, seed=3)
    r = client.post("/inpainting/", json={"prompt": "ein See mitten in der Stadt",
                                          "image": data_url(image),
                                          "mask": data_url(kiosk_mask(SIZE, BOX)),
                                          "model": 0, "guidance_scale": 7})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out = decode(r.content)
    assert out.size == SIZE
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert record["endpoint"] == "inpainting" and record["status"] == "succeeded"
    applied = np.asarray(decode(client.get(f"/blobs/{record['mask_applied_sha256']}").content))
    outside = applied == 0
    assert np.array_equal(pixels(out)[outside], pixels(image)[outside])


def test_kiosk_model_1_without_an_openai_key_is_a_clear_error(client):
    r = client.post("/inpainting/", json={"prompt": "x", "image": data_url(scene(*SIZE)),
                                          "mask": data_url(kiosk_mask(SIZE, BOX)),
                                          "model": 1})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "provider_unavailable"
    assert r.json()["error"]["param"] == "provider"
    assert "OPENAI_API_KEY not set" in r.json()["error"]["message"]


def test_kiosk_body_without_optional_fields(client):
    r = client.post("/inpainting/", json={"prompt": "Wald", "image": data_url(scene(*SIZE)),
                                          "mask": data_url(kiosk_mask(SIZE, BOX))})
    assert r.status_code == 200 and decode(r.content).size == SIZE
