"""Shared parts of the LLM prompt expanders (``openai_expander``, ``gemini_expander``).

An expander's ``expand(idea, style=, count=, seed=, sampling=)`` goes through four steps:

1. **Ask**: :func:`system_prompt` (the task, the rules, the style), few-shot user/assistant
   turns from :class:`FewShot` and :func:`user_message` (``Wish:``, ``Style:``, ``Count:``
   lines), with :data:`ANSWER_SCHEMA` as the structured-output schema.
2. **Call and parse** with :func:`run_with_retry`: one call; :func:`parse_answer` tries strict
   ``json.loads``, then ``json_repair`` (code fences, trailing commas, cut-off answers),
   then validates every item with pydantic. A malformed answer gets exactly one more call
   that carries the bad answer and a corrective message; a second malformed answer is
   ``ExpanderError("malformed")``. Network failures, timeouts and 5xx are retried by the SDK
   (bounded by the expander's ``retries``), then ``ExpanderError("unavailable")``.
3. **Post-process** with :func:`to_expansions`: the prompt is fitted to CLIP's 75 tokens
   (trailing terms dropped first, ``truncated=True``), a style's missing template terms
   are put back after the subject, metatags cleaned, the style's negative appended to the
   model's (like ``StyleBook.apply``; an empty one without a style gets the "general"
   preset), ``seed + i`` per item.
4. **Answer**: :class:`LLMAnswer` with the :class:`Expansion` list, calls made, whether
   JSON had to be repaired, usage and the raw answer texts (for the record).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json_repair
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from app.errors import InvalidInput
from app.prompting.local_expander import MAX_COUNT, Expansion
from app.prompting.styles import StylePreset
from app.prompting.vocab import (
    DATA_DIR,
    fit_negative,
    fit_terms,
    join_terms,
    load_negative_presets,
    merge_terms,
    split_terms,
)

log = logging.getLogger("bildwerk.prompting.llm")

FEWSHOT_DIR = DATA_DIR / "fewshot"
RAW_LIMIT = 2000  # characters of each raw answer kept for the record
MAX_TAGS = 8
MIN_TAGS = 3
MAX_REASON = 300
FIELDS = ("title", "description", "metatags", "prompt", "negative_prompt")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; ``None`` leaves the provider's default (the field is not sent)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # Gemini only: OpenAI chat has no top_k
    max_tokens: int | None = None


class ExpanderError(Exception):
    """An LLM expander could not produce prompts.

    ``kind``: "unavailable" (not configured, network, timeout, 5xx after retries, 4xx such
    as auth), "malformed" (no valid JSON of the schema after repair and one retry) or
    "refused" (the model refused, safety block). ``reason`` is short and never holds the API
    key; ``attempts`` is the number of model calls made (SDK-internal retries not counted);
    ``raw`` holds the answer texts received (each cut to 2000 characters)."""

    def __init__(self, kind: str, reason: str, *, attempts: int = 0,
                 raw: list[str] | None = None) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.attempts = attempts
        self.raw = list(raw or [])


@dataclass
class LLMAnswer:
    expansions: list[Expansion]
    model: str
    calls: int
    repaired: bool
    usage: dict | None
    raw: list[str]  # each call's answer text, cut to RAW_LIMIT characters


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


def _item_error(data: Any) -> tuple[dict | None, str | None]:
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
        item, error = _item_error(raw)
        if item is None:
            errors.append(f"prompts[{i}].{error}")
        else:
            valid.append(item)
    if len(valid) < count:
        detail = f"; {errors[0]}" if errors else ""
        raise ExpanderError("malformed", _clip(
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


# --------------------------------------------------------------------------- few-shot examples

@dataclass(frozen=True)
class Example:
    idea: str
    style: str | None
    answer: dict  # the five fields of one answer item
    source: str  # "file.jsonl:line"

    def turns(self) -> tuple[str, str]:
        """(user message, assistant answer) as shown to the model."""
        return (user_message(self.idea, self.style, 1),
                json.dumps({"prompts": [self.answer]}, ensure_ascii=False))


class FewShot:
    """Few-shot examples read from every ``*.jsonl`` file of a folder (sorted by name).

    A line: ``{"idea": "...", "style": null | "name", "answer": {title, description,
    metatags, prompt, negative_prompt}}``. Bad lines are logged (file:line) and skipped."""

    def __init__(self, folder: str | Path | None = None, *, limit: int = 3) -> None:
        self.folder = Path(folder) if folder else FEWSHOT_DIR
        self.limit = limit
        self.examples: list[Example] = self._read()

    def _read(self) -> list[Example]:
        if not self.folder.is_dir():
            log.warning("few-shot folder %s does not exist; no examples", self.folder)
            return []
        examples = []
        for path in sorted(self.folder.glob("*.jsonl")):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("%s: few-shot file skipped (%s)", path.name, type(exc).__name__)
                continue
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    example = _example(line, f"{path.name}:{number}")
                    if example is not None:
                        examples.append(example)
        return examples

    def pick(self, style: str | None, n: int | None = None) -> list[Example]:
        """Up to ``n`` (default ``limit``) examples: the style's own first, then those
        without a style, then others; file order within each group."""
        n = self.limit if n is None else n

        def rank(example: Example) -> int:
            if example.style == style:
                return 0
            return 1 if example.style is None else 2

        return sorted(self.examples, key=rank)[: max(0, n)]

    def system_prompt(self, style: StylePreset | None, count: int) -> str:
        return system_prompt(style, count)


def _example(line: str, source: str) -> Example | None:
    try:
        data = json.loads(line)
    except ValueError:
        log.warning("%s: few-shot line skipped (not JSON)", source)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("idea"), str) \
            or not data["idea"].strip():
        log.warning("%s: few-shot line skipped (no idea)", source)
        return None
    style = data.get("style")
    if style is not None and not isinstance(style, str):
        log.warning("%s: few-shot line skipped (style is not a string)", source)
        return None
    answer, error = _item_error(data.get("answer"))
    if answer is None:
        log.warning("%s: few-shot line skipped (answer %s)", source, error)
        return None
    return Example(idea=data["idea"].strip(), style=style or None, answer=answer, source=source)


# --------------------------------------------------------------------------- messages

def system_prompt(style: StylePreset | None, count: int) -> str:
    """The task and its rules; with a style, its template and negative prompt."""
    lines = [
        "You write prompts for Stable Diffusion. Turn the user's wish into exactly "
        f"{count} different prompt suggestions.",
        "Rules:",
        "- Always write in English, whatever language the wish is in. Translate the wish "
        "faithfully; keep place names as written.",
        "- prompt: comma-separated Stable Diffusion terms, not sentences. The user's "
        "subject comes first, then medium, setting, details, lighting and composition. "
        "At most 60 words. No weights, brackets or quotes.",
        "- negative_prompt: comma-separated terms for what must not appear (flaws, "
        "unwanted elements), at most 30 words.",
        "- title: 2 to 6 words. description: one sentence describing the picture.",
        "- metatags: 3 to 8 lowercase tags of one to three words.",
        "- The suggestions differ in mood, time of day, light or composition; all keep "
        "the user's subject.",
        '- Answer with JSON only, {"prompts": [...]}, exactly as the schema says: no '
        "commentary, no code fences.",
    ]
    if style is not None:
        lines += [
            f'Style "{style.name}": {style.description}',
            f'- Build every prompt on this template, {{prompt}} being the subject: '
            f'"{style.template}"',
            "- The style's negative prompt is added for you; write only the terms this "
            f'picture needs beyond it: "{style.negative_prompt}"',
        ]
    return "\n".join(lines)


def user_message(idea: str, style: str | None, count: int) -> str:
    """The request as the model (and the test fakes, which read ``Count:``) see it."""
    return f"Wish: {idea}\nStyle: {style or 'none'}\nCount: {count}"


def corrective_message(error: str) -> str:
    return (f"Your last answer was not valid JSON for the schema: {error}. "
            "Answer again with JSON only.")


def check_request(idea: str, count: int) -> str:
    """The idea with whitespace collapsed; the same input rules as the local expander."""
    idea = " ".join((idea or "").split())
    if not idea:
        raise InvalidInput("the idea to expand is empty", param="prompt")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInput(f"count must be between 1 and {MAX_COUNT}", param="count")
    return idea


# --------------------------------------------------------------------------- calling

@dataclass
class Reply:
    """One model call's answer as the expander extracted it."""

    text: str
    model: str | None = None
    usage: dict | None = None


