"""`style`, `translate` and `expand_prompt` on /txt2img, /inpaint, /img2seq and the kiosk's
/inpainting/: the prompt the pipeline gets, and the record keeping it as typed, translated
and expanded."""

from __future__ import annotations

import numpy as np

from tests.utils.images import data_url, decode, kiosk_mask, pixels, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 4}
WISH = "ein See mitten in Olpe"


def record_of(client, body: dict) -> dict:
    return client.get(f"/records/{body['record_id']}").json()


def test_txt2img_translates_expands_and_styles_and_records_every_stage(client):
    r = client.post("/txt2img", json={"prompt": WISH, "translate": True,
                                      "expand_prompt": True, "style": "satellite-map",
                                      **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    record = record_of(client, body)
    assert record["prompt"] == WISH
    assert record["prompt_translated"] == "a lake in the middle of Olpe"
    expanded = record["prompt_expanded"]
    assert expanded.startswith("a lake in the middle of Olpe") and "satellite" in expanded
    assert record["prompt_used"] == expanded == body["prompt"]
    assert body["prompting"]["typed"] == WISH
    assert body["prompting"]["language_detected"] == "de"
    assert body["prompting"]["expander"] == "local"
    assert body["prompting"]["style"] == "satellite-map"
    # The expansion is the local expander's for this seed: same as /prompt-expand gives.
    direct = client.post("/prompt-expand", json={"idea": WISH, "style": "satellite-map",
                                                 "count": 1, "seed": 4}).json()
    assert direct["prompts"][0]["prompt"] == expanded
    assert body["negative_prompt"] == direct["prompts"][0]["negative_prompt"]


def test_a_style_wraps_the_prompt_and_recommends_steps(client):
    r = client.post("/txt2img", json={"prompt": "a harbour", "style": "watercolor",
                                      "width": 64, "height": 64, "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "a harbour" in body["prompt"] and body["prompt"] != "a harbour"
    assert body["negative_prompt"]
    assert body["parameters"]["steps"] == 30  # the style's, since the request set none
    record = record_of(client, body)
    assert record["prompt"] == "a harbour" and record["prompt_used"] == body["prompt"]
    assert record["prompt_translated"] is None and record["prompt_expanded"] is None
    explicit = client.post("/txt2img", json={"prompt": "a harbour", "style": "watercolor",
                                             **SMALL}).json()
    assert explicit["parameters"]["steps"] == 2  # what the client set wins


def test_the_same_options_give_the_same_bytes(client):
    body = {"prompt": WISH, "translate": True, "expand_prompt": True, **SMALL}
    a = client.post("/txt2img", json=body, headers={"Accept": "image/png"})
    b = client.post("/txt2img", json=body, headers={"Accept": "image/png"})
    assert a.status_code == b.status_code == 200
    assert a.content == b.content


def test_without_options_the_prompt_is_used_as_typed(client):
    body = client.post("/txt2img", json={"prompt": WISH, **SMALL}).json()
    assert body["prompt"] == WISH
    record = record_of(client, body)
    assert record["prompt_used"] == WISH and record["prompt_translated"] is None


def test_an_unknown_style_is_refused_before_any_work(client):
    r = client.post("/txt2img", json={"prompt": "x", "style": "nope", **SMALL})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "style"
    [record] = client.get("/records", params={"endpoint": "txt2img"}).json()["items"]
    assert record["status"] == "rejected" and "unknown style 'nope'" in record["error_message"]


def test_inpaint_with_translate_keeps_pixels_outside_the_mask(client):
    image = scene(96, 64, seed=2)
    mask = kiosk_mask((96, 64), (30, 20, 60, 44))
    r = client.post("/inpaint", json={"prompt": "ein roter See", "translate": True,
                                      "style": "satellite-map", "image": data_url(image),
                                      "mask": data_url(mask), **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    record = record_of(client, body)
    assert record["prompt"] == "ein roter See"
    assert record["prompt_translated"] == "a red lake"
    assert body["prompt"].startswith("satellite") or "a red lake" in body["prompt"]
    out = decode(client.get(body["images"][0]["url"]).content)
    applied = pixels(decode(client.get(f"/blobs/{record['mask_applied_sha256']}").content))
    outside = applied == 0
    assert np.array_equal(pixels(out)[outside], pixels(image)[outside])


def test_the_kiosk_translates_the_wish_by_default(client):
    size = (80, 60)
    r = client.post("/inpainting/", json={"prompt": "ein roter See",
                                          "image": data_url(scene(*size, seed=1)),
                                          "mask": data_url(kiosk_mask(size, (20, 20, 50, 40))),
                                          "model": 0})
    assert r.status_code == 200, r.text
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert record["prompt"] == "ein roter See"
    assert record["prompt_translated"] == "a red lake"
    assert record["prompt_used"] == "a red lake"


def test_the_kiosk_translation_can_be_switched_off(make_client):
    client = make_client(kiosk_translate=False)
    size = (80, 60)
    r = client.post("/inpainting/", json={"prompt": "ein roter See",
                                          "image": data_url(scene(*size, seed=1)),
                                          "mask": data_url(kiosk_mask(size, (20, 20, 50, 40))),
                                          "model": 0})
    assert r.status_code == 200, r.text
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert record["prompt_used"] == "ein roter See" and record["prompt_translated"] is None


def test_img2seq_styles_and_translates_every_keyframe(client):
    body = {"image": data_url(scene(64, 64, seed=5)), "frames": 3, "steps": 2, "seed": 1,
            "strength": 0.6, "width": 64, "height": 64, "translate": True,
            "style": "pencil-sketch",
            "prompt_schedule": {"0": "eine Burg im Wald", "2": "eine Burg im Schnee"}}
    r = client.post("/img2seq", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    record = record_of(client, result)
    assert record["prompt"] == "0: eine Burg im Wald | 2: eine Burg im Schnee"
    assert record["prompt_translated"].startswith("0: a castle in the forest | 2: a castle")
    schedule = result["parameters"]["prompt_schedule"]
    assert "a castle in the forest" in schedule["0"] and "pencil" in schedule["0"]
    assert result["frames"][0]["prompt"] == schedule["0"]
