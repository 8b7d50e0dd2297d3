"""The LLM prompt expanders through the real ``openai`` and ``google-genai`` SDKs against
the fakes on 127.0.0.1: answers, wire format, repair, one corrective retry, refusals,
bounded retries, timeouts, the few-shot files, and the wish's English translation in the
structured answer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.prompting.chat_expander import fewshot_translation
from app.prompting.fewshot import FewShot
from app.prompting.gemini_expander import GeminiExpander, gemini_schema
from app.prompting.llm_answers import (
    ANSWER_SCHEMA,
    MAX_TRANSLATION,
    clean_translation,
    parse_answer,
    parse_structured,
    to_expansions,
)
from app.prompting.llm_calls import ExpanderError, SamplingOptions
from app.prompting.llm_messages import system_prompt, user_message
from app.prompting.openai_expander import OpenAIExpander
from app.prompting.styles import StyleBook
from app.prompting.vocab import MAX_CONTENT_TOKENS, count_tokens, load_negative_presets
from tests.fakes import gemini_server, openai_server

OPENAI_KEY = "sk-test-SECRET-never-show-me"
GEMINI_KEY = "AIza-test-SECRET-never-show-me"
WISH = "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def book() -> StyleBook:
    return StyleBook.load()


@pytest.fixture(scope="module")
def fewshot() -> FewShot:
    return FewShot()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Any, Any]]:
    with openai_server.fake_openai() as oa, gemini_server.fake_gemini() as gm:
        yield oa, gm


@dataclass
class Backend:
    """One provider's expander, fake and scripting, so behaviour tests run for both."""

    name: str
    fake: Any
    fewshot: FewShot

    def expander(self, *, key: str | None = "default", timeout: float = 5.0, retries: int = 0):
        if self.name == "openai":
            return OpenAIExpander(api_key=OPENAI_KEY if key == "default" else key,
                                  base_url=f"{self.fake.base_url}/v1", model="gpt-4o-mini",
                                  timeout=timeout, retries=retries, fewshot=self.fewshot)
        return GeminiExpander(api_key=GEMINI_KEY if key == "default" else key,
                              base_url=self.fake.base_url, model="gemini-2.5-flash",
                              timeout=timeout, retries=retries, fewshot=self.fewshot,
                              backoff_s=0.0)

    def then(self, kind: str, **kw) -> None:
        module = openai_server if self.name == "openai" else gemini_server
        self.fake.then(module.Scripted(kind, **kw))

    def bodies(self) -> list[dict]:
        if self.name == "openai":
            return [r["body"] for r in self.fake.received]
        return [r.body for r in self.fake.received]

    @property
    def key(self) -> str:
        return OPENAI_KEY if self.name == "openai" else GEMINI_KEY


def fresh(name: str, servers, fewshot: FewShot) -> Backend:
    """The shared fake of ``name`` with nothing scripted and nothing received."""
    fake = servers[0] if name == "openai" else servers[1]
    fake.script.clear()
    fake.received.clear()
    return Backend(name, fake, fewshot)


@pytest.fixture(params=["openai", "gemini"])
def backend(request, servers, fewshot) -> Backend:
    return fresh(request.param, servers, fewshot)


@pytest.fixture
def oa(servers, fewshot) -> Backend:
    return fresh("openai", servers, fewshot)


@pytest.fixture
def gm(servers, fewshot) -> Backend:
    return fresh("gemini", servers, fewshot)


def expand(expander, style=None, count=3, seed=10, sampling=SamplingOptions(), idea=WISH):
    return expander.expand(idea, style=style, count=count, seed=seed, sampling=sampling)


# --------------------------------------------------------------------------- answers

