"""An LLM expander's answer: the schema it is asked for, parsing and repairing the text it
returns, and turning its items into :class:`Expansion` objects.

* :data:`ANSWER_SCHEMA` is the structured-output schema (``{"translation": str,
  "prompts": [item, ...]}``, each item with title, description, metatags, prompt and
  negative_prompt). ``translation`` is the wish in English, written before the prompts;
  the prompt service uses it as the translated wish instead of the offline glossary's.
* :func:`parse_structured` tries strict ``json.loads``, then the text inside a code fence,
  then ``json_repair`` (trailing commas, cut-off answers), then validates every item with
  pydantic; too few valid items is ``ExpanderError("malformed")``. A missing or unusable
  ``translation`` is not: the prompts are still good, and the service keeps the offline
  translation (:func:`clean_translation` says what is usable). :func:`parse_answer` is the
  same without the translation.
* :func:`to_expansions` fits the prompt to CLIP's 75 tokens (trailing terms dropped first,
  ``truncated=True``), puts a style's missing template terms back after the subject,
  cleans the metatags, appends the style's negative to the model's (like
  ``StyleBook.apply``; an empty one without a style gets the "general" preset), and gives
  item ``i`` the seed ``seed + i``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import json_repair
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from app.prompting.llm_calls import ExpanderError, clip_reason
from app.prompting.local_expander import Expansion
from app.prompting.styles import StylePreset
from app.prompting.vocab import (
    fit_negative,
    fit_terms,
    join_terms,
    load_negative_presets,
    merge_terms,
    split_terms,
)

log = logging.getLogger("bildwerk.prompting.llm")

MAX_TAGS = 8
MIN_TAGS = 3
FIELDS = ("title", "description", "metatags", "prompt", "negative_prompt")


# --------------------------------------------------------------------------- answer schema

def _text(description: str) -> dict:
    return {"type": "string", "description": description}


ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": _text("Short title, 2 to 6 words."),
        "description": _text("One English sentence describing the picture."),
        "metatags": {"type": "array", "items": {"type": "string"},
                     "description": "3 to 8 lowercase tags."},
        "prompt": _text("Comma-separated Stable Diffusion terms, the subject first."),
        "negative_prompt": _text("Comma-separated terms to avoid."),
    },
    "required": list(FIELDS),
    "additionalProperties": False,
}
TRANSLATION_SCHEMA: dict[str, Any] = _text(
    "The user's wish translated faithfully into English: one plain phrase or sentence, "
    "nothing added or left out, place names as written. The wish itself if it is "
    "already English.")
# OpenAI strict mode: every property required, additionalProperties false at every level.
# "translation" comes first, so the model translates before it writes the prompts.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"translation": TRANSLATION_SCHEMA,
                   "prompts": {"type": "array", "items": ITEM_SCHEMA}},
    "required": ["translation", "prompts"],
    "additionalProperties": False,
}
MAX_TRANSLATION = 2000  # characters; a longer "translation" is not a translation of a wish


class _Item(BaseModel):
    """One answer item as validated (extra keys are ignored, types are not coerced)."""

    model_config = ConfigDict(extra="ignore")

    title: StrictStr
    description: StrictStr
    metatags: list[StrictStr]
    prompt: StrictStr
    negative_prompt: StrictStr


def item_error(data: Any) -> tuple[dict | None, str | None]:
    """(the validated item, None) or (None, why it is invalid)."""
    try:
        item = _Item.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "item"
        return None, f"{where}: {first.get('msg', 'invalid')}"
    if not split_terms(item.prompt):
        return None, "prompt: empty"
    return item.model_dump(), None


# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


def _items_of(data: Any) -> list | None:
    """The list of items in any accepted shape: {"prompts": [...]}, [...], or one item."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get("prompts"), list):
            return data["prompts"]
        if "prompt" in data:
            return [data]
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(data) == 1 and len(lists) == 1:
            return lists[0]
    return None


@dataclass(frozen=True)
class ParsedAnswer:
    items: list[dict]  # the first ``count`` valid items
    repaired: bool  # the JSON needed repair
    translation: str | None  # the usable English translation of the wish, if any


