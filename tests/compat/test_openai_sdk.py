"""The OpenAI Images API under /v1, driven by the real ``openai`` SDK against a real
server process (``base_url=.../v1``, a Bildwerk API key as ``api_key``).

One server for the module: its models dir holds ``tiny-sd15`` (the default) and
``zz-broken`` (configs that probe fine, weights that cannot load). Jobs are 64 px and
2-6 steps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image, ImageDraw

from tests.utils.families import build_tiny_sd15
from tests.utils.images import decode, pixels, png_bytes, scene
from tests.utils.server import ROOT, Server

SIZE = (96, 64)
BOX = (30, 20, 59, 45)  # the area to edit, inclusive (PIL rectangle)
FAST = {"steps": 3, "seed": 21}


@dataclass
class Live:
    server: Server
    key: str

    @property
    def base(self) -> str:
        return self.server.base

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.key, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, headers={"Authorization": f"Bearer {self.key}"},
                         timeout=30)

    def record(self, record_id: str) -> dict:
        r = self.get(f"/records/{record_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def blob(self, sha256: str) -> Image.Image:
        return decode(self.get(f"/blobs/{sha256}").content)

    def failed_records(self) -> int:
        return self.get("/records?status=failed").json()["total"]


def _create_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "openai-sdk", "--scope",
         "generate", "--scope", "read"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, embedded_template: Path):
    root = tmp_path_factory.mktemp("openai-sdk")
    models = root / "models"
    build_tiny_sd15(models / "tiny-sd15", seed=101)
    shutil.copytree(models / "tiny-sd15", models / "zz-broken")
    for weights in (models / "zz-broken").rglob("*.safetensors"):
        weights.write_bytes(b"this is not a safetensors file")
    data = root / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    own = {"BILDWERK_EMBEDDED_MODEL_ID": "bildwerk-tiny"}
    env = {k: v for k, v in os.environ.items() if k not in (
        "BILDWERK_DATABASE_URL", "BILDWERK_DEFAULT_MODEL", "BILDWERK_AUTH_MODE")}
    key = _create_key({**env, **own, "BILDWERK_DATA_DIR": str(data),
                       "BILDWERK_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1"})
    server = Server(data, models, **own).start()
    yield Live(server, key)
    server.stop()


def b64_image(value: str) -> Image.Image:
    return decode(base64.b64decode(value))


def file(img: Image.Image, name: str = "image.png") -> tuple[str, bytes, str]:
    return (name, png_bytes(img), "image/png")


def openai_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """OpenAI's convention: opaque everywhere, fully transparent (alpha 0) where to edit."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle(box, fill=(0, 0, 0, 0))
    return mask