def test_an_answer_becomes_expansions(backend, book):
    style = book.get("satellite-map")
    answer = expand(backend.expander(), style=style, count=3, seed=10)
    assert [e.seed for e in answer.expansions] == [10, 11, 12]
    assert answer.calls == 1 and answer.repaired is False and len(answer.raw) == 1
    assert json.loads(answer.raw[0])["prompts"][0]["title"].endswith("Idea 1")
    assert answer.model.endswith("-fake") and answer.usage["total_tokens"] > 0
    for i, exp in enumerate(answer.expansions):
        assert exp.provider == backend.name and exp.style == "satellite-map"
        assert exp.params == style.params and exp.truncated is False
        assert exp.prompt.startswith(f"{WISH}, aerial satellite photograph")
        assert f"variant {i + 1}" in exp.prompt
        assert count_tokens(exp.prompt) <= MAX_CONTENT_TOKENS
        assert exp.title.endswith(f"Idea {i + 1}") and WISH in exp.description
        assert 3 <= len(exp.metatags) <= 8 and len(set(exp.metatags)) == len(exp.metatags)
        assert all(t == t.strip().lower() and "#" not in t for t in exp.metatags)
        # the model's own negative terms first, the style's appended
        assert exp.negative_prompt.endswith("low quality")
        assert "perspective view" in exp.negative_prompt
    assert answer.expansions[1].negative_prompt.startswith("blurry, lowres, perspective view")


def test_openai_metatags_are_cleaned_and_an_empty_negative_gets_the_general_preset(oa):
    (exp,) = expand(oa.expander(), count=1).expansions
    # the fake sends ["Fake", "Variant 1", "fake", " #Test "] and an empty negative
    assert exp.metatags == ["fake", "variant 1", "test"] and exp.style is None
    assert exp.negative_prompt == load_negative_presets()["general"]
    assert exp.params == {}


def test_openai_request_carries_schema_sampling_seed_and_few_shot(oa, book):
    expand(oa.expander(), style=book.get("satellite-map"), count=2, seed=42,
           sampling=SamplingOptions(temperature=0.8, top_p=0.9, top_k=40, max_tokens=700))
    sent = oa.fake.received[0]
    body = sent["body"]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert body["model"] == "gpt-4o-mini" and body["seed"] == 42
    assert body["temperature"] == 0.8 and body["top_p"] == 0.9
    assert body["max_completion_tokens"] == 700
    assert "top_k" not in body and "max_tokens" not in body  # OpenAI chat has no top_k
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "prompt_expansions", "strict": True, "schema": ANSWER_SCHEMA}}
    messages = body["messages"]
    assert messages[0]["role"] == "system"
    assert "exactly 2 different prompt" in messages[0]["content"]
    assert book.get("satellite-map").template in messages[0]["content"]
    assert messages[-1] == {"role": "user",
                            "content": user_message(WISH, "satellite-map", 2)}
    shots = messages[1:-1]
    assert [m["role"] for m in shots] == ["user", "assistant"] * 3
    assert shots[0]["content"] == user_message("ein See mitten in Olpe", "satellite-map", 1)
    olpe = json.loads(shots[1]["content"])["prompts"][0]
    assert olpe["prompt"].startswith("a lake in the middle of Olpe")


def test_openai_unset_sampling_is_not_sent(oa):
    expand(oa.expander(), count=1)
    (body,) = oa.bodies()
    assert not {"temperature", "top_p", "max_completion_tokens", "top_k"} & set(body)
    assert body["seed"] == 10


def test_gemini_request_carries_schema_sampling_seed_and_few_shot(gm, book):
    answer = expand(gm.expander(), style=book.get("blender-render"), count=2, seed=7,
                    sampling=SamplingOptions(temperature=0.6, top_p=0.95, top_k=32, max_tokens=900))
    (sent,) = gm.fake.received
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    config = sent.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["temperature"] == 0.6 and config["topP"] == 0.95 and config["topK"] == 32
    assert config["maxOutputTokens"] == 900 and config["seed"] == 7
    assert config["candidateCount"] == 1
    schema = config["responseSchema"]
    prompts = schema["properties"]["prompts"]
    assert prompts["items"]["required"] == ANSWER_SCHEMA["properties"]["prompts"]["items"][
        "required"]
    assert "additionalProperties" not in json.dumps(schema)
    assert prompts.get("minItems", prompts.get("min_items")) == 2
    system = sent.body["systemInstruction"]["parts"][0]["text"]
    assert "English" in system and book.get("blender-render").template in system
    contents = sent.body["contents"]
    assert [c["role"] for c in contents] == ["user", "model"] * 3 + ["user"]
    assert contents[0]["parts"][0]["text"] == user_message("a cozy treehouse",
                                                           "blender-render", 1)
    assert contents[-1]["parts"][0]["text"] == user_message(WISH, "blender-render", 2)
    assert answer.usage == {"input_tokens": 150, "output_tokens": 90, "thoughts_tokens": 20,
                            "total_tokens": 260}
    assert answer.expansions[0].prompt.startswith(f"{WISH}, blender 3d render")


