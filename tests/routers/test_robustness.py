"""Defects found in review, each pinned by a test through the HTTP API."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from tests.conftest import wait_for_job
from tests.utils.images import box_mask, data_url, decode, pixels, png_bytes, scene

ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a mill", "steps": 3, "width": 64, "height": 64, "seed": 4}
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 3}
SIZE, BOX = (80, 64), (20, 16, 49, 41)


def _inpaint(client, image, mask, **extra):
    body = {"prompt": "x", "image": data_url(image) if isinstance(image, Image.Image)
            else image, "mask": data_url(mask) if isinstance(mask, Image.Image) else mask,
            "steps": 3, "seed": 2, "width": 64, "height": 64, "mask_blur": 0, **extra}
    return client.post("/inpaint", json=body)


def test_the_same_new_image_sent_concurrently_is_stored_once_without_errors(make_client):
    client = make_client(max_queued_per_key=8)  # eight jobs of one caller at once
    image = data_url(scene(*SIZE, seed=99))
    mask = data_url(box_mask(SIZE, BOX))
    body = {"prompt": "x", "image": image, "mask": mask, "steps": 1, "width": 64,
            "height": 64}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post("/inpaint", json=body,
                                                    headers=ASYNC).status_code, range(8)))
    assert codes == [202] * 8


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_control_characters_in_text_are_a_422_on_every_database(client, field):
    r = client.post("/txt2img", json={**FAST, field: "nul \u0000 byte"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    assert client.post("/txt2img", json={**FAST, "prompt": "tab\tand\nnewline ok"}
                       ).status_code == 200


def test_16_bit_image_and_mask_are_scaled_not_clipped(client):
    base = np.asarray(scene(*SIZE).convert("L"))
    image16 = Image.fromarray(base.astype(np.uint16) * 257)
    mask16 = Image.fromarray(np.where(np.asarray(box_mask(SIZE, BOX)) > 0, 65535, 200)
                             .astype(np.uint16))
    assert image16.mode == mask16.mode == "I;16"
    body = _inpaint(client, image16, mask16).json()
    applied = np.asarray(decode(client.get(body["mask_applied"]["url"]).content))
    assert (applied > 0).sum() == (BOX[2] - BOX[0] + 1) * (BOX[3] - BOX[1] + 1)
    out = pixels(decode(client.get(body["images"][0]["url"]).content))
    outside = applied == 0
    assert np.array_equal(out[outside][:, 0], base[outside])


@pytest.mark.parametrize("kind", ["palette", "la", "trns"])
def test_transparency_masks_in_every_png_flavour_mark_the_painted_area(client, kind):
    inside = np.asarray(box_mask(SIZE, BOX)) > 0
    if kind == "palette":
        mask = Image.new("P", SIZE, 0)
        mask.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        mask.paste(1, BOX[:2] + (BOX[2] + 1, BOX[3] + 1))
        mask.info["transparency"] = 0
    elif kind == "la":
        mask = Image.fromarray(np.stack([np.zeros(inside.shape, np.uint8),
                                         np.where(inside, 255, 0).astype(np.uint8)], -1), "LA")
    else:  # RGB with a tRNS colour key: black is transparent
        mask = Image.fromarray(np.where(inside[..., None], 200, 0).astype(np.uint8)
                               .repeat(3, -1), "RGB")
        mask.info["transparency"] = (0, 0, 0)
    buf = io.BytesIO()
    mask.save(buf, format="PNG", transparency=mask.info.get("transparency"))
    data = "data:image/png;base64," + __import__("base64").b64encode(buf.getvalue()).decode()
    r = _inpaint(client, scene(*SIZE), data)
    assert r.status_code == 200, r.text
    applied = np.asarray(decode(client.get(r.json()["mask_applied"]["url"]).content)) > 0
    assert np.array_equal(applied, inside)


def test_rgba_input_keeps_its_alpha_channel(client):
    image = scene(*SIZE).convert("RGBA")
    alpha = np.full(SIZE[::-1], 255, np.uint8)
    alpha[:, :10] = 0
    image.putalpha(Image.fromarray(alpha))
    out = decode(client.get(_inpaint(client, image, box_mask(SIZE, BOX)).json()["images"][0]
                            ["url"]).content)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out.getchannel("A")), alpha)


def test_base64_with_newlines_and_urlsafe_alphabet_is_accepted(client):
    import base64

    raw = png_bytes(scene(*SIZE))
    wrapped = "\n".join(base64.b64encode(raw).decode()[i:i + 76]
                        for i in range(0, len(base64.b64encode(raw)), 76))
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for encoded in (wrapped, urlsafe):
        assert _inpaint(client, encoded, box_mask(SIZE, BOX)).status_code == 200


@pytest.mark.parametrize("endpoint, body, param", [
    ("/txt2img", {**FAST, "scheduler": "lcm", "steps": 51}, "steps"),
    ("/txt2img", {**FAST, "num_images": 8, "width": 1024, "height": 1024}, "num_images"),
])
def test_requests_that_would_fail_inside_the_pipeline_are_refused_up_front(client, endpoint,
                                                                        body, param):
    r = client.post(endpoint, json=body)
    assert r.status_code in (413, 422) and r.json()["error"]["param"] == param


def test_strength_too_small_for_the_steps_is_a_422(client):
    r = _inpaint(client, scene(*SIZE), box_mask(SIZE, BOX), steps=5, strength=0.001)
    assert r.status_code == 422 and r.json()["error"]["param"] == "strength"


def test_cancelled_waiting_jobs_free_their_place_in_the_queue(make_client):
    client = make_client(queue_max=1)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    wait_for_job(client, running, until=lambda s: s["status"] == "running")
    waiting = client.post("/txt2img", json=FAST, headers=ASYNC).json()["job_id"]
    client.delete(f"/jobs/{waiting}")
    again = client.post("/txt2img", json=FAST, headers=ASYNC)
    assert again.status_code == 202
    client.delete(f"/jobs/{running}")
    assert wait_for_job(client, again.json()["job_id"])["status"] == "succeeded"
    assert client.get(f"/jobs/{waiting}").json()["status"] == "cancelled"


def test_kiosk_guidance_zero_is_kept(client):
    r = client.post("/inpainting/", json={"prompt": "x", "image": data_url(scene(*SIZE)),
                                          "mask": data_url(box_mask(SIZE, BOX)),
                                          "guidance_scale": 0})
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert record["params"]["guidance_scale"] == 0


def test_invert_mask_is_recorded(client):
    body = _inpaint(client, scene(*SIZE), box_mask(SIZE, BOX), invert_mask=True).json()
    assert client.get(f"/records/{body['record_id']}").json()["params"]["invert_mask"] is True


def test_record_time_filters_honour_utc_offsets(client):
    client.post("/txt2img", json=FAST)
    five_min_ago = datetime.now(UTC) - timedelta(minutes=5)
    plus5 = five_min_ago.astimezone(timezone(timedelta(hours=5))).isoformat()
    assert client.get("/records", params={"since": plus5}).json()["total"] == 1
    naive_utc = five_min_ago.replace(tzinfo=None).isoformat()
    assert client.get("/records", params={"since": naive_utc}).json()["total"] == 1


def test_broken_model_files_are_skipped_and_the_server_starts(make_client, tmp_path):
    models = tmp_path / "odd-models"
    (models / "half-downloaded").mkdir(parents=True)
    (models / "half-downloaded" / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline"}')
    (models / "corrupt.safetensors").write_bytes(b"\x00" * 100)
    client = make_client(models_dir=models, default_model=None)
    assert [m["id"] for m in client.get("/models").json()] == ["bildwerk-tiny"]
    assert client.post("/txt2img", json={**FAST, "model": None}).status_code == 200