def area(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(openai_mask(size, box).getchannel("A")) == 0


# -- models ---------------------------------------------------------------------------
def test_models_list_and_retrieve(live):
    client = live.client()
    ids = [m.id for m in client.models.list()]
    assert {"tiny-sd15", "zz-broken", "bildwerk-tiny"} <= set(ids)
    model = client.models.retrieve("tiny-sd15")
    assert model.id == "tiny-sd15" and model.object == "model" and model.owned_by
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("dall-e-3")
    assert caught.value.body["code"] == "model_not_found"


# -- generations ----------------------------------------------------------------------
def test_generate_b64_png_of_the_requested_size_and_seeds_reproduce(live):
    client = live.client()

    def generate(seed: int) -> openai.types.ImagesResponse:
        return client.images.generate(prompt="a red circle", size="96x64",
                                      extra_body={**FAST, "seed": seed})

    first = generate(21)
    image = b64_image(first.data[0].b64_json)
    assert image.format == "PNG" and image.size == SIZE
    assert first.size == "96x64" and first.output_format == "png"
    assert first.background == "opaque" and first.quality == "medium" and first.created > 0
    again, other = generate(21), generate(22)
    assert base64.b64decode(again.data[0].b64_json) == base64.b64decode(first.data[0].b64_json)
    assert other.data[0].b64_json != first.data[0].b64_json


def test_n_quality_user_and_extra_body_reach_the_record(live):
    raw = live.client().images.with_raw_response.generate(
        prompt="a blue square", n=2, size="64x64", quality="low", user="alice",
        extra_body={"seed": 5, "negative_prompt": "fog", "guidance_scale": 3.5,
                    "scheduler": "ddim"})
    answer = raw.parse()
    assert len(answer.data) == 2 and answer.quality == "low"
    record = live.record(raw.headers["x-bildwerk-record-id"])
    assert record["endpoint"] == "txt2img" and record["status"] == "succeeded"
    assert record["client"]["api"] == "openai" and record["client"]["user"] == "alice"
    assert record["params"]["steps"] == 12  # quality low
    assert record["seeds"] == [5, 6] and record["negative_prompt"] == "fog"
    assert record["params"]["guidance_scale"] == 3.5 and record["scheduler"] == "ddim"


def test_url_format_gives_a_fetchable_absolute_url(live):
    answer = live.client().images.generate(prompt="a square", size="64x64",
                                           response_format="url", extra_body=FAST)
    url = answer.data[0].url
    assert url.startswith(f"{live.base}/blobs/") and answer.data[0].b64_json is None
    fetched = httpx.get(url, headers={"Authorization": f"Bearer {live.key}"}, timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert hashlib.sha256(fetched.content).hexdigest() == url.rsplit("/", 1)[1]
    assert decode(fetched.content).size == (64, 64)


@pytest.mark.parametrize("fmt, pil", [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_jpeg_and_webp_output_formats(live, fmt, pil):
    client = live.client()
    best, small = (client.images.generate(prompt="a triangle", size="64x64", output_format=fmt,
                                          output_compression=level, extra_body=FAST)
                   for level in (100, 10))
    assert best.output_format == fmt
    assert b64_image(best.data[0].b64_json).format == pil
    assert b64_image(small.data[0].b64_json).size == (64, 64)
    assert len(small.data[0].b64_json) < len(best.data[0].b64_json)


def test_the_async_client_works_too(live):
    async def main() -> openai.types.ImagesResponse:
        async with openai.AsyncOpenAI(base_url=f"{live.base}/v1", api_key=live.key) as client:
            return await client.images.generate(prompt="a circle", size="64x64",
                                                extra_body=FAST)

    answer = asyncio.run(main())
    assert b64_image(answer.data[0].b64_json).size == (64, 64)


def test_streaming_yields_partial_images_then_the_completed_image(live):
    stream = live.client().images.generate(prompt="a circle", size="64x64", stream=True,
                                           partial_images=2,
                                           extra_body={"steps": 6, "seed": 3})
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "image_generation.completed"
    partials = events[:-1]
    # 2 previews fall on steps 2 and 4 of 6; the stream subscribes as the job is accepted,
    # and a preview made before that (a very fast worker) still comes as the latest one.
    assert 1 <= len(partials) <= 2 and {e.type for e in partials} == {
        "image_generation.partial_image"}
    assert [e.partial_image_index for e in partials] == list(range(len(partials)))
    for event in events:
        assert b64_image(event.b64_json).size == (64, 64)
        assert event.size == "64x64" and event.output_format == "png"
        assert event.created_at > 0 and event.quality == "medium"
        assert event.background == "opaque"
    assert events[-1].usage.total_tokens == 0
    same = live.client().images.generate(prompt="a circle", size="64x64",
                                         extra_body={"steps": 6, "seed": 3})
    assert same.data[0].b64_json == events[-1].b64_json  # the same image, streamed or not


def test_stream_without_partial_images_sends_only_the_completed_event(live):
    stream = live.client().images.generate(prompt="a circle", size="64x64", stream=True,
                                           output_format="jpeg", extra_body=FAST)
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.completed"]
    assert b64_image(events[0].b64_json).format == "JPEG"


# -- edits ----------------------------------------------------------------------------
def test_edit_with_an_alpha_mask_changes_only_the_transparent_area(live):
    image = scene(*SIZE)
    raw = live.client().images.with_raw_response.edit(
        image=file(image), mask=file(openai_mask(SIZE, BOX), "mask.png"), prompt="a pond",
        size="64x64", user="bob", extra_body={**FAST, "mask_blur": 0})
    answer = raw.parse()
    out = b64_image(answer.data[0].b64_json)
    assert out.size == SIZE and answer.size == "96x64"
    inside = area(SIZE, BOX)
    assert np.array_equal(pixels(out)[~inside], pixels(image)[~inside])  # bit for bit
    assert not np.array_equal(pixels(out)[inside], pixels(image)[inside])
    record = live.record(raw.headers["x-bildwerk-record-id"])
    assert record["endpoint"] == "inpaint"
    assert record["client"] == {**record["client"], "api": "openai", "user": "bob"}
    sent_mask = np.asarray(live.blob(record["mask_sha256"]))  # ours: 255 = change
    assert np.array_equal(sent_mask == 255, inside) and set(np.unique(sent_mask)) == {0, 255}


def test_edit_with_the_default_blur_keeps_every_pixel_outside_the_applied_mask(live):
    image = scene(*SIZE)
    raw = live.client().images.with_raw_response.edit(
        image=file(image), mask=file(openai_mask(SIZE, BOX), "mask.png"), prompt="a pond",
        size="64x64", extra_body=FAST)
    out = pixels(b64_image(raw.parse().data[0].b64_json))
    record = live.record(raw.headers["x-bildwerk-record-id"])
    applied = np.asarray(live.blob(record["mask_applied_sha256"]))
    outside = applied == 0
    assert np.array_equal(out[outside], pixels(image)[outside])
    far = ~area(SIZE, (BOX[0] - 12, BOX[1] - 12, BOX[2] + 12, BOX[3] + 12))
    assert outside[far].all()  # the blur (radius 4) fades out within ~10 px


def test_edit_without_a_mask_uses_the_images_transparency(live):
    base = scene(*SIZE)
    alpha = np.full(SIZE[::-1], 255, np.uint8)
    alpha[area(SIZE, BOX)] = 0  # the area to edit
    alpha[:4, :] = 128  # half transparent, outside the area: stays so
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    other = scene(*SIZE, seed=9)
    answer = live.client().images.edit(
        image=[file(rgba), file(other, "other.png")],  # several: the first is edited
        prompt="a pond", size="64x64", extra_body={**FAST, "mask_blur": 0})
    out = np.asarray(b64_image(answer.data[0].b64_json).convert("RGBA"))
    inside = area(SIZE, BOX)
    assert np.array_equal(out[~inside], np.asarray(rgba)[~inside])  # RGBA, bit for bit
    assert (out[inside][:, 3] == 255).all()  # the edited area is visible
    assert answer.background == "transparent"  # the half-transparent strip


def test_edit_without_any_area_reworks_the_whole_image(live):
    raw = live.client().images.with_raw_response.edit(
        image=file(scene(*SIZE)), prompt="a harbour", extra_body=FAST)
    answer = raw.parse()
    assert answer.size == "96x64"
    record = live.record(raw.headers["x-bildwerk-record-id"])
    assert record["endpoint"] == "img2img" and record["params"]["strength"] == 0.6


def test_edit_streams_image_edit_events(live):
    stream = live.client().images.edit(
        image=file(scene(*SIZE)), mask=file(openai_mask(SIZE, BOX), "mask.png"),
        prompt="a pond", size="64x64", stream=True, partial_images=1,
        extra_body={"steps": 4, "seed": 2})
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[0].partial_image_index == 0 and events[0].size == "64x64"  # the region
    assert b64_image(events[1].b64_json).size == SIZE and events[1].size == "96x64"


# -- variations -----------------------------------------------------------------------
def test_variations_are_img2img_at_a_fixed_strength(live):
    raw = live.client().images.with_raw_response.create_variation(
        image=file(scene(*SIZE)), n=2, user="carol", extra_body={"steps": 4, "seed": 8})
    answer = raw.parse()
    assert len(answer.data) == 2 and answer.size == "96x64"
    assert all(b64_image(d.b64_json).size == SIZE for d in answer.data)
    record = live.record(raw.headers["x-bildwerk-record-id"])
    assert record["endpoint"] == "img2img" and record["params"]["strength"] == 0.6
    assert record["prompt"].strip() == "" and record["client"]["user"] == "carol"


# -- errors ---------------------------------------------------------------------------
def test_an_unknown_model_is_not_found_with_our_message(live):
    with pytest.raises(openai.NotFoundError) as caught:
        live.client().images.generate(prompt="x", model="dall-e-3", extra_body=FAST)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "dall-e-3" in error["message"] and "tiny-sd15" in error["message"]


@pytest.mark.parametrize("size", ["100x100", "32x32", "big", "64x64x64", "4096x4096"])
def test_a_bad_size_is_a_bad_request(live, size):
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().images.generate(prompt="x", size=size, extra_body=FAST)
    assert caught.value.body["param"] == "size"
    assert caught.value.body["type"] == "invalid_request_error"


def test_a_failed_generation_is_raised_once_and_not_retried(live):
    client = live.client(max_retries=2)
    before = live.failed_records()
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="x", model="zz-broken", size="64x64", extra_body=FAST)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.body["type"] == "server_error"
    assert caught.value.body["code"] == "model_load_failed"
    assert live.failed_records() == before + 1  # one job: the SDK did not send it again
    with pytest.raises(openai.APIError, match="zz-broken"):  # streamed: an error event
        list(client.images.generate(prompt="x", model="zz-broken", size="64x64",
                                    stream=True, extra_body=FAST))
    assert live.failed_records() == before + 2