def test_a_long_prompt_is_fitted_to_75_clip_tokens_keeping_the_subject(backend):
    terms = ", ".join(f"ornate detail number {i}" for i in range(40))
    item = {"title": "Long", "description": "d", "metatags": ["a", "b", "c"],
            "prompt": f"{WISH}, {terms}", "negative_prompt": "blurry"}
    backend.then("text", text=json.dumps({"prompts": [item]}))
    (exp,) = expand(backend.expander(), count=1).expansions
    assert exp.truncated is True and exp.prompt.startswith(f"{WISH}, ornate detail number 0")
    assert count_tokens(exp.prompt) <= MAX_CONTENT_TOKENS
    assert not exp.prompt.endswith(",")


# --------------------------------------------------------------------------- repair and retry

def test_repairable_json_is_repaired_without_another_call(backend):
    backend.then("repairable")
    answer = expand(backend.expander(), count=3)
    assert answer.repaired is True and answer.calls == 1 and len(backend.bodies()) == 1
    assert answer.raw[0].startswith("```json") and len(answer.expansions) == 3


def test_malformed_then_ok_asks_once_more_with_a_correction(backend):
    backend.then("malformed")
    answer = expand(backend.expander(), count=2)
    assert answer.calls == 2 and len(answer.raw) == 2 and len(answer.expansions) == 2
    first, second = backend.bodies()
    if backend.name == "openai":
        turns = [(m["role"], m["content"]) for m in second["messages"]]
        base = len(first["messages"])
    else:
        turns = [(c["role"], c["parts"][0]["text"]) for c in second["contents"]]
        base = len(first["contents"])
    assert len(turns) == base + 2
    assert turns[-2] == (turns[-2][0], answer.raw[0]) and turns[-2][0] in ("assistant", "model")
    assert turns[-1][0] == "user"
    assert turns[-1][1].startswith("Your last answer was not valid JSON for the schema: ")
    assert turns[-1][1].endswith("Answer again with JSON only.")


def test_malformed_twice_is_a_malformed_error(backend):
    backend.then("malformed")
    backend.then("malformed")
    with pytest.raises(ExpanderError) as caught:
        expand(backend.expander(retries=2), count=3)
    err = caught.value
    assert err.kind == "malformed" and err.attempts == 2 and len(err.raw) == 2
    assert len(backend.bodies()) == 2


def test_too_few_items_is_malformed(backend):
    backend.then("ok", count=1)
    backend.then("ok", count=2)
    with pytest.raises(ExpanderError) as caught:
        expand(backend.expander(), count=3)
    assert caught.value.kind == "malformed" and "3" in caught.value.reason
    assert caught.value.attempts == 2


# --------------------------------------------------------------------------- failures

def test_openai_refusal_is_refused_and_not_retried(oa):
    oa.then("refusal", message="I can't help with that request.")
    with pytest.raises(ExpanderError) as caught:
        expand(oa.expander(retries=2))
    assert caught.value.kind == "refused" and "can't help" in caught.value.reason
    assert caught.value.attempts == 1 and len(oa.bodies()) == 1


@pytest.mark.parametrize("kind, reason", [("blocked", "PROHIBITED_CONTENT"),
                                          ("empty", "SAFETY")])
def test_gemini_safety_blocks_are_refused(gm, kind, reason):
    gm.then(kind, reason=reason)
    with pytest.raises(ExpanderError) as caught:
        expand(gm.expander(retries=2))
    assert caught.value.kind == "refused" and reason in caught.value.reason
    assert len(gm.bodies()) == 1


