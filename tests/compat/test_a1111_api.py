"""AUTOMATIC1111's API under /sdapi/v1 through HTTP with real images: every call is one of
our jobs, recorded, and answers in AUTOMATIC1111's shapes. The tiny random models make
64 px images in 2-4 steps.

Tests that check what the database keeps run on SQLite and PostgreSQL (``client``); the
rest on SQLite only (``sqlite_client``)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.compat.a1111.service import A1111State
from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_DEVICE
from tests.security.conftest import REMOTE, bearer, make_key
from tests.utils.images import box_mask, data_url, pixels, png_bytes, scene

FAST = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture
def sqlite_client(tmp_path: Path, models_dir: Path, embedded_template: Path):
    """An app on SQLite only, for what does not depend on the database."""
    data_dir = tmp_path / "data"
    shutil.copytree(embedded_template, data_dir / "embedded" / "bildwerk-tiny")
    settings = Settings(_env_file=None, data_dir=data_dir, models_dir=models_dir,
                        database_url=f"sqlite:///{tmp_path / 'bildwerk.db'}",
                        device=TEST_DEVICE, default_model="tiny-sd15",
                        embedded_model_id="bildwerk-tiny", shutdown_grace_s=2)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def remote():
    """A client of the same app from a non-loopback address."""
    return lambda client: TestClient(client.app, client=REMOTE)


def b64_png(value: str) -> Image.Image:
    assert not value.startswith("data:"), "AUTOMATIC1111 answers raw base64"
    raw = base64.b64decode(value, validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(raw))
    img.load()
    return img


def record_of(client, info: dict) -> dict:
    r = client.get(f"/records/{info['record_id']}")
    assert r.status_code == 200, r.text
    return r.json()


def txt2img(client, **body):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", **FAST, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    return data, json.loads(data["info"])


# -- txt2img ------------------------------------------------------------------------------
def test_txt2img_answers_raw_png_and_info_and_records_the_job(client):
    client.app.state.registry.hashes.wait(60)
    data, info = txt2img(client, seed=7, batch_size=2, n_iter=2, cfg_scale=5.5,
                         negative_prompt="blurry", sampler_name="Euler a")
    images = [b64_png(v) for v in data["images"]]
    assert len(images) == 4 and all(img.size == (64, 64) for img in images)
    assert info["seed"] == 7 and info["all_seeds"] == [7, 8, 9, 10]  # consecutive
    assert info["prompt"] == "a red circle" and info["all_prompts"] == ["a red circle"] * 4
    assert info["negative_prompt"] == "blurry" and len(info["all_negative_prompts"]) == 4
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 2)
    assert info["cfg_scale"] == 5.5 and info["batch_size"] == 2
    assert info["sampler_name"] == "Euler a"
    assert info["sd_model_name"] == "tiny-sd15"
    assert info["sd_model_hash"] and len(info["sd_model_hash"]) == 10
    assert len(info["job_timestamp"]) == 14 and info["job_timestamp"].isdigit()
    assert len(info["infotexts"]) == 4
    first = info["infotexts"][0].splitlines()
    assert first[0] == "a red circle" and first[1] == "Negative prompt: blurry"
    assert "Steps: 2, Sampler: Euler a, CFG scale: 5.5, Seed: 7, Size: 64x64" in first[2]
    assert f"Model hash: {info['sd_model_hash']}" in first[2]
    assert "Seed: 10" in info["infotexts"][3]
    assert data["parameters"]["prompt"] == "a red circle"
    assert data["parameters"]["n_iter"] == 2
    # the PNGs are our stored outputs, with their AUTOMATIC1111-style parameters chunk
    assert "Seed: 7" in images[0].info["parameters"]
    record = record_of(client, info)
    assert record["endpoint"] == "txt2img" and record["status"] == "succeeded"
    assert record["seeds"] == [7, 8, 9, 10] and record["scheduler"] == "euler_a"
    assert record["client"]["api"] == "sdapi"
    assert record["params"]["guidance_scale"] == 5.5


def test_the_same_seed_gives_the_same_pixels(sqlite_client):
    one, _ = txt2img(sqlite_client, seed=1234)
    two, _ = txt2img(sqlite_client, seed=1234)
    other, _ = txt2img(sqlite_client, seed=1235)
    a, b, c = (pixels(b64_png(d["images"][0])) for d in (one, two, other))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_random_seed_is_drawn_and_reported(sqlite_client):
    data, info = txt2img(sqlite_client, seed=-1, batch_size=2)
    assert info["seed"] >= 0 and info["all_seeds"] == [info["seed"], info["seed"] + 1]
    assert f"Seed: {info['seed']}," in info["infotexts"][0]


def test_unknown_fields_are_ignored(sqlite_client):
    """What webuiapi sends, and more: hires fix, face restoration, scripts, extensions."""
    body = {"prompt": "a blue square", **FAST, "seed": 3, "enable_hr": False,
            "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.7,
            "restore_faces": False, "tiling": False, "eta": 1.0, "s_churn": 0,
            "styles": ["no-such-style"], "subseed": 99, "subseed_strength": 0.3,
            "script_name": None, "script_args": [], "send_images": True,
            "save_images": False, "alwayson_scripts": {"ControlNet": {"args": []}},
            "override_settings_restore_afterwards": True, "do_not_save_samples": False,
            "firstphase_width": 0, "some_extension_field": {"nested": [1, 2, 3]},
            "sampler_name": None, "scheduler": "automatic"}
    r = sqlite_client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sampler_name"] == "Euler"  # sampler_index's default
    assert len(r.json()["images"]) == 1


def test_an_empty_prompt_and_a_prompt_style(sqlite_client):
    data, info = txt2img(sqlite_client, seed=4, prompt="")  # AUTOMATIC1111 allows it
    assert len(data["images"]) == 1 and info["prompt"] == ""
    data, info = txt2img(sqlite_client, seed=4, prompt="a lighthouse",
                         styles=["unknown", "watercolor", "photo"])
    prompting = record_of(sqlite_client, info)["params"]["prompting"]
    assert prompting["style"] == "watercolor" and prompting["used"] != "a lighthouse"


def test_send_images_false_answers_without_images(sqlite_client):
    data, info = txt2img(sqlite_client, seed=3, send_images=False)
    assert data["images"] == [] and info["all_seeds"] == [3]


# -- samplers -----------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "scheduler", "sampler"), [
    ({"sampler_name": "DPM++ 2M Karras"}, "dpmpp_2m_karras", "DPM++ 2M"),
    ({"sampler_name": "DPM++ 2M", "scheduler": "Karras"}, "dpmpp_2m_karras", "DPM++ 2M"),
    ({"sampler_name": "DPM++ 2M", "scheduler": "Uniform"}, "dpmpp_2m", "DPM++ 2M"),
    ({"sampler_name": "DPM++ 2M"}, "dpmpp_2m_karras", "DPM++ 2M"),  # Automatic = Karras
    ({"sampler_index": "Euler a"}, "euler_a", "Euler a"),  # AI-Render sends only this
    ({"sampler_name": "Euler", "sampler_index": "LMS"}, "euler", "Euler"),
    ({"sampler_name": "DPM++ SDE Karras"}, "dpmpp_2m_sde_karras", "DPM++ SDE"),
    ({"sampler_name": "k_lms", "scheduler": "karras"}, "lms_karras", "LMS"),
])
def test_sampler_names_map_onto_our_schedulers(sqlite_client, fields, scheduler, sampler):
    data, info = txt2img(sqlite_client, seed=5, **fields)
    assert info["sampler_name"] == sampler
    assert info["bildwerk_scheduler"] == scheduler
    assert record_of(sqlite_client, info)["scheduler"] == scheduler
    schedule = "Karras" if scheduler.endswith("karras") else "Uniform"
    assert f"Schedule type: {schedule}" in info["infotexts"][0]


def test_an_unknown_sampler_is_404_sampler_not_found(client):
    for fields in ({"sampler_name": "DPM++ Imaginary"}, {"sampler_index": "nope"}):
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST, **fields})
        assert r.status_code == 404
        assert r.json()["detail"] == "Sampler not found"
        assert r.json()["error"] == "HTTPException"


def test_sampler_and_scheduler_lists(sqlite_client):
    names = {s["name"] for s in sqlite_client.get("/sdapi/v1/samplers").json()}
    assert {"Euler a", "Euler", "DPM++ 2M", "DPM++ SDE", "LMS", "DDIM"} <= names
    schedulers = sqlite_client.get("/sdapi/v1/schedulers").json()
    assert [s["label"] for s in schedulers] == ["Automatic", "Uniform", "Karras"]


# -- LoRAs, clip skip, models ---------------------------------------------------------------
def test_lora_tags_become_loras_and_unknown_ones_are_skipped(client):
    data, info = txt2img(client, seed=2,
                         prompt="a cat, <lora:style-kohya:0.7> in the rain <lora:nope:1>")
    record = record_of(client, info)
    assert record["loras"] == [{"name": "style-kohya", "weight": 0.7}]
    assert record["prompt"] == "a cat, in the rain"
    assert info["prompt"] == "a cat, <lora:style-kohya:0.7> in the rain <lora:nope:1>"
    assert "Networks not found: nope" in info["comments"]


def test_clip_skip_and_vae_through_override_settings(sqlite_client):
    data, info = txt2img(sqlite_client, seed=2, override_settings={
        "CLIP_stop_at_last_layers": 2, "sd_vae": "tiny-vae"})
    record = record_of(sqlite_client, info)
    assert record["params"]["clip_skip"] == 2 and record["vae"] == "tiny-vae"
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]


def test_sd_models_and_a_checkpoint_override(sqlite_client):
    sqlite_client.app.state.registry.hashes.wait(60)
    models = sqlite_client.get("/sdapi/v1/sd-models").json()
    single = next(m for m in models if m["model_name"] == "tiny-single")
    assert single["title"] == f"tiny-single.safetensors [{single['hash']}]"
    assert single["sha256"].startswith(single["hash"]) and len(single["hash"]) == 10
    assert single["filename"] == "tiny-single.safetensors"  # relative to the models dir
    for name in (single["title"], "tiny-single.safetensors", "tiny-single", single["hash"]):
        data, info = txt2img(sqlite_client, seed=1,
                             override_settings={"sd_model_checkpoint": name})
        assert record_of(sqlite_client, info)["model"] == "tiny-single"
        assert info["sd_model_hash"] == single["hash"]
    r = sqlite_client.post("/sdapi/v1/txt2img", json={
        "prompt": "x", **FAST, "override_settings": {"sd_model_checkpoint": "nope"}})
    assert r.status_code == 404 and r.json()["detail"].startswith("Model not found")


def test_options_select_the_model_for_this_caller_only(client, remote):
    client.app.state.registry.hashes.wait(60)
    titles = {m["model_name"]: m["title"] for m in client.get("/sdapi/v1/sd-models").json()}
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-sd15"]
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titles["tiny-single"],
                                               "CLIP_stop_at_last_layers": 2,
                                               "some_other_option": True})
    assert r.status_code == 200 and r.json() is None
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == titles["tiny-single"]
    assert options["CLIP_stop_at_last_layers"] == 2 and "some_other_option" not in options
    data, info = txt2img(client, seed=1)
    record = record_of(client, info)
    assert record["model"] == "tiny-single" and record["params"]["clip_skip"] == 2
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
    assert r.status_code == 404 and "Model not found" in r.json()["detail"]
    # the native routes, and another caller (another key), keep the server's default
    native = client.post("/txt2img", json={"prompt": "x", **FAST})
    assert native.json()["model"] == "tiny-sd15"
    _, secret = make_key(client, "other", "generate", "read")
    other = remote(client)
    assert other.get("/sdapi/v1/options", headers=bearer(secret)).json()[
        "sd_model_checkpoint"] == titles["tiny-sd15"]


# -- img2img and inpainting -------------------------------------------------------------------
def test_img2img_runs_steps_times_denoising_strength(sqlite_client):
    """The tiny model's weights are random, so the distance to the input means nothing;
    what AUTOMATIC1111's denoising_strength controls is how many steps run."""
    image = scene(64, 64)
    totals = {}
    for strength, init in ((0.5, data_url(image)),
                           (1.0, base64.b64encode(png_bytes(image)).decode())):  # raw b64
        r = sqlite_client.post("/sdapi/v1/img2img", json={
            "prompt": "a harbour", **FAST, "steps": 4, "seed": 3, "init_images": [init],
            "denoising_strength": strength})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert b64_png(r.json()["images"][0]).size == (64, 64)
        assert info["denoising_strength"] == strength
        assert f"Denoising strength: {strength:g}" in info["infotexts"][0]
        totals[strength] = sqlite_client.get(f"/jobs/{info['job_id']}").json()[
            "progress"]["total"]
        record = record_of(sqlite_client, info)
        assert record["endpoint"] == "img2img" and record["params"]["strength"] == strength
        assert record["input_image_sha256"]
    assert totals == {0.5: 2, 1.0: 4}


