"""GET /models, /schedulers, /health, /ready."""

from __future__ import annotations


def test_models_lists_the_embedded_default_and_says_its_pictures_are_abstract(make_client):
    client = make_client(default_model=None, models_dir="/nonexistent-empty-models-dir")
    (model,) = client.get("/models").json()
    assert model["id"] == "bildwerk-tiny" and model["embedded"] and model["default"]
    assert "abstract" in model["description"]
    assert model["family"] == "sd15" and model["variant"] == "base"
    body = client.post("/txt2img", json={"prompt": "a lighthouse", "steps": 2}).json()
    assert body["model"] == "bildwerk-tiny"
    assert (body["images"][0]["width"], body["images"][0]["height"]) == (256, 256)
    assert client.get("/models").json()[0]["loaded"] is True


def test_models_lists_discovered_checkpoints_with_probed_facts(client):
    models = {m["id"]: m for m in client.get("/models").json()}
    assert {"tiny-sd15", "tiny-sd15-inpaint", "tiny-single", "broken", "bildwerk-tiny"} <= \
        set(models)
    assert models["tiny-sd15"]["default"] and models["tiny-sd15"]["format"] == "diffusers"
    assert models["tiny-sd15-inpaint"]["variant"] == "inpaint"
    assert models["tiny-single"]["format"] == "single_file"
    assert models["tiny-sd15"]["size_bytes"] > 0 and not models["tiny-sd15"]["loaded"]
    assert "tiny-single.config" not in models


def test_schedulers_lists_names_the_api_accepts(client):
    names = [s["name"] for s in client.get("/schedulers").json()]
    assert {"euler", "euler_a", "dpmpp_2m_karras", "ddim", "unipc"} <= set(names)
    assert sum(s["default"] for s in client.get("/schedulers").json()) == 1


def test_health_and_ready(client):
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"worker": True, "models": True, "database": True,
                                      "records": True, "disk": True, "device": "cpu",
                                      "accepting": True}


def test_unknown_route_and_method_use_the_envelope(client):
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"
    r = client.get("/txt2img")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