def test_server_errors_are_retried_a_bounded_number_of_times(backend):
    for _ in range(4):
        backend.then("error", status=500, message=f"internal {backend.key}")
    start = time.monotonic()
    with pytest.raises(ExpanderError) as caught:
        expand(backend.expander(retries=1))
    err = caught.value
    assert err.kind == "unavailable" and "500" in err.reason and err.attempts == 1
    assert len(backend.bodies()) == 2  # 1 + retries, by the SDK
    assert backend.key not in err.reason and backend.key not in str(err)
    assert time.monotonic() - start < 5


def test_a_server_error_then_success_is_retried_by_the_sdk(backend):
    backend.then("error", status=503, message="overloaded")
    answer = expand(backend.expander(retries=1), count=1)
    assert len(backend.bodies()) == 2 and answer.calls == 1


def test_auth_errors_are_unavailable_at_once_without_the_key(backend):
    backend.then("error", status=401, message=f"Incorrect API key provided: {backend.key}")
    with pytest.raises(ExpanderError) as caught:
        expand(backend.expander(retries=2))
    assert caught.value.kind == "unavailable" and "401" in caught.value.reason
    assert backend.key not in caught.value.reason and len(backend.bodies()) == 1


def test_a_hanging_server_times_out_quickly(backend):
    # "timed out" is the client's own timeout: the server would only answer after 3 s
    # (no wall-clock bound here: these machines are shared and noisy)
    backend.then("hang", seconds=3)
    with pytest.raises(ExpanderError) as caught:
        expand(backend.expander(timeout=0.3, retries=0))
    assert caught.value.kind == "unavailable" and "timed out" in caught.value.reason


def test_without_a_key_nothing_is_called(backend):
    expander = backend.expander(key=None)
    usable, reason = expander.available()
    env = "OPENAI_API_KEY" if backend.name == "openai" else "GEMINI_API_KEY"
    assert usable is False and reason == f"{env} is not set"
    with pytest.raises(ExpanderError) as caught:
        expand(expander)
    assert caught.value.kind == "unavailable" and caught.value.attempts == 0
    assert backend.bodies() == []
    assert backend.key not in repr(backend.expander())
    assert backend.expander().available() == (True, None)


# --------------------------------------------------------------------------- parsing

ITEM = {"title": "T", "description": "D", "metatags": ["x"], "prompt": "a cat",
        "negative_prompt": ""}


@pytest.mark.parametrize("text, repaired", [
    (json.dumps({"prompts": [ITEM, ITEM]}), False),
    (json.dumps([ITEM, ITEM]), False),
    ("```json\n" + json.dumps({"prompts": [ITEM, ITEM]}) + "\n```", True),
    ("Here you are:\n```\n" + json.dumps([ITEM, ITEM]) + "\n```\nEnjoy!", True),
    (json.dumps({"prompts": [ITEM, ITEM, {**ITEM, "extra": 1}]})[:-3] + ",]}", True),
])
def test_parse_answer_accepts_the_usual_shapes(text, repaired):
    items, was_repaired = parse_answer(text, 2)
    assert items == [ITEM, ITEM] and was_repaired is repaired


@pytest.mark.parametrize("text", [
    "",
    "I cannot help with that.",
    json.dumps({"prompts": [ITEM]}),  # fewer than asked for
    json.dumps({"prompts": [ITEM, {**ITEM, "prompt": "  "}]}),  # empty prompt
    json.dumps({"prompts": [ITEM, {**ITEM, "prompt": " , ,"}]}),  # no terms
    json.dumps({"prompts": [ITEM, {**ITEM, "metatags": "a, b"}]}),  # wrong type
    json.dumps({"prompts": [ITEM, {**ITEM, "title": 3}]}),  # no coercion
    json.dumps({"prompts": [ITEM, {k: v for k, v in ITEM.items() if k != "prompt"}]}),
])
def test_parse_answer_rejects_malformed_answers(text):
    with pytest.raises(ExpanderError) as caught:
        parse_answer(text, 2)
    assert caught.value.kind == "malformed"


def test_a_single_object_is_one_item():
    assert parse_answer(json.dumps(ITEM), 1) == ([ITEM], False)