@pytest.mark.parametrize(("mode", "expected"), [(0, "resize"), (1, "crop"), (2, "fill"),
                                                (3, "resize")])
def test_img2img_resize_modes(sqlite_client, mode, expected):
    r = sqlite_client.post("/sdapi/v1/img2img", json={
        "prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1, "resize_mode": mode,
        "init_images": [data_url(scene(96, 64))]})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert record_of(sqlite_client, info)["params"]["resize_mode"] == expected


def test_img2img_without_an_image_is_404_init_image_not_found(sqlite_client):
    r = sqlite_client.post("/sdapi/v1/img2img", json={"prompt": "x", **FAST})
    assert r.status_code == 404 and r.json()["detail"] == "Init image not found"


def test_inpainting_keeps_every_pixel_far_from_the_mask(client):
    image = scene(64, 64, seed=4)
    mask = box_mask((64, 64), (24, 24, 39, 39))
    r = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red roof", **FAST, "seed": 9, "init_images": [data_url(image)],
        "mask": data_url(mask), "mask_blur": 2, "inpaint_full_res": True,
        "inpaint_full_res_padding": 8, "denoising_strength": 1.0, "inpainting_fill": 1})
    assert r.status_code == 200, r.text
    out = b64_png(r.json()["images"][0])
    assert out.size == (64, 64)
    before, after = pixels(image), pixels(out)
    far = np.ones((64, 64), bool)
    far[24 - 6:40 + 6, 24 - 6:40 + 6] = False  # the box, its blur and a margin
    assert np.array_equal(before[far], after[far])
    assert not np.array_equal(before[~far], after[~far])
    info = json.loads(r.json()["info"])
    record = record_of(client, info)
    assert record["endpoint"] == "inpaint" and record["mask_sha256"]
    assert record["params"]["inpaint_area"] == "masked" and record["params"]["padding"] == 8
    assert "Mask blur: 2" in info["infotexts"][0]
    assert r.json()["parameters"]["init_images"] is None  # include_init_images: false


