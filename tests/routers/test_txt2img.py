"""POST /txt2img through the HTTP API with tiny real pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.utils.images import decode, pixels

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

# Image handling, not storage: these run on SQLite alone (records, jobs and keys are
# checked on both databases by the other tests here and in tests/persistence).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FAST = {"prompt": "a lighthouse at dusk", "steps": 4, "width": 64, "height": 64}


def test_result_image_can_be_fetched_as_png(client):
    r = client.post("/txt2img", json={**FAST, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded" and body["provider"] == "local"
    assert body["model"] == "tiny-sd15" and body["prompt"] == FAST["prompt"]
    (image,) = body["images"]
    assert image["seed"] == 5 and (image["width"], image["height"]) == (64, 64)

    blob = client.get(image["url"])
    assert blob.status_code == 200
    assert blob.headers["content-type"] == "image/png"
    assert blob.headers["etag"] == f'"{image["sha256"]}"'
    assert decode(blob.content).size == (64, 64)
    assert client.get(image["url"], headers={"If-None-Match": blob.headers["etag"]}
                      ).status_code == 304


@SQLITE_ONLY
def test_same_seed_gives_same_bytes_and_another_seed_does_not(client):
    first = client.post("/txt2img", json={**FAST, "seed": 1234}).json()["images"][0]
    again = client.post("/txt2img", json={**FAST, "seed": 1234}).json()["images"][0]
    other = client.post("/txt2img", json={**FAST, "seed": 1235}).json()["images"][0]
    assert client.get(first["url"]).content == client.get(again["url"]).content
    assert first["sha256"] == again["sha256"]
    assert other["sha256"] != first["sha256"]


@SQLITE_ONLY
def test_batch_gives_consecutive_seeds_each_reproducible_alone(client):
    batch = client.post("/txt2img", json={**FAST, "seed": 40, "num_images": 3}).json()
    assert [img["seed"] for img in batch["images"]] == [40, 41, 42]
    assert len({img["sha256"] for img in batch["images"]}) == 3
    alone = client.post("/txt2img", json={**FAST, "seed": 41}).json()["images"][0]
    diff = np.abs(pixels(decode(client.get(alone["url"]).content)).astype(int)
                  - pixels(decode(client.get(batch["images"][1]["url"]).content)).astype(int))
    assert diff.max() <= 2  # batched matmuls may round differently by a hair


@SQLITE_ONLY
def test_drawn_seed_is_returned_and_reproduces_the_image(client):
    drawn = client.post("/txt2img", json=FAST).json()["images"][0]
    again = client.post("/txt2img", json={**FAST, "seed": drawn["seed"]}).json()["images"][0]
    assert again["sha256"] == drawn["sha256"]


def test_accept_png_returns_the_image_bytes(client):
    r = client.post("/txt2img", json={**FAST, "seed": 9}, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-bildwerk-seed"] == "9"
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert client.get(f"/blobs/{record['outputs'][0]['sha256']}").content == r.content


@SQLITE_ONLY
def test_png_carries_a1111_parameters_and_json(client):
    body = client.post("/txt2img", json={**FAST, "seed": 77, "negative_prompt": "blurry",
                                         "scheduler": "ddim", "guidance_scale": 5.5}).json()
    img = decode(client.get(body["images"][0]["url"]).content)
    params = img.text["parameters"]
    assert params.splitlines()[0] == FAST["prompt"]
    assert "Negative prompt: blurry" in params
    for fragment in ("Steps: 4", "Sampler: ddim", "CFG scale: 5.5", "Seed: 77", "Size: 64x64",
                     "Model: tiny-sd15"):
        assert fragment in params
    meta = json.loads(img.text["bildwerk"])
    assert meta["seed"] == 77 and meta["scheduler"] == "ddim" and meta["steps"] == 4


@SQLITE_ONLY
def test_a_prompt_cannot_forge_lines_of_the_parameters_chunk(client):
    forged = "cat\nNegative prompt: forged\nSteps: 999"
    body = client.post("/txt2img", json={**FAST, "prompt": forged, "seed": 3,
                                         "negative_prompt": "fog\r\nSeed: 1"}).json()
    img = decode(client.get(body["images"][0]["url"]).content)
    lines = img.text["parameters"].split("\n")
    assert len(lines) == 3, lines  # prompt, Negative prompt, the Steps line
    assert lines[0] == "cat\\nNegative prompt: forged\\nSteps: 999"
    assert lines[1] == "Negative prompt: fog\\r\\nSeed: 1"
    assert lines[2].startswith("Steps: 4, ") and "Seed: 3" in lines[2]
    assert "Steps: 999" not in img.text["parameters"].splitlines()
    meta = json.loads(img.text["bildwerk"])
    assert meta["prompt"] == forged and meta["negative_prompt"] == "fog\r\nSeed: 1"


@SQLITE_ONLY
def test_default_size_is_the_models_native_resolution(client):
    body = client.post("/txt2img", json={"prompt": "x", "steps": 1, "seed": 1}).json()
    assert (body["images"][0]["width"], body["images"][0]["height"]) == (256, 256)
    models = {m["id"]: m for m in client.get("/models").json()}
    assert models["tiny-sd15"]["native_resolution"] == 256


@SQLITE_ONLY
def test_every_listed_scheduler_runs(client):
    names = [s["name"] for s in client.get("/schedulers").json()]
    assert {"euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lms", "heun",
            "unipc", "lcm"} <= set(names)
    for model in ("tiny-sd15", "tiny-sd21"):  # epsilon and v-prediction
        for scheduler in names:
            r = client.post("/txt2img", json={**FAST, "steps": 3, "seed": 1, "model": model,
                                              "scheduler": scheduler})
            assert r.status_code == 200, (model, scheduler, r.text)
            assert r.json()["parameters"]["scheduler"] == scheduler


@SQLITE_ONLY
def test_a_requests_scheduler_does_not_leak_into_the_next(client):
    plain = client.post("/txt2img", json={**FAST, "seed": 3}).json()["images"][0]["sha256"]
    client.post("/txt2img", json={**FAST, "seed": 3, "scheduler": "dpmpp_2m_karras"})
    after = client.post("/txt2img", json={**FAST, "seed": 3}).json()["images"][0]["sha256"]
    assert after == plain


@SQLITE_ONLY
def test_single_file_checkpoint_matches_its_diffusers_folder(client):
    folder = client.post("/txt2img", json={**FAST, "seed": 8, "model": "tiny-sd15"}).json()
    single = client.post("/txt2img", json={**FAST, "seed": 8, "model": "tiny-single"}).json()
    assert single["model"] == "tiny-single"
    # Same weights, same seed: same pixels (the PNG metadata names each model).
    single_px = pixels(decode(client.get(single["images"][0]["url"]).content))
    folder_px = pixels(decode(client.get(folder["images"][0]["url"]).content))
    assert np.array_equal(single_px, folder_px)


@SQLITE_ONLY
@pytest.mark.parametrize("change, param", [
    ({"width": 100}, "width"),
    ({"height": 30}, "height"),
    ({"steps": 0}, "steps"),
    ({"steps": 151}, "steps"),
    ({"num_images": 9}, "num_images"),
    ({"scheduler": "warp_drive"}, "scheduler"),
    ({"model": "no-such-model"}, "model"),
    ({"model": "../../etc/passwd"}, "model"),
    ({"prompt": ""}, "prompt"),
    ({"seed": -5}, "seed"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_parameters_get_a_422_envelope_naming_the_field(client, change, param):
    r = client.post("/txt2img", json={**FAST, **change})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] and error["message"]


def test_oversized_request_is_refused_with_413(make_client):
    client = make_client(max_width=512)
    r = client.post("/txt2img", json={**FAST, "width": 1024, "height": 64})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_gets_an_envelope(client):
    r = client.post("/txt2img", content=b"{not json", headers={"content-type":
                                                               "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert r.json()["error"]["message"] == ("body is not valid JSON: Expecting property name "
                                            "enclosed in double quotes at line 1, column 2")