def test_metatags_are_capped_and_padded(book):
    many = {**ITEM, "metatags": [f"Tag {i}" for i in range(12)] + ["TAG 0"]}
    few = {**ITEM, "metatags": ["  ", "#Cat"]}
    wide, narrow = to_expansions([many, few], idea="a cat with a lighthouse",
                                 style=book.get("watercolor"), seed=0, provider="openai")
    assert wide.metatags == [f"tag {i}" for i in range(8)]
    assert narrow.metatags == ["cat", "watercolor", "lighthouse"]
    assert narrow.negative_prompt == book.get("watercolor").negative_prompt


# --------------------------------------------------------------------------- few-shot

def test_bad_fewshot_lines_are_skipped_with_a_warning(tmp_path, caplog):
    good = {"idea": "a cat", "style": None, "answer": ITEM}
    (tmp_path / "a.jsonl").write_text("\n".join([
        json.dumps(good),
        "{not json",
        json.dumps({"idea": "a dog", "style": None}),
        json.dumps({"idea": "a dog", "answer": {**ITEM, "metatags": "x"}}),
        "",
        json.dumps({**good, "idea": "a map", "style": "satellite-map"}),
    ]), encoding="utf-8")
    (tmp_path / "ignored.txt").write_text("nonsense", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bildwerk.prompting.llm"):
        shots = FewShot(tmp_path)
    assert [e.source for e in shots.examples] == ["a.jsonl:1", "a.jsonl:6"]
    for line in (2, 3, 4):
        assert f"a.jsonl:{line}" in caplog.text
    assert [e.idea for e in shots.pick("satellite-map")] == ["a map", "a cat"]
    assert [e.idea for e in shots.pick(None, 1)] == ["a cat"]
    assert FewShot(tmp_path / "missing").examples == []


def test_the_shipped_fewshot_files_are_valid(book, fewshot):
    lines = sum(len([ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()])
                for p in fewshot.folder.glob("*.jsonl"))
    assert len(fewshot.examples) == lines >= 9
    assert {e.style for e in fewshot.examples} == {None, "satellite-map", "blender-render"}
    for example in fewshot.examples:
        assert example.style is None or example.style in book
        assert count_tokens(example.answer["prompt"]) <= MAX_CONTENT_TOKENS
        assert 3 <= len(example.answer["metatags"]) <= 8
    olpe = next(e for e in fewshot.examples if e.idea == "ein See mitten in Olpe")
    assert olpe.style == "satellite-map"
    assert olpe.answer["prompt"].startswith("a lake in the middle of Olpe")
    assert [e.style for e in fewshot.pick("blender-render")] == ["blender-render"] * 3
    assert [e.style for e in fewshot.pick("watercolor")] == [None] * 3


def test_system_prompt_states_the_rules_and_the_style(book):
    plain = system_prompt(None, 4)
    assert "exactly 4" in plain and "English" in plain and "60 words" in plain
    assert "3 to 8 lowercase" in plain and "Style" not in plain
    styled = system_prompt(book.get("watercolor"), 1)
    assert book.get("watercolor").template in styled
    assert book.get("watercolor").negative_prompt in styled


# --------------------------------------------------------------------------- translation

GERMAN_WISH = "Hier soll ein Windpark entstehen"


def answer_with(translation, tags=("wind farm",), count: int = 1) -> str:
    return json.dumps({"translation": translation, "prompts": [{
        "title": "Wind Farm", "description": "A wind farm on green hills.",
        "metatags": list(tags), "prompt": f"a wind farm on green hills, variant {i}",
        "negative_prompt": "blurry"} for i in range(count)]})


def test_the_schema_asks_for_the_translation_first():
    assert list(ANSWER_SCHEMA["properties"]) == ["translation", "prompts"]
    assert ANSWER_SCHEMA["required"] == ["translation", "prompts"]  # OpenAI strict mode
    assert ANSWER_SCHEMA["properties"]["translation"]["type"] == "string"
    gemini = gemini_schema(2)
    assert gemini["propertyOrdering"] == ["translation", "prompts"]
    assert "translation" in system_prompt(None, 1)


def test_the_wish_is_sent_as_typed_and_its_translation_comes_back(backend):
    backend.then("text", text=answer_with("A wind farm should be built here", tags=()))
    answer = expand(backend.expander(), count=1, idea=GERMAN_WISH)
    assert answer.translation == "A wind farm should be built here"
    (body,) = backend.bodies()
    last = body["messages"][-1]["content"] if backend.name == "openai" else \
        body["contents"][-1]["parts"][0]["text"]
    assert last == user_message(GERMAN_WISH, None, 1)
    # metatags are padded from the English translation, not from the German wish
    (exp,) = answer.expansions
    assert exp.metatags[:2] == ["wind", "farm"] and "windpark" not in exp.metatags


def test_an_answer_without_a_translation_still_expands(backend):
    answer = expand(backend.expander(), count=2, idea=GERMAN_WISH)  # the fakes send none
    assert answer.translation is None and len(answer.expansions) == 2


def test_a_malformed_answer_is_retried_and_the_second_translation_counts(backend):
    backend.then("malformed")
    backend.then("text", text=answer_with("a wind farm here"))
    answer = expand(backend.expander(), count=1, idea=GERMAN_WISH)
    assert answer.calls == 2 and answer.translation == "a wind farm here"


def test_few_shot_answers_carry_their_translation(oa, gm, book):
    expand(oa.expander(), style=book.get("satellite-map"), count=1)
    shots = oa.fake.received[0]["body"]["messages"][1:-1]
    olpe = json.loads(shots[1]["content"])
    assert olpe["translation"] == "a lake in the middle of Olpe"
    assert list(olpe) == ["translation", "prompts"]
    expand(gm.expander(), style=book.get("blender-render"), count=1)
    contents = gm.fake.received[0].body["contents"]
    first = json.loads(contents[1]["parts"][0]["text"])
    assert first["translation"] == "a cozy treehouse"  # English: the idea itself
    boat = json.loads(contents[5]["parts"][0]["text"])
    assert boat["translation"] == "a small sailboat on calm water"


def test_fewshot_translation_falls_back_to_the_answer_subject(tmp_path):
    lines = [
        {"idea": "eine Burg auf dem Berg", "style": None,
         "answer": {**ITEM, "prompt": "a castle on a mountain, dramatic light"}},
        {"idea": "ein Dorf am See", "style": None, "translation": "a village by the lake",
         "answer": ITEM},
        {"idea": "a cat on a roof", "style": None, "answer": ITEM},
    ]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(x) for x in lines),
                                      encoding="utf-8")
    shots = FewShot(tmp_path)
    assert [fewshot_translation(shots.folder, e) for e in shots.examples] == [
        "a castle on a mountain", "a village by the lake", "a cat on a roof"]


