"""What the LLM prompt expanders (``openai_expander``, ``gemini_expander``) share.

An expander's ``expand(idea, style=, count=, seed=, sampling=)`` goes through four steps:

1. **Ask**: :func:`~app.prompting.llm_messages.system_prompt` (the task, the rules, the
   style), few-shot user/assistant turns from :class:`~app.prompting.fewshot.FewShot`
   (:meth:`ChatExpander.shot_turns`: each answer with its ``translation``) and
   :func:`~app.prompting.llm_messages.user_message` (``Wish:``, ``Style:``, ``Count:``
   lines), with :data:`~app.prompting.llm_answers.ANSWER_SCHEMA` as the structured-output
   schema, and the request's :class:`~app.prompting.llm_calls.SamplingOptions`. The wish
   is sent as the visitor typed it: the model translates it into the answer's
   ``translation`` field, which the prompt service then records as the translated wish.
2. **Call and parse** with :func:`~app.prompting.llm_calls.run_with_retry`: one call;
   :func:`~app.prompting.llm_answers.parse_answer` tries strict ``json.loads``, then
   ``json_repair`` (code fences, trailing commas, cut-off answers), then validates every
   item with pydantic. A malformed answer gets exactly one more call that carries the bad
   answer and a corrective message; a second malformed answer is
   ``ExpanderError("malformed")``. Network failures, timeouts and 5xx are retried by the
   SDK (bounded by the expander's ``retries``), then ``ExpanderError("unavailable")``.
3. **Post-process** with :func:`~app.prompting.llm_answers.to_expansions`: the prompt is
   fitted to CLIP's 75 tokens (trailing terms dropped first, ``truncated=True``), a
   style's missing template terms are put back after the subject, metatags cleaned, the
   style's negative appended to the model's (like ``StyleBook.apply``; an empty one
   without a style gets the "general" preset), ``seed + i`` per item.
4. **Answer**: :class:`~app.prompting.llm_calls.LLMAnswer` with the :class:`Expansion`
   list, the ``translation`` (None when the answer had no usable one), calls made, whether
   JSON had to be repaired, usage summed over the calls and the raw answer texts (for the
   record).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from app.prompting.fewshot import Example, FewShot
from app.prompting.llm_answers import clean_translation, parse_structured, to_expansions
from app.prompting.llm_calls import ExpanderError, Parse
from app.prompting.llm_messages import check_request
from app.prompting.styles import StylePreset
from app.prompting.vocab import split_terms

log = logging.getLogger("bildwerk.prompting.llm")


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

    def _parser(self, idea: str, style: StylePreset | None, seed: int, count: int) -> Parse:
        def parse(text: str):
            parsed = parse_structured(text, count)
            # metatags are padded from the English wish when the model gave one
            return (to_expansions(parsed.items, idea=parsed.translation or idea, style=style,
                                  seed=seed, provider=self.name),
                    parsed.repaired, parsed.translation)

        return parse

    def shot_turns(self, example: Example) -> tuple[str, str]:
        """A few-shot example as (user message, assistant answer), the answer in the shape
        the schema asks for: ``{"translation": ..., "prompts": [answer]}``."""
        asked, _ = example.turns()
        answer = {"translation": fewshot_translation(self.fewshot.folder, example),
                  "prompts": [example.answer]}
        return asked, json.dumps(answer, ensure_ascii=False)


def fewshot_translation(folder: Path, example: Example) -> str:
    """The English of a few-shot example's idea: the line's own ``"translation"`` key when
    it has one; else the idea itself when it is English; else the subject of the answer's
    prompt (its first term, which the rules say is the wish in English)."""
    given = _line_translations(str(folder)).get(example.source)
    if given:
        return given
    from app.prompting.translate import detect_language

    if detect_language(example.idea) == "en":
        return example.idea
    terms = split_terms(example.answer.get("prompt", ""))
    return terms[0] if terms else example.idea


_TRANSLATIONS: dict[str, dict[str, str]] = {}
_TRANSLATIONS_LOCK = threading.Lock()


def _line_translations(folder: str) -> dict[str, str]:
    """{"file.jsonl:line": translation} for the few-shot lines that carry one (read once
    per folder; fewshot.py keeps only idea, style and answer)."""
    with _TRANSLATIONS_LOCK:
        if folder in _TRANSLATIONS:
            return _TRANSLATIONS[folder]
        found: dict[str, str] = {}
        for path in sorted(Path(folder).glob("*.jsonl")) if Path(folder).is_dir() else []:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for number, line in enumerate(lines, start=1):
                try:
                    data = json.loads(line) if line.strip() else None
                except ValueError:
                    continue
                text = clean_translation(data.get("translation")) \
                    if isinstance(data, dict) else None
                if text:
                    found[f"{path.name}:{number}"] = text
        _TRANSLATIONS[folder] = found
        return found


__all__ = ["ChatExpander", "fewshot_translation"]
