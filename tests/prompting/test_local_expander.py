"""Offline prompt expansion: determinism, variety, CLIP budget, negatives, metadata."""

from __future__ import annotations

import json
import re

import pytest

from app.errors import InvalidInput
from app.prompting.local_expander import Expansion, expand_locally, main
from app.prompting.styles import StyleBook
from app.prompting.vocab import (
    DATA_DIR,
    MAX_CONTENT_TOKENS,
    count_tokens,
    fit_terms,
    load_negative_presets,
    truncate_to_tokens,
)

LONG_IDEA = " ".join(
    ["a sprawling medieval market town with crooked timber houses and a river"] * 8
)
IDEAS = ["a lake in the middle of Olpe", "a lighthouse on a cliff, blender render", "a cat"]


@pytest.fixture(scope="module")
def book() -> StyleBook:
    return StyleBook.load()


def test_deterministic_per_seed(book):
    for idea in IDEAS:
        a = expand_locally(idea, style=None, count=4, seed=7, styles=book)
        b = expand_locally(idea, style=None, count=4, seed=7, styles=book)
        assert a == b
        c = expand_locally(idea, style="satellite-map", count=3, seed=7, styles=book)
        assert c == expand_locally(idea, style="satellite-map", count=3, seed=7, styles=book)


def test_expansion_i_uses_seed_plus_i(book):
    many = expand_locally("a lake", style=None, count=4, seed=10, styles=book)
    assert [e.seed for e in many] == [10, 11, 12, 13]
    single = expand_locally("a lake", style=None, count=1, seed=12, styles=book)
    assert single[0] == many[2]


@pytest.mark.parametrize("style", [None, "satellite-map", "blender-render", "watercolor"])
def test_varied_across_seeds(book, style):
    prompts = {
        expand_locally("a lake in the middle of Olpe", style=style, count=1, seed=s,
                       styles=book)[0].prompt
        for s in range(5)
    }
    assert len(prompts) >= 4


def test_idea_first_and_intact(book):
    for idea in IDEAS:
        for style in [None, *book.names()]:
            for e in expand_locally(idea, style=style, count=3, seed=1, styles=book):
                assert e.prompt.startswith(idea)
                assert e.provider == "local"
                assert not e.truncated


def test_every_prompt_fits_clip_window(book):
    for idea in [*IDEAS, LONG_IDEA]:
        for style in [None, *book.names()]:
            for e in expand_locally(idea, style=style, count=3, seed=3, styles=book):
                assert count_tokens(e.prompt) <= MAX_CONTENT_TOKENS
                assert count_tokens(e.negative_prompt) <= MAX_CONTENT_TOKENS


def test_long_idea_truncated_at_word_boundary(book):
    assert count_tokens(LONG_IDEA) > MAX_CONTENT_TOKENS
    (e,) = expand_locally(LONG_IDEA, style="photo", count=1, seed=0, styles=book)
    assert e.truncated
    assert "shortened" in e.description
    head = e.prompt.split(",")[0]
    assert LONG_IDEA.startswith(head)
    assert LONG_IDEA[len(head)] == " "  # cut between words
    assert count_tokens(e.prompt) <= MAX_CONTENT_TOKENS


def test_terms_dropped_least_important_first():
    idea = "a small house"
    extras = [f"term number {i}" for i in range(40)]
    prompt, kept, truncated = fit_terms(idea, extras)
    assert not truncated
    assert kept == extras[: len(kept)] and 0 < len(kept) < len(extras)
    assert count_tokens(prompt) <= MAX_CONTENT_TOKENS


def test_truncate_single_huge_word():
    text, truncated = truncate_to_tokens("x" * 2000)
    assert truncated and count_tokens(text) <= MAX_CONTENT_TOKENS


def test_negative_presets_applied(book):
    presets = load_negative_presets()
    (styled,) = expand_locally("a lake", style="satellite-map", count=1, seed=0, styles=book)
    assert styled.negative_prompt == book.get("satellite-map").negative_prompt
    assert "labels" in styled.negative_prompt
    (mapped,) = expand_locally("aerial view of Olpe", style=None, count=1, seed=0, styles=book)
    assert mapped.negative_prompt == presets["map"]
    (render,) = expand_locally("a robot, blender", style=None, count=1, seed=0, styles=book)
    assert render.negative_prompt == presets["render"]
    for e in expand_locally("a cat", style=None, count=5, seed=0, styles=book):
        assert e.negative_prompt in (presets["general"], presets["photo"])


def test_titles_descriptions_and_tags_well_formed(book):
    for idea in [*IDEAS, LONG_IDEA]:
        for style in [None, "satellite-map", "cinematic"]:
            for e in expand_locally(idea, style=style, count=3, seed=2, styles=book):
                assert isinstance(e, Expansion)
                assert 0 < len(e.title) <= 60 and "\n" not in e.title
                assert e.description.endswith(".") and e.description.count(". ") == 0
                assert 3 <= len(e.metatags) <= 8
                assert len(set(e.metatags)) == len(e.metatags)
                for tag in e.metatags:
                    assert tag == tag.lower().strip() and tag
                    assert re.fullmatch(r"[\w -]+", tag)


def test_style_params_carried(book):
    (e,) = expand_locally("a lake", style="satellite-map", count=1, seed=0, styles=book)
    assert e.params == {"steps": 30, "guidance_scale": 7.0}
    assert e.style == "satellite-map"


def test_invalid_inputs(book):
    with pytest.raises(InvalidInput) as exc:
        expand_locally("a lake", style="nope", count=1, seed=0, styles=book)
    assert exc.value.param == "style"
    with pytest.raises(InvalidInput) as exc:
        expand_locally("a lake", style=None, count=0, seed=0, styles=book)
    assert exc.value.param == "count"
    with pytest.raises(InvalidInput):
        expand_locally("   ", style=None, count=1, seed=0, styles=book)


def test_vocabularies_json_shape():
    data = json.loads((DATA_DIR / "vocabularies.json").read_text(encoding="utf-8"))
    order = data["category_order"]
    for cat in ("elements", "environments", "media", "lighting", "composition", "detail"):
        assert cat in order
    assert {"general", "map", "render"} <= set(data["packs"])
    for name, pack in data["packs"].items():
        for cat in order:
            assert isinstance(pack.get(cat, []), list), (name, cat)
        if name != "general":
            assert pack["keywords"]
    assert data["packs"]["map"]["eras"]


def test_negative_presets_json_shape():
    data = json.loads((DATA_DIR / "negative_presets.json").read_text(encoding="utf-8"))
    assert {"general", "photo", "map", "render"} <= set(data)
    for text in data.values():
        assert isinstance(text, str) and count_tokens(text) <= MAX_CONTENT_TOKENS


def test_cli_prints_json_lines(capsys):
    assert main(["a lake in the middle of Olpe", "--count", "3", "--seed", "1",
                 "--style", "satellite-map"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    rows = [json.loads(line) for line in lines]
    assert [r["seed"] for r in rows] == [1, 2, 3]
    assert all(r["provider"] == "local" for r in rows)
    assert main(["x", "--style", "nope"]) == 2