@pytest.mark.parametrize("value, expected", [
    ("a wind farm here", "a wind farm here"),
    ("  a   wind farm\nhere ", "a wind farm here"),
    ('"a wind farm here"', "a wind farm here"),
    ("„a wind farm here“", "a wind farm here"),
    ("", None), ("   ", None), ('""', None), ("1234", None), (None, None), (3, None),
    (["a wind farm"], None), ("x" * (MAX_TRANSLATION + 1), None),
])
def test_clean_translation(value, expected):
    assert clean_translation(value) == expected


def test_parse_structured_keeps_the_translation_beside_the_items():
    text = json.dumps({"translation": " more green spaces ", "prompts": [ITEM, ITEM]})
    parsed = parse_structured(text, 2)
    assert parsed.items == [ITEM, ITEM] and parsed.repaired is False
    assert parsed.translation == "more green spaces"
    fenced = "```json\n" + json.dumps({"translation": "a lake", "prompts": [ITEM]}) + "\n```"
    assert parse_structured(fenced, 1).translation == "a lake"
    assert parse_structured(json.dumps([ITEM]), 1).translation is None  # a bare list
    assert parse_structured(json.dumps({"prompts": [ITEM]}), 1).translation is None
    with pytest.raises(ExpanderError):  # a translation alone is no answer
        parse_structured(json.dumps({"translation": "a lake", "prompts": []}), 1)