@dataclass(frozen=True)
class Correction:
    """What the second call adds: the bad answer (as the assistant's turn) and the fix."""

    previous: str
    error: str

    @property
    def message(self) -> str:
        return corrective_message(self.error)


def run_with_retry(call: Callable[[Correction | None], Reply],
                   parse: Callable[[str], tuple[list[Expansion], bool]],
                   *, model: str) -> LLMAnswer:
    """Call once; on a malformed answer call once more with a :class:`Correction`.

    ``call`` raises :class:`ExpanderError` ("unavailable", "refused") itself, after the
    SDK's own bounded retries; ``parse`` raises ``ExpanderError("malformed")``. Every error
    leaves with ``attempts`` and ``raw`` filled in."""
    raw: list[str] = []
    usage: dict = {}
    correction: Correction | None = None
    for attempt in (1, 2):
        try:
            reply = call(correction)
        except ExpanderError as exc:
            exc.attempts, exc.raw = attempt, list(raw)
            raise
        raw.append(reply.text[:RAW_LIMIT])
        _add_usage(usage, reply.usage)
        try:
            expansions, repaired = parse(reply.text)
        except ExpanderError as exc:
            exc.attempts, exc.raw = attempt, list(raw)
            if attempt == 2:
                raise
            log.info("LLM answer malformed (%s); asking once more", exc.reason)
            correction = Correction(previous=reply.text[:RAW_LIMIT], error=exc.reason)
            continue
        return LLMAnswer(expansions=expansions, model=reply.model or model, calls=attempt,
                         repaired=repaired, usage=usage or None, raw=raw)
    raise AssertionError("unreachable")  # pragma: no cover