def test_inpainting_mask_invert_and_whole_picture(sqlite_client):
    image = scene(64, 64, seed=5)
    r = sqlite_client.post("/sdapi/v1/img2img", json={
        "prompt": "a pond", **FAST, "seed": 9, "init_images": [data_url(image)],
        "mask": data_url(box_mask((64, 64), (0, 0, 63, 31))), "inpainting_mask_invert": 1,
        "inpaint_full_res": False, "mask_blur": 0})
    assert r.status_code == 200, r.text
    out = pixels(b64_png(r.json()["images"][0]))
    assert np.array_equal(out[:32], pixels(image)[:32])  # inverted: the top half is kept
    record = record_of(sqlite_client, json.loads(r.json()["info"]))
    assert record["params"]["inpaint_area"] == "full" and record["params"]["invert_mask"]


# -- png-info -----------------------------------------------------------------------------
def test_png_info_reads_our_own_output(sqlite_client):
    data, info = txt2img(sqlite_client, seed=77, prompt="a green triangle, at noon",
                         negative_prompt="text", sampler_name="DPM++ 2M Karras")
    for image in (data["images"][0], "data:image/png;base64," + data["images"][0]):
        r = sqlite_client.post("/sdapi/v1/png-info", json={"image": image})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["info"].startswith("a green triangle, at noon\nNegative prompt: text\n")
        params = got["parameters"]
        assert params["Prompt"] == "a green triangle, at noon"
        assert params["Negative prompt"] == "text"
        assert (params["Seed"], params["Steps"], params["Size-1"]) == ("77", "2", "64")
        assert params["Sampler"] == "DPM++ 2M" and params["Schedule type"] == "Karras"
        assert "bildwerk" in got["items"] and "parameters" not in got["items"]
    plain = sqlite_client.post("/sdapi/v1/png-info",
                               json={"image": data_url(scene(32, 32))}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}
    bad = sqlite_client.post("/sdapi/v1/png-info", json={"image": "bm90IGFuIGltYWdl"})
    assert bad.status_code == 422 and bad.json()["error"] == "HTTPException"


