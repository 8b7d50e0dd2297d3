"""Prompt expansion with a Gemini text model (JSON response schema) via ``google-genai``.

The wish goes to the model as typed; the answer's ``translation`` field (first in
``propertyOrdering``) is its English, returned as ``LLMAnswer.translation``.

Flow: ``expand`` sends few-shot turns (user/model) and the request as ``contents``, the
rules as ``system_instruction``, and ``response_mime_type="application/json"`` with
:func:`gemini_schema` (:data:`~app.prompting.llm_answers.ANSWER_SCHEMA` without
``additionalProperties``, which Gemini's schema subset lacks, plus ``propertyOrdering`` and
``minItems``/``maxItems`` = count) through ``client.models.generate_content``. Sampling:
``temperature``, ``top_p``, ``top_k``, ``max_tokens`` (as ``max_output_tokens``) when set,
``seed`` and ``candidate_count=1``. :func:`app.prompting.llm_calls.run_with_retry` parses, repairs
and asks once more (the bad answer as the model's turn plus a corrective user turn).

The client is built like :mod:`app.providers.gemini` (``base_url``, API version ``v1beta``,
timeout), but here the SDK retries itself: ``HttpRetryOptions(attempts=retries + 1)``
retries 408/429/5xx, timeouts and connection errors with exponential backoff. Errors are
``ExpanderError``: "unavailable" (not configured, any API error, timeout, unreachable),
"refused" (prompt blocked, a safety finish reason, or no text in the answer). The key is
scrubbed from every reason. Usage is reported as ``input_tokens``/``output_tokens``/
``thoughts_tokens``/``total_tokens``.
"""

from __future__ import annotations

import copy
from typing import Any

from app.prompting.chat_expander import ChatExpander
from app.prompting.fewshot import FewShot
from app.prompting.llm_answers import ANSWER_SCHEMA
from app.prompting.llm_calls import (
    Correction,
    ExpanderError,
    LLMAnswer,
    Reply,
    SamplingOptions,
    run_with_retry,
    scrub,
)
from app.prompting.llm_messages import user_message
from app.prompting.styles import StylePreset
from app.providers.gemini import _TIMEOUTS, _TRANSPORT, developer_client, gemini_usage

REFUSAL_FINISH = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION",
                            "IMAGE_SAFETY", "LANGUAGE"})
MAX_BACKOFF_S = 8.0


def gemini_schema(count: int) -> dict[str, Any]:
    """:data:`ANSWER_SCHEMA` in Gemini's dialect, asking for exactly ``count`` items."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v) for k, v in node.items() if k != "additionalProperties"}
        if isinstance(node.get("properties"), dict):
            out["properties"] = {k: convert(v) for k, v in node["properties"].items()}
            out["propertyOrdering"] = list(node["properties"])
        return out

    schema = convert(copy.deepcopy(ANSWER_SCHEMA))
    schema["properties"]["prompts"].update(minItems=count, maxItems=count)
    return schema


class GeminiExpander(ChatExpander):
    name = "gemini"
    key_env = "GEMINI_API_KEY"
    label = "Gemini text"

    def __init__(self, *, api_key: str | None, base_url: str | None, model: str,
                 timeout: float, retries: int, fewshot: FewShot,
                 backoff_s: float = 1.0) -> None:
        super().__init__(api_key=api_key, base_url=base_url,
                         model=(model or "").removeprefix("models/"), timeout=timeout,
                         retries=retries, fewshot=fewshot)
        self.backoff_s = max(0.0, backoff_s)

    def expand(self, idea: str, *, style: StylePreset | None, count: int, seed: int,
               sampling: SamplingOptions) -> LLMAnswer:
        from google.genai import types

        idea = self._checked(idea, count)
        style_name = style.name if style else None
        contents: list[types.Content] = []
        for example in self.fewshot.pick(style_name):
            asked, answered = self.shot_turns(example)
            contents += [_turn("user", asked), _turn("model", answered)]
        contents.append(_turn("user", user_message(idea, style_name, count)))
        config = types.GenerateContentConfig(
            system_instruction=self.fewshot.system_prompt(style, count),
            response_mime_type="application/json", response_schema=gemini_schema(count),
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
            max_output_tokens=sampling.max_tokens, seed=seed, candidate_count=1)

        def call(correction: Correction | None) -> Reply:
            extra = [] if correction is None else [
                _turn("model", correction.previous), _turn("user", correction.message)]
            return self._call(contents + extra, config)

        return run_with_retry(call, self._parser(idea, style, seed, count), model=self.model)

    # -- one call ------------------------------------------------------------------------
    def _client(self):
        with self._lock:
            if self._client_obj is None:
                from google.genai import types

                retry = types.HttpRetryOptions(  # the SDK retries 429/5xx/timeouts here
                    attempts=self.retries + 1, initial_delay=self.backoff_s,
                    max_delay=MAX_BACKOFF_S, jitter=self.backoff_s / 2)
                self._client_obj = developer_client(self._api_key, self._base_url,
                                                    self.timeout, retry)
            return self._client_obj

    def _call(self, contents: list, config) -> Reply:
        try:
            response = self._client().models.generate_content(
                model=self.model, contents=contents, config=config)
        except Exception as exc:  # noqa: BLE001 - everything maps to ExpanderError
            raise self._mapped(exc) from None
        model = getattr(response, "model_version", None)
        usage = gemini_usage(getattr(response, "usage_metadata", None))
        feedback = getattr(response, "prompt_feedback", None)
        block = getattr(feedback, "block_reason", None) if feedback else None
        if block:
            raise ExpanderError("refused", f"Gemini blocked the prompt ({_enum(block)})")
        candidates = list(getattr(response, "candidates", None) or [])
        if not candidates:
            raise ExpanderError("refused", "Gemini answered without a candidate")
        finish = _enum(getattr(candidates[0], "finish_reason", None) or "")
        content = getattr(candidates[0], "content", None)
        text = "".join(part.text for part in (getattr(content, "parts", None) or [])
                       if getattr(part, "text", None) and not getattr(part, "thought", None))
        if finish in REFUSAL_FINISH:
            raise ExpanderError("refused", f"Gemini stopped the answer ({finish})")
        if not text.strip() and finish != "MAX_TOKENS":  # cut off: parsed as malformed
            raise ExpanderError("refused", "Gemini answered without text"
                                + (f" (finish reason {finish})" if finish else ""))
        return Reply(text=text, model=model, usage=usage)

    def _mapped(self, exc: Exception) -> ExpanderError:
        from google.genai import errors

        if isinstance(exc, _TIMEOUTS):
            reason = f"Gemini timed out (no answer within {self.timeout:g}s)"
        elif isinstance(exc, _TRANSPORT):
            reason = f"Gemini could not be reached ({type(exc).__name__})"
        elif isinstance(exc, errors.APIError):
            reason = f"Gemini failed ({exc.code} {exc.status or ''}: {exc.message or ''})"
        else:
            reason = f"Gemini answered something unusable ({type(exc).__name__})"
        return ExpanderError("unavailable", scrub(reason, self._api_key))


def _turn(role: str, text: str):
    from google.genai import types

    return types.Content(role=role, parts=[types.Part(text=text)])


def _enum(value) -> str:
    return str(getattr(value, "value", value))
