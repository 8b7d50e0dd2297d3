"""An LLM expander's answer: the schema it is asked for, parsing and repairing the text it
returns, and turning its items into :class:`Expansion` objects.

* :data:`ANSWER_SCHEMA` is the structured-output schema (``{"prompts": [item, ...]}``,
  each item with title, description, metatags, prompt and negative_prompt).
* :func:`parse_answer` tries strict ``json.loads``, then the text inside a code fence, then
  ``json_repair`` (trailing commas, cut-off answers), then validates every item with
  pydantic; too few valid items is ``ExpanderError("malformed")``.
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
# OpenAI strict mode: every property required, additionalProperties false at every level.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"prompts": {"type": "array", "items": ITEM_SCHEMA}},
    "required": ["prompts"],
    "additionalProperties": False,
}


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


def parse_answer(text: str, count: int) -> tuple[list[dict], bool]:
    """The first ``count`` valid items of an answer, and whether the JSON needed repair.

    Raises ``ExpanderError("malformed")`` when fewer than ``count`` items are valid."""
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
    return valid[:count], repaired


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


__all__ = ["ANSWER_SCHEMA", "FIELDS", "ITEM_SCHEMA", "item_error", "parse_answer",
           "to_expansions"]