def clean_translation(value: Any) -> str | None:
    """The answer's ``translation`` when usable: a non-empty string of at most
    ``MAX_TRANSLATION`` characters, whitespace collapsed, surrounding quotes dropped."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split()).strip()
    if len(text) >= 2 and text[0] in "\"'“”„«»" and text[-1] in "\"'“”„«»":
        text = text[1:-1].strip()
    if not text or len(text) > MAX_TRANSLATION or not re.search(r"[^\W\d_]", text):
        return None
    return text


def parse_answer(text: str, count: int) -> tuple[list[dict], bool]:
    """The first ``count`` valid items of an answer, and whether the JSON needed repair.

    Raises ``ExpanderError("malformed")`` when fewer than ``count`` items are valid."""
    parsed = parse_structured(text, count)
    return parsed.items, parsed.repaired


def parse_structured(text: str, count: int) -> ParsedAnswer:
    """:func:`parse_answer` plus the answer's ``translation`` (None when missing or
    unusable; that alone never makes an answer malformed)."""
    text = (text or "").strip()
    if not text:
        raise ExpanderError("malformed", "the answer was empty")
    repaired = False
    try:
        data = json.loads(text)
    except ValueError:
        repaired = True
        fenced = _FENCE.search(text)
        inner = fenced.group(1) if fenced else text
        try:
            data = json.loads(inner)
        except ValueError:
            try:
                data = json_repair.repair_json(inner, return_objects=True)
            except Exception:  # noqa: BLE001 - the repair library may fail on anything
                data = None
    items = _items_of(data)
    if not items:
        raise ExpanderError("malformed", "the answer holds no JSON list of prompts")
    valid, errors = [], []
    for i, raw in enumerate(items):
        item, error = item_error(raw)
        if item is None:
            errors.append(f"prompts[{i}].{error}")
        else:
            valid.append(item)
    if len(valid) < count:
        detail = f"; {errors[0]}" if errors else ""
        raise ExpanderError("malformed", clip_reason(
            f"{len(valid)} valid prompts of {count} asked for{detail}"))
    if errors:
        log.info("dropped %d invalid item(s) of an LLM answer: %s", len(errors), errors[0])
    translation = clean_translation(data.get("translation")) if isinstance(data, dict) \
        else None
    if translation is None:
        log.info("the LLM answer has no usable translation of the wish")
    return ParsedAnswer(valid[:count], repaired, translation)


# --------------------------------------------------------------------------- post-processing

_PAD_SKIP = {"with", "from", "into", "onto", "over", "under", "near", "middle", "some", "very",
             "their", "this", "that", "there", "like", "mitten", "eine", "einem", "einer"}


def _clean_tags(tags: list[str], idea: str, style: StylePreset | None) -> list[str]:
    out: list[str] = []
    for tag in tags:
        tag = " ".join(tag.lower().replace("#", " ").replace("_", " ").split()).strip(" .,;:")
        if tag and tag not in out:
            out.append(tag)
    pads = [style.name.replace("-", " ")] if style else []
    pads += [w for w in re.findall(r"[^\W\d_]{4,}", idea.lower()) if w not in _PAD_SKIP]
    pads += ["generated image", "stable diffusion", "ai art"]
    for pad in pads:
        if len(out) >= MIN_TAGS:
            break
        if pad not in out:
            out.append(pad)
    return out[:MAX_TAGS]


def _fit_prompt(prompt: str, style: StylePreset | None) -> tuple[str, bool]:
    """Fit to 75 CLIP tokens keeping the subject (first term); style terms the model left
    out are put back right after it. Returns (prompt, truncated)."""
    terms = split_terms(" ".join(prompt.split()))
    head, extras = terms[0], terms[1:]
    if style is not None:
        said = prompt.lower()
        missing = [t for t in style.terms() if t.lower() not in said]
        extras = [*missing, *extras]
    text, kept, head_cut = fit_terms(head, extras)
    return text, head_cut or len(kept) < len(extras)


def _default_negative() -> str:
    return fit_negative(load_negative_presets()["general"])


def to_expansions(items: list[dict], *, idea: str, style: StylePreset | None, seed: int,
                  provider: str) -> list[Expansion]:
    """Turn validated answer items into :class:`Expansion` objects (seed ``seed + i``)."""
    out = []
    for i, item in enumerate(items):
        prompt, truncated = _fit_prompt(item["prompt"], style)
        negative = split_terms(" ".join(item["negative_prompt"].split()))
        if style is not None:  # the model's own terms first, the style's appended and trimmed
            negative = merge_terms(negative, split_terms(style.negative_prompt))
        title = " ".join(item["title"].split())[:80] or idea[:60]
        out.append(Expansion(
            title=title,
            description=" ".join(item["description"].split()) or idea,
            metatags=_clean_tags(item["metatags"], idea, style),
            prompt=prompt,
            negative_prompt=fit_negative(join_terms(negative)) or _default_negative(),
            seed=seed + i,
            provider=provider,
            style=style.name if style else None,
            truncated=truncated,
            params=dict(style.params) if style else {},
        ))
    return out


__all__ = ["ANSWER_SCHEMA", "FIELDS", "ITEM_SCHEMA", "TRANSLATION_SCHEMA", "ParsedAnswer",
           "clean_translation", "item_error", "parse_answer", "parse_structured",
           "to_expansions"]