# -- progress, interrupt ---------------------------------------------------------------------
def _post_in_background(client, path: str, body: dict) -> tuple[threading.Thread, dict]:
    answer: dict = {}

    def call() -> None:
        answer["response"] = client.post(path, json=body)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, answer


def test_progress_shows_the_running_job_with_a_preview_and_interrupt_stops_it(client):
    assert client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0
    client.post("/sdapi/v1/options", json={"show_progress_every_n_steps": 2})
    thread, answer = _post_in_background(client, "/sdapi/v1/txt2img", {
        "prompt": "slow", "steps": 150, "width": 128, "height": 128, "seed": 1})
    deadline = time.monotonic() + 60
    progress = None
    while time.monotonic() < deadline:
        progress = client.get("/sdapi/v1/progress").json()
        if progress["progress"] > 0.01 and progress["current_image"]:
            break
        time.sleep(0.05)
    assert progress and progress["current_image"], progress
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] == 1
    assert progress["state"]["sampling_steps"] == 150
    assert progress["state"]["sampling_step"] >= 1 and progress["textinfo"] == "denoising"
    preview = b64_png(progress["current_image"])
    assert preview.size[0] > 0
    assert client.get("/sdapi/v1/progress", params={"skip_current_image": True}
                      ).json()["current_image"] is None
    assert client.post("/sdapi/v1/interrupt").json() == {}
    thread.join(60)
    r = answer["response"]
    assert r.status_code == 200, r.text  # AUTOMATIC1111 answers an interrupted call too
    info = json.loads(r.json()["info"])
    assert r.json()["images"] == [] and info["all_seeds"] == [1]
    record = record_of(client, info)
    assert record["status"] == "cancelled" and record["client"]["api"] == "sdapi"
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_skip_stops_the_running_call(sqlite_client):
    thread, answer = _post_in_background(sqlite_client, "/sdapi/v1/txt2img", {
        "prompt": "slow", "steps": 150, "width": 128, "height": 128, "seed": 1})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sqlite_client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1:
            break
        time.sleep(0.05)
    assert sqlite_client.post("/sdapi/v1/skip").status_code == 200
    thread.join(60)
    info = json.loads(answer["response"].json()["info"])
    assert record_of(sqlite_client, info)["status"] == "cancelled"


