"""Shared helpers for prompt building: data files, CLIP token counting and trimming.

Stable Diffusion's text encoder sees 77 tokens: a start token, an end token and 75 content
tokens. Everything here counts content tokens with the real CLIP tokenizer shipped with the
SD 1.5 single-file configs, so "fits" means exactly what the pipeline will see.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
TOKENIZER_DIR = (
    Path(__file__).resolve().parent.parent / "pipelines" / "single_file" / "configs" / "sd15"
    / "tokenizer"
)
MAX_CONTENT_TOKENS = 75
SEPARATOR = ", "


def load_json(name: str | Path) -> Any:
    """Load a JSON file from ``data/`` (a bare name) or from an explicit path."""
    path = Path(name)
    if not path.is_absolute() and path.parent == Path("."):
        path = DATA_DIR / path
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=1)
def clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


def count_tokens(text: str) -> int:
    """Number of CLIP content tokens (start/end tokens not counted)."""
    if not text:
        return 0
    return len(clip_tokenizer().tokenize(text))


def fits(text: str, limit: int = MAX_CONTENT_TOKENS) -> bool:
    return count_tokens(text) <= limit


def truncate_to_tokens(text: str, limit: int = MAX_CONTENT_TOKENS) -> tuple[str, bool]:
    """Cut ``text`` at a word boundary so it fits ``limit`` tokens. Returns (text, truncated)."""
    text = " ".join(text.split())
    if count_tokens(text) <= limit:
        return text, False
    words = text.split(" ")
    lo, hi = 0, len(words)  # invariant: words[:lo] fits, words[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid
    if lo > 0:
        return " ".join(words[:lo]).rstrip(" ,;:-"), True
    # A single enormous "word": cut by characters as a last resort.
    word = words[0]
    lo, hi = 0, len(word)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_tokens(word[:mid]) <= limit:
            lo = mid
        else:
            hi = mid
    return word[:lo], True


def join_terms(terms: list[str]) -> str:
    return SEPARATOR.join(t for t in terms if t)


def fit_terms(
    head: str, extras: list[str], limit: int = MAX_CONTENT_TOKENS, *, tail: str = ""
) -> tuple[str, list[str], bool]:
    """Build ``head, extra1, extra2, ...[, tail]`` within ``limit`` tokens.

    ``extras`` are ordered most important first; the least important (last) are dropped
    until the prompt fits. ``head`` (the user's text) is never reordered; if it alone is
    too long it is truncated at a word boundary. ``tail`` (rarely used) is kept if possible.
    Returns (prompt, kept_extras, head_truncated).
    """
    head, truncated = truncate_to_tokens(head, limit)
    kept = [e for e in extras if e]
    while True:
        parts = [head, *kept]
        if tail:
            parts.append(tail)
        text = join_terms(parts)
        if count_tokens(text) <= limit:
            return text, kept, truncated
        if kept:
            kept.pop()
        elif tail:
            tail = ""
        else:  # cannot happen: head fits on its own
            return head, kept, truncated


def split_terms(text: str) -> list[str]:
    """Split a comma separated prompt into stripped, non-empty terms."""
    return [t.strip() for t in text.split(",") if t.strip()]


def merge_terms(*groups: list[str]) -> list[str]:
    """Concatenate term lists, dropping case-insensitive duplicates (first wins)."""
    seen: set[str] = set()
    out: list[str] = []
    for group in groups:
        for term in group:
            key = term.lower()
            if key not in seen:
                seen.add(key)
                out.append(term)
    return out


def fit_negative(text: str, limit: int = MAX_CONTENT_TOKENS) -> str:
    """Trim a comma separated negative prompt from the end until it fits."""
    terms = split_terms(text)
    while terms and count_tokens(join_terms(terms)) > limit:
        terms.pop()
    if not terms and text.strip():
        return truncate_to_tokens(text, limit)[0]
    return join_terms(terms)


@lru_cache(maxsize=4)
def load_vocabularies(path: str | None = None) -> dict[str, Any]:
    return load_json(path or "vocabularies.json")


@lru_cache(maxsize=4)
def load_negative_presets(path: str | None = None) -> dict[str, str]:
    return load_json(path or "negative_presets.json")
