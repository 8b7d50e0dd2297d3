"""POST /prompt-expand with the LLM expanders: the real `openai` and `google-genai` SDKs
against our fake servers on 127.0.0.1, malformed answers falling back to the local
expander, and the record saying who answered."""

from __future__ import annotations

from app.prompting.vocab import MAX_CONTENT_TOKENS, count_tokens
from tests.fakes.gemini_server import Scripted as GeminiScripted
from tests.fakes.gemini_server import fake_gemini
from tests.fakes.openai_server import Scripted, fake_openai

KEY = "sk-test-not-a-real-key"
WISH = "ein See mitten in Olpe"


def openai_client(make_client, fake, **kw):
    return make_client(openai_api_key=KEY, openai_base_url=f"{fake.base_url}/v1",
                       prompt_timeout_s=5, provider_retries=0, **kw)


def gemini_client(make_client, fake, **kw):
    return make_client(gemini_api_key=KEY, gemini_base_url=fake.base_url,
                       prompt_timeout_s=5, provider_retries=0, **kw)


def chat_calls(fake) -> list[dict]:
    return [r for r in fake.received if r["path"] == "/v1/chat/completions"]


def test_openai_answers_with_structured_output(make_client):
    with fake_openai() as fake:
        client = openai_client(make_client, fake)
        r = client.post("/prompt-expand", json={
            "idea": WISH, "provider": "openai", "style": "satellite-map", "count": 3,
            "seed": 11, "temperature": 0.4, "top_p": 0.9, "max_tokens": 900})
        assert r.status_code == 200, r.text
        out = r.json()
        calls = chat_calls(fake)
    assert out["provider"] == "openai" and len(out["prompts"]) == 3
    assert [p["seed"] for p in out["prompts"]] == [11, 12, 13]
    for p in out["prompts"]:
        assert p["provider"] == "openai" and p["translated_text"] == "a lake in the middle of Olpe"
        assert count_tokens(p["prompt"]) <= MAX_CONTENT_TOKENS
        assert p["title"] and p["metatags"]
    assert len(calls) == 1
    body = calls[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["temperature"] == 0.4 and body["top_p"] == 0.9 and body["seed"] == 11
    assert body["max_completion_tokens"] == 900
    # the translated wish is what the LLM was asked to expand
    assert "a lake in the middle of Olpe" in body["messages"][-1]["content"]
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["provider"] == "openai" and record["usage"]
    assert record["attempts"][0]["provider"] == "openai"
    assert KEY not in str(record)


def test_malformed_twice_falls_back_to_local_and_records_it(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("malformed"), Scripted("malformed"))
        client = openai_client(make_client, fake)
        out = client.post("/prompt-expand", json={"idea": "a castle on a hill",
                                                  "provider": "openai", "count": 2,
                                                  "seed": 5}).json()
        assert len(chat_calls(fake)) == 2  # the answer was retried once
    assert out["provider"] == "local"
    failed, answered = out["attempts"]
    assert failed["provider"] == "openai" and failed["kind"] == "malformed"
    assert failed["calls"] == 2 and answered["provider"] == "local"
    local = client.post("/prompt-expand", json={"idea": "a castle on a hill",
                                                "provider": "local", "count": 2,
                                                "seed": 5}).json()
    assert out["prompts"] == local["prompts"]
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["status"] == "succeeded" and record["provider"] == "local"
    assert record["attempts"][0]["kind"] == "malformed"


def test_a_repairable_answer_is_repaired_without_a_second_call(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("repairable"))
        client = openai_client(make_client, fake)
        out = client.post("/prompt-expand", json={"idea": "a red barn", "provider": "openai",
                                                  "count": 2, "seed": 1}).json()
        assert len(chat_calls(fake)) == 1
    assert out["provider"] == "openai" and out["attempts"][0]["repaired"] is True


def test_without_fallback_llm_failures_are_answered_as_errors(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("error", 500, "boom"), Scripted("refusal"))
        client = openai_client(make_client, fake)
        failing = client.post("/prompt-expand", json={"idea": "x", "provider": "openai",
                                                      "fallback": False})
        refused = client.post("/prompt-expand", json={"idea": "x", "provider": "openai",
                                                      "fallback": False})
    assert failing.status_code == 502 and failing.json()["error"]["code"] == "provider_error"
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "provider_refused"
    records = client.get("/records", params={"endpoint": "prompt-expand"}).json()["items"]
    assert {r["status"] for r in records} == {"failed"} and len(records) == 2


def test_gemini_answers_with_a_response_schema(make_client):
    with fake_gemini() as fake:
        client = gemini_client(make_client, fake)
        r = client.post("/prompt-expand", json={
            "idea": "a lighthouse on a cliff at dusk", "provider": "gemini",
            "style": "blender-render", "count": 2, "seed": 3, "temperature": 0.7,
            "top_p": 0.95, "top_k": 40, "max_tokens": 1024})
        assert r.status_code == 200, r.text
        sent = [x for x in fake.received if x.route == "generateContent"]
    out = r.json()
    assert out["provider"] == "gemini" and [p["seed"] for p in out["prompts"]] == [3, 4]
    assert all(p["provider"] == "gemini" and p["style"] == "blender-render"
               for p in out["prompts"])
    config = sent[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseSchema"]
    assert config["temperature"] == 0.7 and config["topK"] == 40 and config["topP"] == 0.95
    assert config["maxOutputTokens"] == 1024 and config["seed"] == 3


def test_a_blocked_gemini_answer_falls_back_to_local(make_client):
    with fake_gemini() as fake:
        fake.then(GeminiScripted("blocked"))
        client = gemini_client(make_client, fake)
        out = client.post("/prompt-expand", json={"idea": "a castle", "provider": "gemini",
                                                  "count": 1, "seed": 2}).json()
    assert out["provider"] == "local"
    assert out["attempts"][0]["kind"] == "refused"


def test_expand_prompt_on_txt2img_uses_the_configured_llm(make_client):
    with fake_openai() as fake:
        client = openai_client(make_client, fake, prompt_provider="openai")
        r = client.post("/txt2img", json={"prompt": "a red barn", "expand_prompt": True,
                                          "width": 64, "height": 64, "steps": 2, "seed": 8})
        assert r.status_code == 200, r.text
        assert len(chat_calls(fake)) == 1
    body = r.json()
    assert body["prompting"]["expander"] == "openai"
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["prompt"] == "a red barn"
    assert record["prompt_expanded"] == body["prompt"] != "a red barn"
    assert body["prompt"].startswith("a red barn")


def test_a_failing_llm_is_asked_once_per_request_not_once_per_scene(make_client):
    with fake_openai() as fake:
        fake.then(*[Scripted("error", 500, "down")] * 5)
        client = openai_client(make_client, fake)
        out = client.post("/prompt-expand", json={
            "script": "a ship at dawn\na storm at sea\na lighthouse at night",
            "provider": "openai", "seed": 1}).json()
        calls = chat_calls(fake)
    assert len(calls) == 1
    assert [p["provider"] for p in out["prompts"]] == ["local"] * 3
    assert [(a["scene"], a["provider"]) for a in out["attempts"]] == [
        (0, "openai"), (0, "local"), (1, "local"), (2, "local")]
