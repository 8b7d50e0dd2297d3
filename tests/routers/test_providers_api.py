"""Providers behind the same endpoints: local diffusers, and OpenAI, Hugging Face and
Gemini (their real SDKs against our fake servers on 127.0.0.1), fallback chains, records,
and secrets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from huggingface_hub import constants as hf_constants

from app.providers.base import ProviderRefused, RemoteRequest
from app.providers.local import LocalProvider
from tests.fakes import hf_server
from tests.fakes.gemini_server import fake_gemini
from tests.fakes.openai_server import Scripted, fake_openai
from tests.utils.images import box_mask, data_url, decode, kiosk_mask, pixels, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

KEY = "sk-test-SECRET-openai"
HF_TOKEN = "hf_SECRET_token_value"
GEMINI_KEY = "AIza-SECRET-gemini"
FAST = {"prompt": "a satellite map of a lake", "steps": 3, "width": 64, "height": 64,
        "seed": 7}
SIZE, BOX = (120, 90), (40, 30, 79, 59)


@pytest.fixture
def openai_client(make_client):
    with fake_openai() as fake:
        client = make_client(openai_api_key=KEY, openai_base_url=f"{fake.base_url}/v1",
                             provider_retries=0, provider_timeout_s=2.0,
                             provider_chains={"kiosk": ["local", "openai"],
                                              "broken-first": ["local", "openai"]})
        yield client, fake


def test_providers_lists_capabilities_and_reasons_without_secrets(openai_client):
    client, _ = openai_client
    listed = {p["name"]: p for p in client.get("/providers").json()}
    assert listed["local"]["usable"] and listed["local"]["inpaint"]
    assert listed["openai"]["usable"] and listed["openai"]["inpaint"]
    assert "dall-e-3" in listed["openai"]["models"] and listed["openai"]["chains"] == [
        "broken-first", "kiosk"]
    assert not listed["hf"]["usable"] and listed["hf"]["reason"]
    assert listed["gemini"]["reason"] == "GEMINI_API_KEY not set"
    assert KEY not in json.dumps(listed)


def test_local_diffusers_is_a_provider_whose_work_runs_through_the_routes(client):
    listed = {p["name"]: p for p in client.get("/providers").json()}
    assert listed["local"]["usable"] and "tiny-sd15" in listed["local"]["models"]
    batch = {**FAST, "provider": "local", "seed": 3, "num_images": 2, "steps": 2}
    first, again = (client.post("/txt2img", json=batch).json() for _ in range(2))
    assert first["provider"] == "local" and first["model"] == "tiny-sd15"
    assert [im["seed"] for im in first["images"]] == [3, 4]
    assert first["images"][0]["sha256"] == again["images"][0]["sha256"]
    image = decode(client.get(first["images"][0]["url"]).content)
    r = client.post("/inpaint", json={**FAST, "provider": "local", "steps": 2,
                                      "image": data_url(image),
                                      "mask": data_url(box_mask((64, 64), (10, 10, 30, 30)))})
    assert r.status_code == 200 and r.json()["provider"] == "local", r.text
    assert decode(client.get(r.json()["images"][0]["url"]).content).size == (64, 64)
    with pytest.raises(ProviderRefused, match="HTTP routes"):  # no second, unqueued path
        LocalProvider(registry=None).generate(RemoteRequest("txt2img", "x"))  # type: ignore[arg-type]


def test_txt2img_on_openai_says_who_made_it_and_records_usage(openai_client):
    client, fake = openai_client
    r = client.post("/txt2img", json={**FAST, "provider": "openai", "model": "gpt-image-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "openai" and body["model"] == "gpt-image-1"
    assert body["images"][0]["width"] == 1024  # gpt-image-1's nearest allowed size
    assert body["attempts"] == [{"provider": "openai", "status": "succeeded",
                                 "model": "gpt-image-1", "seconds": body["attempts"][0]
                                 ["seconds"]}]
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["provider"] == "openai" and record["usage"]["total_tokens"] == 4172
    assert fake.received[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in json.dumps(record)


def test_inpaint_on_openai_keeps_every_pixel_outside_the_mask(openai_client):
    client, fake = openai_client
    image = scene(*SIZE, seed=2)
    r = client.post("/inpaint", json={**FAST, "provider": "openai", "image": data_url(image),
                                      "mask": data_url(box_mask(SIZE, BOX)), "padding": 8})
    assert r.status_code == 200, r.text
    out = pixels(decode(client.get(r.json()["images"][0]["url"]).content))
    applied = np.asarray(decode(client.get(r.json()["mask_applied"]["url"]).content))
    assert out.shape[:2] == SIZE[::-1]
    assert np.array_equal(out[applied == 0], pixels(image)[applied == 0])
    assert (out[applied == 255] == (200, 30, 40)).all()  # the fake's colour, pasted back
    sent = fake.received[0]
    assert sent["path"] == "/v1/images/edits" and sent["body"]["size"] in (
        "256x256", "512x512", "1024x1024")


def test_kiosk_model_1_is_dalle_and_answers_png(openai_client):
    client, fake = openai_client
    r = client.post("/inpainting/", json={"prompt": "ein See", "image": data_url(scene(*SIZE)),
                                          "mask": data_url(kiosk_mask(SIZE, BOX)), "model": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert decode(r.content).size == SIZE
    assert fake.received[0]["body"]["model"] == "dall-e-2"


def test_a_chain_falls_back_and_records_every_attempt(openai_client):
    client, _ = openai_client
    r = client.post("/txt2img", json={**FAST, "provider": "broken-first", "model": "broken"})
    assert r.status_code == 200, r.text
    attempts = r.json()["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("local", "failed"),
                                                                ("openai", "succeeded")]
    assert attempts[0]["error_code"] == "model_load_failed"
    record = client.get(f"/records/{r.json()['record_id']}").json()
    assert record["provider"] == "openai" and len(record["attempts"]) == 2


@pytest.mark.parametrize("answer, status, code", [
    (Scripted("error", 500, "upstream broke"), 502, "provider_error"),
    (Scripted("hang", seconds=4), 504, "provider_timeout"),
])
def test_a_chain_that_fails_everywhere_ends_in_a_502_or_504_envelope(openai_client, answer,
                                                                      status, code):
    client, fake = openai_client
    fake.then(answer)
    r = client.post("/txt2img", json={**FAST, "provider": "broken-first", "model": "broken"})
    assert r.status_code == status and r.json()["error"]["code"] == code
    failed = client.get("/records", params={"status": "failed"}).json()["items"][0]
    assert [a["provider"] for a in failed["attempts"]] == ["local", "openai"]
    assert failed["error_code"] == code and KEY not in json.dumps(failed)


def test_openai_refusals_are_422_and_unusable_providers_are_named(openai_client, make_client):
    client, fake = openai_client
    fake.then(Scripted("error", 400, "rejected by the safety system"))
    r = client.post("/txt2img", json={**FAST, "provider": "openai"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "provider_refused"
    r = client.post("/txt2img", json={**FAST, "provider": "gemini"})
    assert r.status_code == 422 and "GEMINI_API_KEY not set" in r.json()["error"]["message"]
    r = client.post("/txt2img", json={**FAST, "provider": "nowhere"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "provider"
    r = client.post("/inpaint", json={**FAST, "provider": "hf", "image": data_url(scene(*SIZE)),
                                      "mask": data_url(box_mask(SIZE, BOX))})
    assert r.status_code == 422 and "hf cannot inpaint" in r.json()["error"]["message"]


def test_hugging_face_black_images_are_flagged_in_the_record(make_client, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with hf_server.fake_hf() as fake:
        fake.then(hf_server.black())
        client = make_client(hf_token=HF_TOKEN, hf_inference_url=fake.base_url)
        body = client.post("/txt2img", json={**FAST, "provider": "hf"}).json()
    assert body["images"][0]["flags"] == ["black_image"]
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["attempts"][0]["flags"] == ["black_image"]


@pytest.mark.parametrize("answers, status, code", [
    ([hf_server.cold(), hf_server.ok()], 200, None),
    ([hf_server.garbage()], 502, "provider_error"),
    ([hf_server.error(400, "bad prompt")], 422, "provider_refused"),
])
def test_hugging_face_outcomes_through_the_api_are_recorded(make_client, monkeypatch, answers,
                                                            status, code):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with hf_server.fake_hf() as fake:
        fake.then(*answers)
        client = make_client(hf_token=HF_TOKEN, hf_inference_url=fake.base_url,
                             provider_timeout_s=5.0)
        r = client.post("/txt2img", json={**FAST, "provider": "hf"})
    assert r.status_code == status, r.text
    record = client.get("/records").json()["items"][0]
    assert record["provider"] == "hf" and record["attempts"][0]["provider"] == "hf"
    assert record["status"] == ("succeeded" if code is None else "failed")
    assert record["error_code"] == code


def test_hugging_face_black_images_are_flagged_and_retried(make_client, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with hf_server.fake_hf() as fake:
        fake.then(hf_server.black(), hf_server.ok())
        client = make_client(hf_token=HF_TOKEN, hf_inference_url=fake.base_url,
                             hf_retry_black=True, provider_timeout_s=5.0)
        r = client.post("/txt2img", json={**FAST, "provider": "hf"})
        assert r.status_code == 200, r.text
        assert r.json()["provider"] == "hf" and r.json()["images"][0]["seed"] == 8
        assert len(fake.received) == 2
    assert HF_TOKEN not in json.dumps(client.get(f"/records/{r.json()['record_id']}").json())


def test_gemini_through_the_api_records_usage(make_client):
    with fake_gemini() as fake:
        client = make_client(gemini_api_key=GEMINI_KEY, gemini_base_url=fake.base_url,
                             gemini_imagen_model="", provider_timeout_s=5.0)
        r = client.post("/txt2img", json={**FAST, "provider": "gemini"})
        assert r.status_code == 200, r.text
        record = client.get(f"/records/{r.json()['record_id']}").json()
    assert record["provider"] == "gemini" and record["usage"]["total_tokens"] > 0
    assert GEMINI_KEY not in json.dumps(record)
