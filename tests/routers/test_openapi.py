"""The OpenAPI document: every route is described and every example runs as it is."""

from __future__ import annotations

import pytest


def test_every_operation_has_a_summary_and_documented_responses(client):
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), f"{method.upper()} {path} lacks a summary"
            assert {"200", "201", "202"} & set(op["responses"]), (method, path)


# SQLite only: the examples' shapes are what is checked; both databases store what they make
# in tests/persistence and the router tests.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("path", ["/txt2img", "/inpaint", "/inpainting/", "/img2seq",
                                  "/prompt-expand"])
def test_request_examples_run_as_they_are(client, path):
    spec = client.get("/openapi.json").json()
    media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    examples = media.get("examples")
    assert examples, f"{path} has no example"
    for name, example in examples.items():
        r = client.post(path, json=example["value"])
        assert r.status_code == 200, (path, name, r.text)


def test_errors_are_documented_as_the_envelope(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if (path, status) == ("/ready", "503"):
                    continue  # readiness answers with its checks, for probes to read
                if status.startswith(("4", "5")) and "content" in response:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    # /v1/ answers in OpenAI's shape (tests/compat/test_openai_errors.py),
                    # /sdapi/v1/ in AUTOMATIC1111's (tests/compat/test_a1111_api.py)
                    envelope = ("/OpenAIErrorEnvelope" if path.startswith("/v1/")
                                else "/A1111Error" if path.startswith("/sdapi/")
                                else "/ErrorEnvelope")
                    assert ref.endswith(envelope), (method, path, status)


def test_swagger_ui_is_served_from_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.split("<body>")[0].lower()
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