# -- errors, auth ------------------------------------------------------------------------------
def test_a_failed_call_leaves_a_record_and_answers_in_a1111s_shape(client):
    r = client.post("/sdapi/v1/txt2img", json={
        "prompt": "x", **FAST, "override_settings": {"sd_model_checkpoint": "broken"}})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "ModelLoadFailed" and body["detail"] == "" and body["body"] == ""
    assert "broken" in body["errors"]
    records = client.get("/records", params={"status": "failed"}).json()["items"]
    assert [(x["model"], x["client"]["api"]) for x in records] == [("broken", "sdapi")]


def test_errors_speak_a1111(sqlite_client, remote):
    r = sqlite_client.get("/sdapi/v1/no-such-route")
    assert r.status_code == 404 and r.json()["detail"] == "Not Found"
    r = sqlite_client.post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST, "steps": "many"})
    assert r.status_code == 422 and r.json()["error"] == "HTTPException"
    assert "steps" in r.json()["detail"]
    r = sqlite_client.post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST, "cfg_scale": 99})
    assert r.status_code == 422 and r.json()["detail"].startswith("cfg_scale")
    r = remote(sqlite_client).get("/sdapi/v1/sd-models")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["error"] == "HTTPException"
    assert sqlite_client.get("/models/nope").json()["error"]["code"] == "not_found"  # ours


def test_http_basic_carries_the_key_on_every_route(client, remote):
    _, secret = make_key(client, "blender", "generate", "read")
    outside = remote(client)
    r = outside.post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST, "seed": 1},
                     auth=("any-user", secret))
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert outside.get(f"/records/{info['record_id']}", auth=("u", secret)).status_code == 200
    assert outside.get("/models", auth=("", secret)).status_code == 200  # native routes too
    wrong = outside.post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST},
                         auth=("any-user", "bw_wrong"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    assert outside.get("/models", auth=("u", "bw_wrong")).status_code == 401
    # a generate-only key may not rescan the models dir
    assert outside.post("/sdapi/v1/refresh-checkpoints",
                        auth=("u", secret)).status_code == 403
    # A browser's remembered Basic key is not used for a request from a foreign page
    # (GET without a body, past the gate; POST with one, through the gate)
    foreign = {"Sec-Fetch-Site": "cross-site", "Origin": "https://elsewhere.example"}
    assert outside.get("/models", auth=("u", secret), headers=foreign).status_code == 401
    assert outside.post("/sdapi/v1/interrupt", auth=("u", secret),
                        headers=foreign).status_code == 401
    assert outside.post("/sdapi/v1/interrupt", auth=("u", secret), headers={
        "Sec-Fetch-Site": "same-origin"}).status_code == 200
    # a Bearer key is sent on purpose by code, never remembered by the browser
    assert outside.get("/models", headers={**foreign, **bearer(secret)}).status_code == 200


def test_ai_render_request_shape_from_loopback_without_a_key(sqlite_client):
    """What AI-Render's automatic1111 backend sends: its own keys, sampler_index only, the
    Blender render as an RGBA PNG data-URL, no auth."""
    render = scene(64, 64).convert("RGBA")
    params = {"prompt": "a castle on a hill", "negative_prompt": "ugly", "width": 64,
              "height": 64, "image_similarity": 0.6, "seed": 1234567890, "cfg_scale": 7,
              "steps": 4, "sampler": "DPM++ 2M Karras", "denoising_strength": 0.4,
              "sampler_index": "DPM++ 2M Karras", "init_images": [data_url(render)]}
    headers = {"User-Agent": "Blender/4.1.0", "Accept": "*/*",
               "Accept-Encoding": "gzip, deflate, br"}
    r = sqlite_client.post("/sdapi/v1/img2img", json=params, headers=headers)
    assert r.status_code == 200, r.text
    img = b64_png(r.json()["images"][0].replace("data:image/png;base64,", ""))
    assert img.size == (64, 64)
    info = json.loads(r.json()["info"])
    assert info["seed"] == 1234567890 and info["sampler_name"] == "DPM++ 2M"
    r = sqlite_client.post("/sdapi/v1/img2img", json={**params, "sampler_index": "Nope"},
                           headers=headers)
    assert r.status_code == 404 and r.json()["detail"] == "Sampler not found"


# -- catalogues, upscaling ------------------------------------------------------------------------
def test_catalogues(sqlite_client):
    get = sqlite_client.get
    upscalers = get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in upscalers][:3] == ["None", "Lanczos", "Nearest"]
    assert sqlite_client.app.state.upscale.models.loaded() == []  # listed, not loaded
    assert {v["model_name"] for v in get("/sdapi/v1/sd-vae").json()} == {"tiny-vae"}
    loras = {lo["name"] for lo in get("/sdapi/v1/loras").json()}
    assert {"style-kohya", "detail-diffusers"} <= loras
    assert get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    assert get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    styles = get("/sdapi/v1/prompt-styles").json()
    assert styles and all("{prompt}" in s["prompt"] for s in styles)
    for path in ("hypernetworks", "face-restorers", "realesrgan-models", "script-info",
                 "latent-upscale-modes", "extensions"):
        assert get(f"/sdapi/v1/{path}").json() == []
    assert sqlite_client.post("/sdapi/v1/refresh-checkpoints").status_code == 200


