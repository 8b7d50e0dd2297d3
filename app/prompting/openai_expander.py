"""Prompt expansion with an OpenAI chat model (structured JSON output) via the ``openai`` SDK.

The wish goes to the model as typed (German at the kiosk); the answer's ``translation``
field is its English, returned as ``LLMAnswer.translation`` for the prompt service to
record as the translated wish.

Flow: ``expand`` builds ``[system, few-shot user/assistant pairs..., user]`` and calls
``chat.completions.create`` with ``response_format={"type": "json_schema", "json_schema":
{"name": "prompt_expansions", "strict": True, "schema": ANSWER_SCHEMA}}`` and ``seed``;
:func:`app.prompting.llm_calls.run_with_retry` parses, repairs and asks once more when the answer
is malformed (the retry appends the bad answer as the assistant's turn and a corrective
user message). Sampling: ``temperature``, ``top_p`` and ``max_tokens`` (sent as
``max_completion_tokens``) are sent when set; OpenAI chat has no ``top_k``, so it is ignored.

Errors: network failures, timeouts, 408/409/429 and 5xx are retried by the SDK itself
(``max_retries=retries``), then ``ExpanderError("unavailable")``; other 4xx (auth, bad
request) are "unavailable" at once; ``message.refusal`` or ``finish_reason ==
"content_filter"`` is "refused". The API key only reaches the SDK client and is scrubbed
from every reason. Usage is reported as ``input_tokens``/``output_tokens``/``total_tokens``.
"""

from __future__ import annotations

from typing import Any

from app.prompting.chat_expander import ChatExpander
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

RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "prompt_expansions", "strict": True, "schema": ANSWER_SCHEMA}}


class OpenAIExpander(ChatExpander):
    name = "openai"
    key_env = "OPENAI_API_KEY"
    label = "OpenAI chat"

    def expand(self, idea: str, *, style: StylePreset | None, count: int, seed: int,
               sampling: SamplingOptions) -> LLMAnswer:
        idea = self._checked(idea, count)
        style_name = style.name if style else None
        messages: list[dict[str, str]] = [
            {"role": "system", "content": self.fewshot.system_prompt(style, count)}]
        for example in self.fewshot.pick(style_name):
            asked, answered = self.shot_turns(example)
            messages += [{"role": "user", "content": asked},
                         {"role": "assistant", "content": answered}]
        messages.append({"role": "user", "content": user_message(idea, style_name, count)})
        args: dict[str, Any] = {"model": self.model, "response_format": RESPONSE_FORMAT,
                                "seed": seed}
        for key, value in (("temperature", sampling.temperature), ("top_p", sampling.top_p),
                           ("max_completion_tokens", sampling.max_tokens)):
            if value is not None:
                args[key] = value

        def call(correction: Correction | None) -> Reply:
            extra = [] if correction is None else [
                {"role": "assistant", "content": correction.previous},
                {"role": "user", "content": correction.message}]
            return self._call(messages + extra, args)

        return run_with_retry(call, self._parser(idea, style, seed, count), model=self.model)

    def close(self) -> None:
        with self._lock:
            if self._client_obj is not None:
                self._client_obj.close()
                self._client_obj = None

    # -- one call ------------------------------------------------------------------------
    def _client(self):
        with self._lock:
            if self._client_obj is None:
                import openai

                self._client_obj = openai.OpenAI(api_key=self._api_key, base_url=self._base_url,
                                                 timeout=self.timeout,
                                                 max_retries=self.retries)
            return self._client_obj

    def _call(self, messages: list[dict], args: dict) -> Reply:
        try:
            response = self._client().chat.completions.create(messages=messages, **args)
        except Exception as exc:  # noqa: BLE001 - everything maps to ExpanderError
            raise self._mapped(exc) from None
        model, usage = getattr(response, "model", None), _usage(getattr(response, "usage", None))
        choice = (getattr(response, "choices", None) or [None])[0]
        message = getattr(choice, "message", None)
        if message is None:  # parsed as an empty answer: malformed, asked once more
            return Reply(text="", model=model, usage=usage)
        if getattr(message, "refusal", None):
            raise ExpanderError("refused", scrub(f"OpenAI refused: {message.refusal}",
                                                 self._api_key))
        if choice.finish_reason == "content_filter":
            raise ExpanderError("refused", "OpenAI's content filter stopped the answer")
        return Reply(text=message.content or "", model=model, usage=usage)

    def _mapped(self, exc: Exception) -> ExpanderError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            reason = f"OpenAI timed out (no answer within {self.timeout:g}s)"
        elif isinstance(exc, openai.APIStatusError):
            reason = f"OpenAI failed ({exc.status_code}): {_error_message(exc)}"
        elif isinstance(exc, openai.APIConnectionError):
            reason = "OpenAI could not be reached"
        else:
            reason = f"OpenAI answered something unusable ({type(exc).__name__})"
        return ExpanderError("unavailable", scrub(reason, self._api_key))


def _usage(usage) -> dict | None:
    if usage is None:
        return None
    out = {}
    for ours, theirs in (("input_tokens", "prompt_tokens"),
                         ("output_tokens", "completion_tokens"),
                         ("total_tokens", "total_tokens")):
        value = getattr(usage, theirs, None)
        if isinstance(value, int):
            out[ours] = value
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = getattr(details, "reasoning_tokens", None) if details else None
    if isinstance(reasoning, int) and reasoning:
        out["reasoning_tokens"] = reasoning
    return out or None


def _error_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return type(exc).__name__
