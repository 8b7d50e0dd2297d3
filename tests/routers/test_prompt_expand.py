"""POST /prompt-expand and GET /styles through the HTTP API: the local expander, the
translation chain (offline glossary and a fake LibreTranslate), batches and exports, and
every expansion recorded."""

from __future__ import annotations

import csv
import io
import json

import pytest

from app.prompting.vocab import MAX_CONTENT_TOKENS, count_tokens
from tests.fakes.libretranslate_server import fake_libretranslate

WISH = "ein See mitten in Olpe"
FORMULA_IDEAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)"]


def expand(client, **body):
    r = client.post("/prompt-expand", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_german_wish_is_translated_offline_and_expanded_locally(client):
    out = expand(client, idea=WISH, style="satellite-map", count=5, seed=1)
    assert out["provider"] == "local" and out["requested_provider"] == "local"
    assert [p["seed"] for p in out["prompts"]] == [1, 2, 3, 4, 5]
    for p in out["prompts"]:
        assert p["language_detected"] == "de"
        assert p["translated_text"] == "a lake in the middle of Olpe"
        assert p["prompt"].startswith("a lake in the middle of Olpe")
        assert count_tokens(p["prompt"]) <= MAX_CONTENT_TOKENS
        assert p["title"] and p["description"] and 3 <= len(p["metatags"]) <= 8
        assert p["negative_prompt"] and p["provider"] == "local"
        assert p["style"] == "satellite-map" and p["params"]["steps"] == 30
    assert len({p["prompt"] for p in out["prompts"]}) >= 4  # varied across seeds


def test_the_same_seed_gives_the_same_prompts(client):
    body = {"idea": "a lighthouse on a cliff at dusk", "count": 3, "seed": 42}
    first, second = expand(client, **body), expand(client, **body)
    assert first["prompts"] == second["prompts"]
    assert first["record_id"] != second["record_id"]
    other = expand(client, **{**body, "seed": 43})
    assert other["prompts"][0]["prompt"] != first["prompts"][0]["prompt"]


def test_without_a_seed_one_is_drawn_and_returned(client):
    out = expand(client, idea="a red barn", count=2)
    assert out["prompts"][0]["seed"] == out["seed"]
    again = expand(client, idea="a red barn", count=2, seed=out["seed"])
    assert again["prompts"] == out["prompts"]


def test_every_expansion_is_recorded(client):
    out = expand(client, idea=WISH, count=2, seed=9, style="satellite-map")
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["endpoint"] == "prompt-expand" and record["status"] == "succeeded"
    assert record["prompt"] == WISH  # as typed
    assert record["prompt_translated"] == "a lake in the middle of Olpe"
    assert record["prompt_expanded"].split("\n") == [p["prompt"] for p in out["prompts"]]
    assert record["provider"] == "local" and record["seeds"] == [9, 10]
    assert record["result"]["prompts"] == out["prompts"]
    assert record["params"]["style"] == "satellite-map"
    listed = client.get("/records", params={"endpoint": "prompt-expand"}).json()
    assert out["record_id"] in [r["id"] for r in listed["items"]]


def test_a_script_gets_one_prompt_per_scene(client):
    script = "A ship leaves the harbour at dawn.\nA storm over the sea.\n\n"
    out = expand(client, script=script, style="cinematic", seed=7)
    assert [p["scene"] for p in out["prompts"]] == [0, 1]
    assert out["prompts"][0]["prompt"].startswith("A ship leaves the harbour at dawn")
    assert out["prompts"][1]["prompt"].startswith("A storm over the sea")
    assert len({p["seed"] for p in out["prompts"]}) == 2
    two = expand(client, script=script, count=2, seed=7)
    assert [p["scene"] for p in two["prompts"]] == [0, 0, 1, 1]


def test_csv_export_has_the_seed_tools_columns(client):
    r = client.post("/prompt-expand", params={"format": "csv"},
                    json={"idea": "a castle on a hill", "count": 4, "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["title", "description", "metatags", "prompt"]
    assert len(rows) == 5 and all(len(row) == 4 and row[3] for row in rows[1:])
    record = client.get(f"/records/{r.headers['x-bildwerk-record-id']}").json()
    assert [p["prompt"] for p in record["result"]["prompts"]] == [row[3] for row in rows[1:]]


@pytest.mark.parametrize("idea", FORMULA_IDEAS)
def test_csv_export_neutralises_formulas_and_json_keeps_the_exact_text(client, idea):
    body = {"idea": idea, "count": 2, "seed": 3}
    r = client.post("/prompt-expand", params={"format": "csv"}, json=body)
    assert r.status_code == 200, r.text
    rows = list(csv.reader(io.StringIO(r.text)))[1:]
    exact = expand(client, **body)["prompts"]  # the same seed: the same prompts
    assert len(rows) == len(exact) == 2
    for (title, description, _, prompt), item in zip(rows, exact, strict=True):
        assert item["prompt"].startswith(idea) and item["title"][0] == idea[0]
        assert (title, description, prompt) == (
            "'" + item["title"], "'" + item["description"], "'" + item["prompt"])
    jsonl = client.post("/prompt-expand", params={"format": "jsonl"}, json=body).text
    assert [json.loads(line)["prompt"] for line in jsonl.splitlines()] == \
        [item["prompt"] for item in exact]


def test_jsonl_export_has_one_prompt_per_line(client):
    r = client.post("/prompt-expand", params={"format": "jsonl"},
                    json={"idea": "a castle on a hill", "count": 3, "seed": 3})
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["seed"] for line in lines] == [3, 4, 5]
    assert {"title", "description", "metatags", "prompt", "negative_prompt"} <= set(lines[0])


def test_bad_requests_are_clear_envelopes(client):
    cases = [
        ({"idea": "x", "style": "no-such-style"}, "style"),
        ({"idea": "x", "script": "y"}, None),
        ({}, None),
        ({"idea": "x", "count": 0}, "count"),
        ({"idea": "x", "provider": "llama"}, "provider"),
        ({"idea": "x", "temperature": 9}, "temperature"),
        ({"script": "\n".join(f"scene {i}" for i in range(30)), "count": 2}, "count"),
    ]
    for body, param in cases:
        r = client.post("/prompt-expand", json=body)
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert error["code"] in ("invalid_input", "validation_error"), error
        if param:
            assert error["param"].endswith(param), (body, error)


def test_styles_are_listed(client):
    styles = client.get("/styles").json()
    names = [s["name"] for s in styles]
    assert {"satellite-map", "blender-render", "cinematic"} <= set(names)
    for s in styles:
        assert "{prompt}" in s["template"] and s["negative_prompt"]
        assert s["params"]["steps"] >= 1


def test_an_llm_without_a_key_falls_back_to_local_and_says_so(client):
    out = expand(client, idea="a castle on a hill", provider="openai", count=2, seed=5)
    assert out["provider"] == "local" and out["requested_provider"] == "openai"
    failed, answered = out["attempts"]
    assert failed["provider"] == "openai" and failed["status"] == "failed"
    assert failed["kind"] == "unavailable" and "OPENAI_API_KEY" in failed["error_message"]
    assert answered["provider"] == "local" and answered["status"] == "succeeded"
    local = expand(client, idea="a castle on a hill", provider="local", count=2, seed=5)
    assert out["prompts"] == local["prompts"]
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["provider"] == "local" and record["attempts"][0]["provider"] == "openai"


def test_without_fallback_a_missing_key_is_an_error_and_is_recorded(client):
    r = client.post("/prompt-expand", json={"idea": "x", "provider": "gemini",
                                            "fallback": False})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "provider_unavailable"
    failed = client.get("/records", params={"endpoint": "prompt-expand",
                                            "status": "failed"}).json()["items"]
    assert failed and failed[0]["error_code"] == "provider_unavailable"


def test_german_goes_through_an_online_translator_when_configured(make_client):
    with fake_libretranslate({WISH: "a lake in the middle of Olpe town"}) as fake:
        client = make_client(translate_online=True, libretranslate_url=fake.base_url)
        out = expand(client, idea=WISH, count=1, seed=1)
    assert out["prompts"][0]["translated_text"] == "a lake in the middle of Olpe town"
    assert fake.received and fake.received[0]["params"]["source"] == "de"


def test_a_failing_online_translator_falls_back_to_the_glossary(make_client):
    with fake_libretranslate() as fake:
        fake.mode = "error"
        client = make_client(translate_online=True, libretranslate_url=fake.base_url)
        out = expand(client, idea=WISH, count=1, seed=1)
    assert out["prompts"][0]["translated_text"] == "a lake in the middle of Olpe"


def test_english_is_not_translated(client):
    out = expand(client, idea="a lighthouse on a cliff at dusk", count=1, seed=1)
    assert out["prompts"][0]["language_detected"] == "en"
    assert out["prompts"][0]["translated_text"] is None
