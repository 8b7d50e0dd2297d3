"""The /v1 routes answer errors in OpenAI's shape and status codes (the request gate and
the exception handlers through the "/v1/" error dialect), declare them in /openapi.json,
and leave the native routes' envelope alone."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.compat.openai_images.errors import openai_error_response
from tests.utils.images import png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

GEN = "/v1/images/generations"
FAST = {"prompt": "x", "size": "64x64", "steps": 2, "seed": 1}
TAG = "OpenAI Images API (/v1)"


REMOTE = ("203.0.113.5", 50000)  # not loopback: no keyless access


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("body, param", [
    ({**FAST, "size": "100x100"}, "size"),
    ({**FAST, "n": 11}, "n"),
    ({**FAST, "quality": "ultra"}, "quality"),
    ({**FAST, "output_format": "gif"}, "output_format"),
    ({**FAST, "partial_images": 4}, "partial_images"),
    ({**FAST, "step": 3}, "step"),  # unknown fields are refused, as by OpenAI
    ({"size": "64x64"}, "prompt"),
])
def test_invalid_input_is_a_400_invalid_request_error(client, body, param):
    error = openai_error(client.post(GEN, json=body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_the_servers_limits_name_openais_parameters(make_client):
    client = make_client(max_images=2)
    error = openai_error(client.post(GEN, json={**FAST, "n": 3}), 400)
    assert error["param"] == "n"


def test_an_unknown_model_is_a_404_model_not_found(client):
    error = openai_error(client.post(GEN, json={**FAST, "model": "dall-e-3"}), 404)
    assert error["code"] == "model_not_found" and "dall-e-3" in error["message"]
    assert openai_error(client.get("/v1/models/dall-e-3"), 404)["code"] == "model_not_found"
    # a known model that cannot do the task stays a 400
    r = client.post(GEN, json={**FAST, "model": "tiny-sd15-inpaint"})
    assert openai_error(r, 400)["param"] == "model"


def test_auth_errors_in_openais_shape(client):
    outsider = TestClient(client.app, client=REMOTE)
    error = openai_error(outsider.post(GEN, json=FAST), 401)  # the request gate
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert openai_error(outsider.get("/v1/models"), 401)["code"] == "invalid_api_key"
    _, reader = client.app.state.keys.create("reader", ["read"])
    r = outsider.post(GEN, json=FAST, headers=bearer(reader))
    assert openai_error(r, 403)["type"] == "invalid_request_error"
    assert outsider.get("/v1/models", headers=bearer(reader)).status_code == 200  # any key


def test_a_body_beyond_the_limit_is_a_413_from_the_gate(make_client):
    client = make_client(max_body_bytes=2048)
    big = png_bytes(scene(200, 200))
    r = client.post("/v1/images/edits", data={"prompt": "x"},
                    files={"image": ("i.png", big, "image/png")})
    assert openai_error(r, 413)["code"] == "payload_too_large"


def test_edits_need_a_multipart_image(client):
    assert openai_error(client.post("/v1/images/edits", json={"prompt": "x"}), 415)
    r = client.post("/v1/images/edits", data={"prompt": "x"},
                    files={"mask": ("m.png", png_bytes(scene(64, 64)), "image/png")})
    assert openai_error(r, 400)["param"] == "image"
    r = client.post("/v1/images/edits", data={"prompt": "x"},
                    files={"image": ("i.png", png_bytes(scene(64, 64)), "image/png"),
                           "mask": ("m.png", png_bytes(scene(64, 64)), "image/png")})
    error = openai_error(r, 400)  # a mask without alpha marks nothing in OpenAI's convention
    assert error["param"] == "mask" and "alpha" in error["message"]
    r = client.post("/v1/images/edits", data={"prompt": "x"},
                    files={"image": ("i.png", png_bytes(scene(64, 64)), "image/png"),
                           "mask": ("m.png", png_bytes(scene(72, 64).convert("RGBA")),
                                    "image/png")})
    assert openai_error(r, 400)["code"] == "mask_size_mismatch"


def test_rate_limit_is_a_429_the_sdk_may_retry(make_client):
    client = make_client(rate_limit="1/minute")
    assert client.post(GEN, json=FAST).status_code == 200
    r = client.post(GEN, json=FAST)
    error = openai_error(r, 429)
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert int(r.headers["retry-after"]) >= 1 and "x-should-retry" not in r.headers


def test_a_failed_generation_says_do_not_retry(client):
    r = client.post(GEN, json={**FAST, "model": "broken"})
    error = openai_error(r, 500)
    assert error["type"] == "server_error" and error["code"] == "model_load_failed"
    assert r.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("status, code, retry", [
    (409, "cancelled", "false"), (500, "generation_failed", "false"),
    (502, "provider_error", "false"), (504, "job_timeout", "false"),
    (503, "shutting_down", None), (429, "queue_full", None), (400, "bad_request", None)])
def test_which_answers_forbid_the_sdks_retry(status, code, retry):
    r = openai_error_response(status, code, "m", None, {"Retry-After": "5"})
    assert r.headers.get("x-should-retry") == retry
    assert r.headers["retry-after"] == "5"


def test_the_native_routes_keep_their_envelope(client):
    r = client.post("/txt2img", json={"prompt": "x", "width": 100})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    assert "type" not in r.json()["error"]


def test_the_v1_routes_are_documented(client):
    spec = client.get("/openapi.json").json()
    ours = {path: item for path, item in spec["paths"].items() if path.startswith("/v1/")}
    assert set(ours) == {"/v1/images/generations", "/v1/images/edits",
                         "/v1/images/variations", "/v1/models", "/v1/models/{model_id}"}
    for path, item in ours.items():
        for op in item.values():
            assert op["tags"] == [TAG] and op["summary"], path
            for status, response in op["responses"].items():
                if status[0] in "45" or status == "default":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/OpenAIErrorEnvelope"), (path, status)
            assert "422" not in op["responses"]  # OpenAI answers 400
    for path in ("/v1/images/edits", "/v1/images/variations"):
        form = ours[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["properties"]["image"]["format"] == "binary"
    edit = ours["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert {"mask", "image[]", "prompt", "mask_blur", "loras"} <= set(
        edit["schema"]["properties"])
    generate = ours[GEN]["post"]
    assert "text/event-stream" in generate["responses"]["200"]["content"]
    assert {"prompt", "size", "quality", "seed", "steps"} <= set(
        generate["requestBody"]["content"]["application/json"]["schema"]["properties"])


def test_multipart_loras_in_the_sdks_bracket_form(client):
    r = client.post("/v1/images/variations",
                    data={"loras[][name]": "style-diffusers", "loras[][weight]": "0.5",
                          "steps": "2", "seed": "3"},
                    files={"image": ("i.png", png_bytes(scene(64, 64)), "image/png")})
    assert r.status_code == 200, r.text
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert record["loras"] == [{"name": "style-diffusers", "weight": 0.5}]
    r = client.post("/v1/images/variations", data={"loras[][name]": "no-such-lora"},
                    files={"image": ("i.png", png_bytes(scene(64, 64)), "image/png")})
    assert openai_error(r, 400)["param"].startswith("loras")
