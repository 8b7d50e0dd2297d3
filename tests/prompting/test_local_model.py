"""The optional local prompt model: a tiny random GPT-2 on disk continues prompts offline."""

from __future__ import annotations

import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from app.prompting.local_expander import expand_locally
from app.prompting.local_model import MAX_TERM_WORDS, MAX_TERMS, LocalPromptModel, clean_terms
from app.prompting.styles import StyleBook
from app.prompting.vocab import MAX_CONTENT_TOKENS, count_tokens
from tests.utils.tiny_lm import build_tiny_lm

IDEA = "a lake in the middle of Olpe"


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("prompt-lm") / "tiny-magicprompt")


@pytest.fixture(scope="module")
def model(lm_dir: Path) -> LocalPromptModel:
    m = LocalPromptModel.from_dir(lm_dir)
    assert m is not None
    return m


@pytest.fixture(scope="module")
def book() -> StyleBook:
    return StyleBook.load()


def _cont(m: LocalPromptModel, text: str, seed: int, **kw) -> list[str]:
    kw = {"temperature": None, "top_p": None, "top_k": None, "max_new_tokens": None, **kw}
    return m.continue_prompt(text, seed=seed, **kw)


def _assert_clean(terms: list[str], text: str) -> None:
    assert len(terms) <= MAX_TERMS
    assert len({t.lower() for t in terms}) == len(terms)
    for t in terms:
        assert t == t.strip() and t
        assert t.isascii() and t.isprintable()
        assert re.search(r"[A-Za-z]", t)
        assert not re.search(r"https?:|www\.|<\||\|>|[★,]", t)
        assert len(t.split()) <= MAX_TERM_WORDS
        assert not re.search(rf"(?<!\w){re.escape(t.lower())}(?!\w)", text.lower())


# ---------------------------------------------------------------------------- term cleaning


def test_clean_terms_filters_noise():
    raw = (
        " highly detailed, <|endoftext|>, see https://example.com/a.png, 日本語の風景,"
        " golden hour, Golden Hour, a lake, (masterpiece:1.2), ★ octane render,"
        " and, of the, one two three four five six seven eight nine, zero\u200bwidth,"
        " trending on artstation ; 8k | portrait of\nsecond prompt, ignored"
    )
    assert clean_terms(raw, "a lake in the middle of Olpe") == [
        "highly detailed", "golden hour", "masterpiece", "octane render", "zero width",
        "trending on artstation", "8k", "portrait",
    ]


def test_clean_terms_limit_and_context_words():
    raw = ", ".join(f"term{i}" for i in range(30))
    assert clean_terms(raw, "") == [f"term{i}" for i in range(MAX_TERMS)]
    # Whole-word match against the context: "cat" is said, "category art" is not.
    assert clean_terms("cat, category art, castle castle golden", "a cat") == [
        "category art", "castle golden",
    ]


# ------------------------------------------------------------------------------ the model


def test_continuation_deterministic_per_seed(model):
    for seed in (0, 3, 2**40 + 7):
        assert _cont(model, IDEA, seed) == _cont(model, IDEA, seed)
    outputs = {tuple(_cont(model, IDEA, s)) for s in range(6)}
    assert len(outputs) >= 4


def test_continuation_terms_are_new_and_clean(model):
    produced = 0
    for seed in range(12):
        terms = _cont(model, IDEA, seed)
        _assert_clean(terms, IDEA)
        produced += bool(terms)
    assert produced >= 8  # random weights, but most seeds give something usable


def test_continuation_leaves_global_rng_alone(model):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    _cont(model, IDEA, 5)
    assert torch.equal(torch.rand(3), expected)


