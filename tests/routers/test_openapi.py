"""The OpenAPI document: every route is described and every example runs as it is."""

from __future__ import annotations

import pytest


def test_every_operation_has_a_summary_and_documented_responses(client):
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), f"{method.upper()} {path} lacks a summary"
            assert "200" in op["responses"] or "202" in op["responses"], (method, path)


@pytest.mark.parametrize("path", ["/txt2img", "/inpaint", "/inpainting/"])
def test_request_examples_run_as_they_are(client, path):
    spec = client.get("/openapi.json").json()
    media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    examples = media.get("examples")
    assert examples, f"{path} has no example"
    for name, example in examples.items():
        r = client.post(path, json=example["value"])
        assert r.status_code == 200, (path, name, r.text)