def _add_usage(total: dict, usage: dict | None) -> None:
    for key, value in (usage or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the secret, cut to a short reason."""
    if secret:
        text = text.replace(secret, "***")
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


__all__ = [
    "ANSWER_SCHEMA", "Correction", "Example", "ExpanderError", "FewShot", "LLMAnswer",
    "Reply", "Sampling", "check_request", "parse_answer", "run_with_retry", "system_prompt",
    "to_expansions", "user_message",
]


# --------------------------------------------------------------------------- shared expander

class ChatExpander:
    """What the OpenAI and Gemini expanders share: their settings, availability, the
    request check, and turning an answer's text into :class:`Expansion` objects. A subclass
    sets ``name``, ``key_env`` and ``label`` and writes ``expand`` and its one call."""

    name = ""
    key_env = ""  # the environment variable that holds the key, for messages
    label = ""  # "OpenAI chat", "Gemini text"

    def __init__(self, *, api_key: str | None, base_url: str | None, model: str,
                 timeout: float, retries: int, fewshot: FewShot) -> None:
        self._api_key = api_key or None
        self._base_url = base_url
        self.model = model
        self.timeout = timeout
        self.retries = max(0, retries)
        self.fewshot = fewshot
        self._client_obj = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self._base_url!r}, model={self.model!r})"

    def available(self) -> tuple[bool, str | None]:
        if not self._api_key:
            return False, f"{self.key_env} is not set"
        if not self.model:
            return False, f"no {self.label} model configured"
        return True, None

    def _checked(self, idea: str, count: int) -> str:
        """The cleaned idea; InvalidInput for a bad request, "unavailable" without a key."""
        idea = check_request(idea, count)
        usable, why = self.available()
        if not usable:
            raise ExpanderError("unavailable", why or "not configured")
        return idea

    def _parser(self, idea: str, style: StylePreset | None, seed: int,
                count: int) -> Callable[[str], tuple[list[Expansion], bool]]:
        def parse(text: str) -> tuple[list[Expansion], bool]:
            items, repaired = parse_answer(text, count)
            return to_expansions(items, idea=idea, style=style, seed=seed,
                                 provider=self.name), repaired

        return parse