def test_sampling_settings(model):
    # temperature 0: greedy, so the seed no longer matters.
    assert _cont(model, IDEA, 1, temperature=0) == _cont(model, IDEA, 2, temperature=0)
    short = [_cont(model, IDEA, s, max_new_tokens=3) for s in range(6)]
    long = [_cont(model, IDEA, s, max_new_tokens=40) for s in range(6)]
    assert all(len(t) <= 3 for t in short)  # a term needs at least one token
    assert sum(map(len, short)) < sum(map(len, long))
    assert _cont(model, IDEA, 4, top_k=1) == _cont(model, IDEA, 9, top_k=1)


def test_continuation_thread_safe(model):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _cont(model, IDEA, 11), range(8)))
    assert all(r == results[0] for r in results)


# --------------------------------------------------------------------- with the expander


def test_expand_with_model(model, book, lm_dir):
    plain = expand_locally(IDEA, count=3, seed=0, styles=book)
    with_model = expand_locally(IDEA, count=3, seed=0, styles=book, model=model)
    assert with_model == expand_locally(IDEA, count=3, seed=0, styles=book, model=model)
    assert [e.prompt for e in with_model] != [e.prompt for e in plain]
    for i, e in enumerate(with_model):
        assert e.prompt.startswith(IDEA + ", ")
        assert e.provider == "local"
        assert e.params == {"local_model": lm_dir.name}
        assert count_tokens(e.prompt) <= MAX_CONTENT_TOKENS
        terms = _cont(model, IDEA, i)
        if terms:  # the model's terms come first, right after the idea
            assert e.prompt.startswith(f"{IDEA}, {terms[0]}")
    for e in plain:
        assert "local_model" not in e.params


def test_expand_with_model_and_style(model, book, lm_dir):
    preset = book.get("watercolor")
    for e in expand_locally("a cat", style="watercolor", count=3, seed=5, styles=book,
                            model=model, temperature=1.2, top_p=0.9, top_k=20, max_tokens=24):
        assert e.prompt.startswith("a cat, " + preset.terms()[0])
        assert e.params == {**preset.params, "local_model": lm_dir.name}
        assert count_tokens(e.prompt) <= MAX_CONTENT_TOKENS


def test_failing_model_falls_back_to_vocabulary(model, book, monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(model, "continue_prompt", boom)
    with caplog.at_level(logging.WARNING):
        got = expand_locally(IDEA, style="photo", count=2, seed=3, styles=book, model=model)
    assert got == expand_locally(IDEA, style="photo", count=2, seed=3, styles=book)
    assert "model exploded" in caplog.text


def test_unloadable_model_falls_back(tmp_path, lm_dir, book):
    broken = tmp_path / "broken-lm"
    shutil.copytree(lm_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    m = LocalPromptModel.from_dir(broken)  # looks right on disk: fails on first use only
    with pytest.raises(RuntimeError, match="cannot load prompt model"):
        _cont(m, IDEA, 0)
    assert m.status()["loaded"] is False and "cannot load" in m.status()["error"]
    got = expand_locally("a cat", count=2, seed=1, styles=book, model=m)
    assert got == expand_locally("a cat", count=2, seed=1, styles=book)


# ----------------------------------------------------------------------- configuration


def test_from_dir_validation(tmp_path, lm_dir):
    assert LocalPromptModel.from_dir(None) is None
    with pytest.raises(ValueError, match="does not exist"):
        LocalPromptModel.from_dir(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="config.json"):
        LocalPromptModel.from_dir(empty)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(lm_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ValueError, match="no weights"):
        LocalPromptModel.from_dir(no_weights)


def test_loads_lazily_offline_with_local_files_only(lm_dir, monkeypatch):
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen: list[dict] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)

    m = LocalPromptModel(lm_dir)
    assert m.status() == {
        "path": str(lm_dir), "name": lm_dir.name, "loaded": False, "parameters": None,
        "max_new_tokens": 48, "error": None,
    }
    assert not seen  # nothing loads before first use
    _cont(m, IDEA, 0)
    _cont(m, IDEA, 1)
    assert len(seen) == 2 and all(kw.get("local_files_only") is True for kw in seen)
    status = m.status()
    assert status["loaded"] is True and status["parameters"] > 0