def test_extra_single_image_upscales_as_a_recorded_job(client):
    image = scene(40, 30)
    r = client.post("/sdapi/v1/extra-single-image", json={
        "image": data_url(image), "upscaler_1": "Lanczos", "upscaling_resize": 2,
        "resize_mode": 0, "gfpgan_visibility": 0, "upscaler_2": "None"})
    assert r.status_code == 200, r.text
    assert b64_png(r.json()["image"]).size == (80, 60)
    assert "Lanczos" in r.json()["html_info"]
    records = client.get("/records").json()["items"]
    assert records[0]["client"]["api"] == "sdapi" and records[0]["model"] == "Lanczos"
    # resize_mode 1: to an exact size, cropped to its aspect ratio first (upscaling_crop)
    r = client.post("/sdapi/v1/extra-single-image", json={
        "image": base64.b64encode(png_bytes(image)).decode(), "upscaler_1": "Nearest",
        "resize_mode": 1, "upscaling_resize_w": 60, "upscaling_resize_h": 60})
    assert b64_png(r.json()["image"]).size == (60, 60)
    r = client.post("/sdapi/v1/extra-single-image", json={
        "image": data_url(image), "upscaler_1": "Nearest", "resize_mode": 1,
        "upscaling_resize_w": 80, "upscaling_resize_h": 80, "upscaling_crop": False})
    assert b64_png(r.json()["image"]).size == (107, 80)  # by the larger ratio
    # upscaler_1 "None" (webuiapi's default) returns the image as it came
    r = client.post("/sdapi/v1/extra-single-image", json={"image": data_url(image)})
    assert np.array_equal(pixels(b64_png(r.json()["image"])), pixels(image))
    r = client.post("/sdapi/v1/extra-single-image", json={"image": data_url(image),
                                                          "upscaler_1": "ESRGAN_9x"})
    assert r.status_code == 404 and r.json()["error"] == "HTTPException"


def test_the_routes_are_documented_and_their_examples_run(sqlite_client):
    spec = sqlite_client.get("/openapi.json").json()
    ours = {p: item for p, item in spec["paths"].items() if p.startswith("/sdapi/v1/")}
    assert len(ours) >= 25
    for item in ours.values():
        for op in item.values():
            assert op["tags"] == ["AUTOMATIC1111 API (/sdapi/v1)"] and op["summary"]
    for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
        media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        for name, example in media["examples"].items():
            r = sqlite_client.post(path, json=example["value"])
            assert r.status_code == 200, (path, name, r.text)


