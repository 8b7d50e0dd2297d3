"""POST /prompt-expand with the LLM expanders: the real `openai` and `google-genai` SDKs
against our fake servers on 127.0.0.1, malformed answers falling back to the local
expander, the LLM translating the wish in its structured answer, and the record saying
who answered and who translated."""

from __future__ import annotations

import json

from app.prompting.vocab import MAX_CONTENT_TOKENS, count_tokens
from tests.fakes.gemini_server import Scripted as GeminiScripted
from tests.fakes.gemini_server import fake_gemini
from tests.fakes.openai_server import Scripted, fake_openai

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

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
        # the fake's answer has no "translation": the offline one stays, and says so
        assert p["provider"] == "openai" and p["translated_text"] == "a lake in the middle of Olpe"
        assert count_tokens(p["prompt"]) <= MAX_CONTENT_TOKENS
        assert p["title"] and p["metatags"]
    assert len(calls) == 1
    body = calls[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["translation", "prompts"]
    assert body["temperature"] == 0.4 and body["top_p"] == 0.9 and body["seed"] == 11
    assert body["max_completion_tokens"] == 900
    # the wish as typed is what the LLM was asked to translate and expand
    assert body["messages"][-1]["content"].startswith(f"Wish: {WISH}\n")
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["provider"] == "openai" and record["usage"]
    assert record["attempts"][0]["provider"] == "openai"
    assert record["attempts"][0]["translation"] is False
    assert record["prompt"] == WISH
    assert record["prompt_translated"] == "a lake in the middle of Olpe"
    assert record["result"]["translations"] == [{
        "scene": 0, "language": "de", "translator": "glossary",
        "text": "a lake in the middle of Olpe"}]
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


# --------------------------------------------------------------------------- LLM translation

KIOSK_WISH = "Hier soll ein Windpark entstehen"
LLM_ENGLISH = "A wind farm should be built here"


def translated_answer(translation, count: int = 1, subject: str = "a wind farm") -> str:
    """The JSON a real model would send: its translation first, then the prompts."""
    return json.dumps({"translation": translation, "prompts": [{
        "title": f"Wind Farm {i + 1}", "description": f"A wind farm, picture {i + 1}.",
        "metatags": ["wind farm", "energy", "aerial view"],
        "prompt": f"{subject}, aerial view, variant {i + 1}",
        "negative_prompt": "blurry"} for i in range(count)]})


def test_the_llm_translation_is_the_translated_wish_and_is_recorded(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("text", text=translated_answer(LLM_ENGLISH, 2)))
        client = openai_client(make_client, fake)
        out = client.post("/prompt-expand", json={
            "idea": KIOSK_WISH, "provider": "openai", "count": 2, "seed": 4}).json()
        (call,) = chat_calls(fake)
    assert call["body"]["messages"][-1]["content"].startswith(f"Wish: {KIOSK_WISH}\n")
    assert out["provider"] == "openai"
    for p in out["prompts"]:
        assert p["translated_text"] == LLM_ENGLISH and p["language_detected"] == "de"
        assert p["translator"] == "openai"
        assert p["prompt"].startswith("a wind farm, aerial view")
    assert out["attempts"][0]["translation"] is True
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["prompt"] == KIOSK_WISH  # as typed
    assert record["prompt_translated"] == LLM_ENGLISH  # as the LLM translated it
    (scene,) = record["result"]["translations"]
    assert scene == {"scene": 0, "language": "de", "translator": "openai", "text": LLM_ENGLISH,
                     "offline": {"translator": "glossary",
                                 "text": "a wind farm should be created here"}}


def test_gemini_translates_in_its_structured_answer_too(make_client):
    with fake_gemini() as fake:
        fake.then(GeminiScripted("text", text=translated_answer("More green spaces instead "
                                                                "of concrete")))
        client = gemini_client(make_client, fake)
        out = client.post("/prompt-expand", json={
            "idea": "Mehr Grünflächen statt Beton", "provider": "gemini", "count": 1,
            "seed": 2}).json()
        (sent,) = [x for x in fake.received if x.route == "generateContent"]
    schema = sent.body["generationConfig"]["responseSchema"]
    assert schema["required"] == ["translation", "prompts"]
    assert schema.get("propertyOrdering", schema.get("property_ordering")) == [
        "translation", "prompts"]  # the translation is written first
    assert sent.body["contents"][-1]["parts"][0]["text"].startswith(
        "Wish: Mehr Grünflächen statt Beton\n")
    assert out["provider"] == "gemini"
    assert out["prompts"][0]["translated_text"] == "More green spaces instead of concrete"
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["prompt_translated"] == "More green spaces instead of concrete"
    assert record["result"]["translations"][0]["translator"] == "gemini"
    assert record["result"]["translations"][0]["offline"]["text"] == \
        "more green spaces instead of concrete"


def test_a_failing_llm_leaves_the_offline_translation_to_the_local_expander(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("malformed"), Scripted("malformed"))
        client = openai_client(make_client, fake)
        out = client.post("/prompt-expand", json={
            "idea": KIOSK_WISH, "provider": "openai", "count": 1, "seed": 3}).json()
        calls = chat_calls(fake)
    assert len(calls) == 2 and out["provider"] == "local"
    assert calls[0]["body"]["messages"][-1]["content"].startswith(f"Wish: {KIOSK_WISH}\n")
    (p,) = out["prompts"]
    assert p["translated_text"] == "a wind farm should be created here"
    assert p["translator"] == "glossary"
    assert p["prompt"].startswith("a wind farm should be created here")  # not the German
    record = client.get(f"/records/{out['record_id']}").json()
    assert record["result"]["translations"][0]["translator"] == "glossary"
    assert "offline" not in record["result"]["translations"][0]


def test_an_unusable_llm_translation_keeps_the_offline_one(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("text", text=translated_answer("   ")),
                  Scripted("text", text=translated_answer(KIOSK_WISH)))
        client = openai_client(make_client, fake)
        empty = client.post("/prompt-expand", json={
            "idea": KIOSK_WISH, "provider": "openai", "count": 1, "seed": 3}).json()
        echoed = client.post("/prompt-expand", json={
            "idea": KIOSK_WISH, "provider": "openai", "count": 1, "seed": 3}).json()
    for out in (empty, echoed):
        assert out["provider"] == "openai"
        assert out["prompts"][0]["translated_text"] == "a wind farm should be created here"
        record = client.get(f"/records/{out['record_id']}").json()
        assert record["result"]["translations"][0]["translator"] == "glossary"
    assert empty["attempts"][0]["translation"] is False


def test_english_and_untranslated_wishes_are_sent_as_they_are(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("text", text=translated_answer("a red barn by a lake")),
                  Scripted("text", text=translated_answer("a wind farm here")))
        client = openai_client(make_client, fake)
        english = client.post("/prompt-expand", json={
            "idea": "a red barn by a lake", "provider": "openai", "count": 1}).json()
        untranslated = client.post("/prompt-expand", json={
            "idea": KIOSK_WISH, "provider": "openai", "count": 1, "translate": False}).json()
        first, second = chat_calls(fake)
    assert first["body"]["messages"][-1]["content"].startswith("Wish: a red barn by a lake\n")
    assert english["prompts"][0]["translated_text"] is None
    assert second["body"]["messages"][-1]["content"].startswith(f"Wish: {KIOSK_WISH}\n")
    assert untranslated["prompts"][0]["translated_text"] is None  # translate: false
    record = client.get(f"/records/{untranslated['record_id']}").json()
    assert record["prompt_translated"] is None
    assert record["result"]["translations"][0]["translator"] is None


def test_txt2img_records_the_llm_translation_and_the_offline_one(make_client):
    with fake_openai() as fake:
        fake.then(Scripted("text", text=translated_answer(LLM_ENGLISH)))
        client = openai_client(make_client, fake, prompt_provider="openai")
        r = client.post("/txt2img", json={"prompt": KIOSK_WISH, "translate": True,
                                          "expand_prompt": True, "width": 64, "height": 64,
                                          "steps": 2, "seed": 8})
        assert r.status_code == 200, r.text
        (call,) = chat_calls(fake)
    assert call["body"]["messages"][-1]["content"].startswith(f"Wish: {KIOSK_WISH}\n")
    body = r.json()
    prompting = body["prompting"]
    assert prompting["typed"] == KIOSK_WISH and prompting["translated"] == LLM_ENGLISH
    assert prompting["translator"] == "openai" and prompting["expander"] == "openai"
    assert prompting["offline_translation"] == {
        "translator": "glossary", "text": "a wind farm should be created here"}
    assert body["prompt"].startswith("a wind farm, aerial view")
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["prompt"] == KIOSK_WISH
    assert record["prompt_translated"] == LLM_ENGLISH
    assert record["prompt_expanded"] == body["prompt"]
