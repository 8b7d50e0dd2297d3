"""Style presets: loading, listing, applying within the CLIP window, rejecting unknowns."""

from __future__ import annotations

import json

import pytest

from app.errors import InvalidInput
from app.prompting.styles import StyleBook
from app.prompting.vocab import DATA_DIR, MAX_CONTENT_TOKENS, count_tokens

REQUIRED = {"satellite-map", "photo", "watercolor", "blender-render", "isometric",
            "medieval-map", "cinematic"}
LONG = " ".join(["an enormous castle on a hill above a foggy river valley"] * 10)


@pytest.fixture(scope="module")
def book() -> StyleBook:
    return StyleBook.load()


def test_lists_presets(book):
    names = book.names()
    assert REQUIRED <= set(names)
    assert 8 <= len(names) <= 12
    assert len(set(names)) == len(names)


def test_preset_fields(book):
    for name in book.names():
        p = book.get(name)
        assert p.name == name and p.description
        assert p.template.startswith("{prompt}")
        assert p.negative_prompt
        assert isinstance(p.steps, int) and isinstance(p.guidance_scale, float)


def test_apply_satellite(book):
    prompt, negative = book.apply("a lake in the middle of Olpe", None, "satellite-map")
    assert prompt.startswith("a lake in the middle of Olpe, aerial satellite photograph")
    assert "top-down" in prompt
    assert negative == book.get("satellite-map").negative_prompt


def test_apply_keeps_user_negative_first_and_dedupes(book):
    _, negative = book.apply("a cat", "ugly, Blurry", "photo")
    terms = [t.strip() for t in negative.split(",")]
    assert terms[:2] == ["ugly", "Blurry"]
    assert "blurry" not in terms  # case-insensitive duplicate of the user's term


@pytest.mark.parametrize("text", ["a lake", LONG])
def test_apply_fits_every_style(book, text):
    long_negative = ", ".join(f"bad thing {i}" for i in range(60))
    for name in book.names():
        prompt, negative = book.apply(text, long_negative, name)
        assert count_tokens(prompt) <= MAX_CONTENT_TOKENS
        assert count_tokens(negative) <= MAX_CONTENT_TOKENS
        assert prompt.startswith(text[:40])


def test_render_drops_style_terms_from_the_end(book):
    preset = book.get("satellite-map")
    idea = " ".join(["tiny village"] * 33)  # leaves little room for the style terms
    prompt = preset.render(idea)
    assert prompt.startswith(idea)
    assert count_tokens(prompt) <= MAX_CONTENT_TOKENS
    kept = prompt[len(idea):].strip(", ").split(", ") if prompt != idea else []
    assert kept == preset.terms()[: len(kept)]
    assert len(kept) < len(preset.terms())


def test_unknown_style_rejected(book):
    with pytest.raises(InvalidInput) as exc:
        book.get("vaporwave")
    assert exc.value.param == "style"
    assert "satellite-map" in exc.value.message
    with pytest.raises(InvalidInput) as exc:
        book.apply("a cat", None, "vaporwave")
    assert exc.value.param == "style"


def test_custom_prefix_template(tmp_path):
    (tmp_path / "styles.json").write_text(json.dumps({"styles": [{
        "name": "x", "description": "d", "template": "old map, drawing of {prompt}, sepia",
        "negative_preset": "general", "negative_prompt": "neon",
    }]}))
    (tmp_path / "negative_presets.json").write_text(json.dumps({"general": "blurry, text"}))
    book = StyleBook.load(tmp_path / "styles.json")
    prompt, negative = book.apply("a fox", None, "x")
    assert prompt == "old map, drawing of a fox, sepia"
    assert negative == "neon, blurry, text"


def test_styles_json_shape():
    data = json.loads((DATA_DIR / "styles.json").read_text(encoding="utf-8"))
    presets = json.loads((DATA_DIR / "negative_presets.json").read_text(encoding="utf-8"))
    for entry in data["styles"]:
        assert {"name", "description", "template", "negative_preset", "params"} <= set(entry)
        assert "{prompt}" in entry["template"]
        assert entry["negative_preset"] in presets
        assert {"steps", "guidance_scale"} <= set(entry["params"])