# -- hostile input, limits, isolation ---------------------------------------------------------
def _quick(call, limit: float = 1.0):
    """``call()``'s response, asserting that it came well under ``limit`` seconds (a regex
    that backtracks quadratically holds the GIL, and so the whole server, for seconds)."""
    start = time.monotonic()
    response = call()
    took = time.monotonic() - start
    assert took < limit, f"{took:.2f}s"
    return response


def _png_with_parameters(text: str) -> str:
    info = PngInfo()
    info.add_text("parameters", text)
    buf = io.BytesIO()
    scene(16, 16).save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def test_hostile_texts_answer_at_once(sqlite_client):
    post = sqlite_client.post
    # png-info parses the last line's "Key: value" pairs: one long line without ':' (or
    # with a long run of spaces) took many seconds
    for text in ("a" * 60_000, "a" + " " * 60_000 + "b", "Steps: 1, " + "x" * 60_000):
        r = _quick(lambda t=text: post("/sdapi/v1/png-info",
                                       json={"image": _png_with_parameters(t)}))
        assert r.status_code == 200, r.text
        assert r.json()["info"] == text and r.json()["parameters"]["Prompt"]
    # beyond 64 KB the text is answered as it is, not parsed
    huge = "a, " * 30_000 + "\nSteps: 2, Seed: 1, Size: 8x8"
    r = _quick(lambda: post("/sdapi/v1/png-info", json={"image": _png_with_parameters(huge)}))
    assert r.status_code == 200 and r.json()["info"] == huge
    assert r.json()["parameters"] == {}
    # the prompt (LoRA tags are taken out of it, then empty terms): a newline flood
    for prompt in ("a" + "\n" * 80_000, "a" + ", \n" * 20_000 + "b"):
        r = _quick(lambda p=prompt: post("/sdapi/v1/txt2img", json={"prompt": p, **FAST}))
        assert r.status_code == 422 and r.json()["error"] == "HTTPException"
        assert "prompt" in r.json()["detail"]
    # within the schema's 4000 but beyond the server's BILDWERK_MAX_PROMPT_CHARS (2000)
    r = post("/sdapi/v1/txt2img", json={"prompt": "a" + "\n" * 3000, **FAST})
    assert r.status_code == 422 and "BILDWERK_MAX_PROMPT_CHARS" in r.json()["detail"]
    r = post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST, "sampler_name": "E" * 300})
    assert r.status_code == 422 and "sampler_name" in r.json()["detail"]
    # a checkpoint title: a long run of spaces before no [hash]
    name = "x" + " " * 40_000 + "y"
    r = _quick(lambda: post("/sdapi/v1/txt2img", json={
        "prompt": "x", **FAST, "override_settings": {"sd_model_checkpoint": name}}))
    assert r.status_code == 404 and r.json()["detail"].startswith("Model not found")
    r = _quick(lambda: post("/sdapi/v1/options", json={"sd_model_checkpoint": name}))
    assert r.status_code == 404
    r = _quick(lambda: post("/sdapi/v1/options",
                            json={"sd_model_checkpoint": "x" + " " * 200 + "[0123456789"}))
    assert r.status_code == 404


def test_huge_numbers_are_a1111_shaped_4xx_not_500(sqlite_client):
    post = sqlite_client.post
    image = data_url(scene(32, 32))

    def refused(r, field: str) -> None:
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"] == "HTTPException" and field in r.json()["detail"], r.text

    # 10**400: steps x strength and width / image.width overflowed a float (the body gate
    # may refuse such a number first; either way a 4xx)
    for steps in (10**400, 2**63 - 1, 10**6, 1001):
        r = post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": [image],
                                            "width": 64, "height": 64, "steps": steps})
        refused(r, "steps" if steps < 2**64 else "")
        r = post("/sdapi/v1/txt2img", json={"prompt": "x", **FAST, "steps": steps})
        refused(r, "steps" if steps < 2**64 else "")
    for side in (10**400, 2**63 - 1, 10**9, 16385):
        for field in ("upscaling_resize_w", "upscaling_resize_h"):
            for crop in (True, False):
                r = post("/sdapi/v1/extra-single-image", json={
                    "image": image, "upscaler_1": "Lanczos", "resize_mode": 1,
                    "upscaling_crop": crop, field: side})
                refused(r, field if side < 2**64 else "")
    # clip skip as JSON's Infinity / NaN: not a whole number
    for value in ("Infinity", "NaN", "1e400"):
        r = post("/sdapi/v1/txt2img", headers={"Content-Type": "application/json"},
                 content='{"prompt": "x", "steps": 2, "width": 64, "height": 64, '
                         '"override_settings": {"CLIP_stop_at_last_layers": ' + value + '}}')
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"] == "HTTPException"


