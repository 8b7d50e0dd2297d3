"""Offline prompt expansion: turn a short wish into several rich Stable Diffusion prompts.

No network and no model weights: terms come from Bildwerk's own vocabulary
(``data/vocabularies.json``), picked with ``random.Random`` seeded per expansion, so the same
(idea, style, count, seed) always gives the same list. The idea always comes first and
intact; added terms are dropped, least important first, until the prompt fits CLIP's 75
content tokens.

CLI: ``python -m app.prompting.local_expander "wish" --count 5 --seed 1 [--style NAME]``
prints one JSON object per expansion.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from app.errors import InvalidInput
from app.prompting.styles import StyleBook, StylePreset
from app.prompting.vocab import (
    MAX_CONTENT_TOKENS,
    fit_negative,
    fit_terms,
    join_terms,
    load_negative_presets,
    load_vocabularies,
    merge_terms,
)

if TYPE_CHECKING:
    from app.prompting.local_model import LocalPromptModel

log = logging.getLogger(__name__)

MAX_COUNT = 50
PROVIDER = "local"

_STOPWORDS = {
    "a", "an", "the", "of", "in", "on", "at", "to", "and", "or", "with", "for", "from", "by",
    "into", "onto", "over", "under", "near", "middle", "some", "very", "its", "his", "her",
    "their", "is", "are", "be", "this", "that", "there", "it", "as", "like", "my", "our",
}
_SMALL_TITLE_WORDS = {"a", "an", "the", "of", "in", "on", "at", "to", "and", "or", "with", "by"}
_ERA_HINTS = (
    "medieval", "futur", "baroque", "roman", "industrial", "apocalyp", "solarpunk",
    "present day", "modern", "ancient", "victorian", "stone age",
)
_PHOTO_MEDIA = ("photo", "photograph", "film")
_DOMAIN_TAGS = {"map": "satellite map", "render": "3d render"}


@dataclass
class Expansion:
    title: str
    description: str
    metatags: list[str]
    prompt: str
    negative_prompt: str
    seed: int
    provider: str = PROVIDER
    style: str | None = None
    truncated: bool = False
    params: dict = field(default_factory=dict)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text.lower())


def _detect_domain(idea: str, preset: StylePreset | None, packs: dict) -> str:
    if preset is not None:
        return preset.domain if preset.domain in packs else "general"
    low = " " + " ".join(_words(idea)) + " "
    for domain in ("render", "map"):
        for kw in packs.get(domain, {}).get("keywords", []):
            if f" {kw.lower()} " in low:
                return domain
    return "general"


def _pick(rng: random.Random, pool: list[str], k: int, avoid: set[str], context: str) -> list[str]:
    """``k`` distinct terms of ``pool``; skips terms already said in the idea/style."""
    candidates = [
        t for t in pool
        if t.lower() not in context and not (set(_words(t)[-1:]) & avoid)
    ]
    if not candidates or k <= 0:
        return []
    return rng.sample(candidates, min(k, len(candidates)))


def _title_case(words: list[str]) -> str:
    out = []
    for i, w in enumerate(words):
        if i and w.lower() in _SMALL_TITLE_WORDS:
            out.append(w.lower())
        else:
            out.append(w[:1].upper() + w[1:])
    return " ".join(out)


def _make_title(idea: str, flavor: str | None) -> str:
    clause = idea.split(",")[0].strip() or idea
    words = [w.strip(",.;:!?\"'") for w in clause.split()]
    words = [w for w in words if w]
    while words and words[0].lower() in {"a", "an", "the"}:
        words = words[1:]
    words = words[:7]
    while len(words) > 1 and words[-1].lower() in _SMALL_TITLE_WORDS | {"a", "an", "the"}:
        words = words[:-1]  # "Salt Mine at the Edge of" -> "Salt Mine at the Edge"
    core = _title_case(words) or "Untitled"
    title = f"{core}: {_title_case(flavor.split())}" if flavor else core
    if len(title) > 60:
        title = title[:60].rsplit(" ", 1)[0].rstrip(":,")
    return title


def _clean_tag(tag: str) -> str:
    return " ".join(re.sub(r"[^\w\s-]", " ", tag.lower()).split())


def _make_tags(
    idea: str, preset: StylePreset | None, domain: str, picks: dict[str, list[str]]
) -> list[str]:
    tags: list[str] = []
    content = [w for w in _words(idea) if w not in _STOPWORDS and len(w) > 2]
    tags.extend(content[:3])
    if preset is not None:
        tags.append(preset.name.replace("-", " "))
    tags.extend(picks.get("media", [])[:1])
    if domain in _DOMAIN_TAGS:
        tags.append(_DOMAIN_TAGS[domain])
    tags.extend(picks.get("eras", [])[:1])
    tags.extend(picks.get("elements", [])[:1])
    tags.extend(picks.get("lighting", [])[:1])
    out: list[str] = []
    for t in tags:
        t = re.sub(r"^(a|an|the) ", "", _clean_tag(t))
        if t and t not in out:
            out.append(t)
    for pad in ("generated image", "stable diffusion", "ai art"):
        if len(out) >= 3:
            break
        if pad not in out:
            out.append(pad)
    return out[:8]


def _make_description(
    idea: str, preset: StylePreset | None, picks: dict[str, list[str]], truncated: bool
) -> str:
    subject = idea.strip().rstrip(".!?") or "An image"
    subject = subject[:1].upper() + subject[1:]
    if preset is not None:
        medium = preset.terms()[0] if preset.terms() else preset.name
    else:
        medium = (picks.get("media") or ["detailed image"])[0]
    article = "an" if medium[:1].lower() in "aeiou" else "a"
    parts = [f"{subject}, as {article} {medium}"]
    if picks.get("eras"):
        parts.append(f"in the {picks['eras'][0]}")
    if picks.get("environments"):
        parts.append(picks["environments"][0])
    extras = [*picks.get("elements", [])[:2], *picks.get("lighting", [])[:1]]
    sentence = " ".join(parts)
    if extras:
        sentence += ", with " + " and ".join(extras)
    if truncated:
        sentence += f"; the wish was shortened to fit CLIP's {MAX_CONTENT_TOKENS}-token limit"
    return sentence + "."


def _choose_terms(
    rng: random.Random, idea: str, preset: StylePreset | None, pack: dict, order: list[str]
) -> dict[str, list[str]]:
    style_text = " ".join(preset.terms()).lower() if preset else ""
    context = f"{idea.lower()} {style_text}"
    avoid = {w for w in _words(idea) if len(w) > 3}
    has_era = any(h in context for h in _ERA_HINTS)
    counts = {
        "elements": rng.choice([1, 2, 2]),
        "environments": 1 if rng.random() < 0.8 else 0,
        "eras": 1 if (not has_era and rng.random() < 0.5) else 0,
        "media": 0 if preset else 1,
        "mood": 1 if rng.random() < 0.7 else 0,
        "lighting": 1,
        "composition": 1 if rng.random() < 0.7 else 0,
        "detail": rng.choice([1, 2]),
    }
    picks: dict[str, list[str]] = {}
    for cat in order:
        # Draw for every category even when unused, so one choice does not shift the others.
        chosen = _pick(rng, pack.get(cat, []), max(counts.get(cat, 0), 1), avoid, context)
        picks[cat] = chosen[: counts.get(cat, 0)]
    return picks


def expand_locally(
    idea: str,
    *,
    style: str | None = None,
    count: int = 3,
    seed: int = 0,
    styles: StyleBook,
    model: LocalPromptModel | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_tokens: int | None = None,
) -> list[Expansion]:
    """Expand ``idea`` into ``count`` prompts; expansion ``i`` uses seed ``seed + i``.

    With a local ``model`` (optional, see :mod:`app.prompting.local_model`) each expansion
    also gets the model's continuation of idea + style, sampled with seed ``seed + i`` and the
    given sampling settings; its terms come right after the style's, before the vocabulary
    picks, and ``params["local_model"]`` names it. A failing model is logged and skipped (no
    ``local_model`` then). Without a model the result is exactly as before.
    """
    idea = " ".join((idea or "").split())
    if not idea:
        raise InvalidInput("the idea to expand is empty", param="prompt")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInput(f"count must be between 1 and {MAX_COUNT}", param="count")
    preset = styles.get(style) if style else None
    vocab = load_vocabularies()
    packs = vocab["packs"]
    order = list(vocab["category_order"])
    domain = _detect_domain(idea, preset, packs)
    pack = packs.get(domain, packs["general"])
    negatives = load_negative_presets()

    results = []
    for i in range(count):
        exp_seed = seed + i
        rng = random.Random(f"bildwerk-local|{exp_seed}|{style or ''}|{idea}")
        picks = _choose_terms(rng, idea, preset, pack, order)
        style_terms = preset.terms() if preset else []
        model_terms: list[str] | None = None
        if model is not None:
            try:
                model_terms = model.continue_prompt(
                    join_terms([idea, *style_terms]), seed=exp_seed, temperature=temperature,
                    top_p=top_p, top_k=top_k, max_new_tokens=max_tokens,
                )
            except Exception as exc:
                log.warning("local prompt model %s failed, using vocabulary terms only: %s",
                            model.name, exc)
        extras = merge_terms(style_terms, model_terms or [], *(picks[c] for c in order))
        extras = [t for t in extras if t.lower() not in idea.lower()]
        prompt, kept, truncated = fit_terms(idea, extras)
        kept_set = set(kept)
        picks = {c: [t for t in ts if t in kept_set] for c, ts in picks.items()}

        if preset is not None:
            negative = preset.negative_prompt
        else:
            media = " ".join(picks.get("media", [])).lower()
            key = {"map": "map", "render": "render"}.get(domain)
            if key is None:
                key = "photo" if any(m in media for m in _PHOTO_MEDIA) else "general"
            negative = fit_negative(negatives.get(key) or negatives["general"])

        flavor_src = picks.get("eras") or picks.get("mood") or picks.get("lighting")
        flavor = flavor_src[0] if flavor_src else None
        results.append(
            Expansion(
                title=_make_title(idea, flavor),
                description=_make_description(idea, preset, picks, truncated),
                metatags=_make_tags(idea, preset, domain, picks),
                prompt=prompt,
                negative_prompt=negative,
                seed=exp_seed,
                style=style,
                truncated=truncated,
                params={**(preset.params if preset else {}),
                        **({"local_model": model.name} if model_terms is not None else {})},
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.prompting.local_expander",
        description="Expand a short wish into Stable Diffusion prompts, offline.",
    )
    parser.add_argument("idea")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", default=None)
    args = parser.parse_args(argv)
    book = StyleBook.load()
    try:
        expansions = expand_locally(
            args.idea, style=args.style, count=args.count, seed=args.seed, styles=book
        )
    except InvalidInput as exc:
        print(f"error ({exc.param}): {exc.message}", file=sys.stderr)
        return 2
    for exp in expansions:
        print(json.dumps(asdict(exp), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