def test_upscaler_none_in_any_case_returns_the_image(sqlite_client):
    image = scene(24, 16)
    for name in ("none", "NONE", " None "):
        r = sqlite_client.post("/sdapi/v1/extra-single-image", json={
            "image": data_url(image), "upscaler_1": name, "upscaler_2": name.lower()})
        assert r.status_code == 200, r.text
        assert np.array_equal(pixels(b64_png(r.json()["image"])), pixels(image))


def test_catalogues_show_paths_relative_to_the_models_dir(sqlite_client, models_dir):
    get = sqlite_client.get
    roots = {str(models_dir), str(models_dir.resolve())}
    models = get("/sdapi/v1/sd-models").json()
    vaes = get("/sdapi/v1/sd-vae").json()
    loras = get("/sdapi/v1/loras").json()
    shown = [m["filename"] for m in models] + [m["config"] for m in models if m["config"]] \
        + [v["filename"] for v in vaes] + [lo["path"] for lo in loras]
    assert models and vaes and loras
    for path in shown:
        assert not Path(path).is_absolute() and not any(root in path for root in roots), path
    for path in [v["filename"] for v in vaes] + [lo["path"] for lo in loras]:
        assert (models_dir / path).exists(), path  # relative to BILDWERK_MODELS_DIR
    assert all(lo["path"].split("/")[0] in ("loras", "lora", "Lora") for lo in loras)


def test_first_requests_at_once_share_one_state(sqlite_client, monkeypatch):
    """The API's state is made with the router, not by whichever request comes first: two
    first requests at once each made one, and one's options were lost."""
    made = []
    real_init = A1111State.__init__

    def slow_init(self) -> None:  # widens the window two first requests race through
        made.append(self)
        time.sleep(0.3)
        real_init(self)

    monkeypatch.setattr(A1111State, "__init__", slow_init)
    barrier = threading.Barrier(2)
    answers = []

    def set_option(values: dict) -> None:
        barrier.wait()
        answers.append(sqlite_client.post("/sdapi/v1/options", json=values).status_code)

    threads = [threading.Thread(target=set_option, args=(values,)) for values in (
        {"CLIP_stop_at_last_layers": 3}, {"show_progress_every_n_steps": 7})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [200, 200]
    options = sqlite_client.get("/sdapi/v1/options").json()
    assert options["CLIP_stop_at_last_layers"] == 3
    assert options["show_progress_every_n_steps"] == 7
    assert made == []


def test_another_key_neither_sees_nor_stops_my_jobs(sqlite_client, remote):
    client = sqlite_client
    _, mine = make_key(client, "mine", "generate", "read")
    _, theirs = make_key(client, "theirs", "generate", "read")
    _, admin = make_key(client, "boss", "admin")
    me, them = remote(client), remote(client)
    answer: dict = {}

    def call() -> None:
        answer["response"] = me.post("/sdapi/v1/txt2img", headers=bearer(mine), json={
            "prompt": "slow", "steps": 150, "width": 128, "height": 128, "seed": 1})

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    progress: dict = {}
    while time.monotonic() < deadline:
        progress = me.get("/sdapi/v1/progress", headers=bearer(mine)).json()
        if progress["current_image"]:
            break
        time.sleep(0.05)
    assert progress["current_image"] and progress["state"]["job_count"] == 1, progress
    job_id = progress["state"]["job_id"]
    other = them.get("/sdapi/v1/progress", headers=bearer(theirs)).json()
    assert other["state"]["job_count"] == 0 and other["current_image"] is None
    assert other["progress"] == 0 and "job_id" not in other["state"]
    assert them.post("/sdapi/v1/interrupt", headers=bearer(theirs)).json() == {}
    assert them.post("/sdapi/v1/skip", headers=bearer(theirs)).status_code == 200
    step = progress["state"]["sampling_step"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # my job goes on
        progress = me.get("/sdapi/v1/progress", headers=bearer(mine)).json()
        if progress["state"]["sampling_step"] > step:
            break
        time.sleep(0.05)
    assert progress["state"]["job_id"] == job_id and progress["state"]["sampling_step"] > step
    assert not progress["state"]["interrupted"] and progress["state"]["status"] == "running"
    # an admin key sees it
    boss = remote(client).get("/sdapi/v1/progress", headers=bearer(admin)).json()
    assert boss["state"]["job_count"] == 1 and boss["state"]["job_id"] == job_id
    assert me.post("/sdapi/v1/interrupt", headers=bearer(mine)).json() == {}
    thread.join(60)
    info = json.loads(answer["response"].json()["info"])
    assert info["status"] == "cancelled" and answer["response"].json()["images"] == []
