"""The model calls of one LLM expansion: the sampling options sent, calling once and once
more on a malformed answer (:func:`run_with_retry`), the usage summed over the calls, and
what comes back (:class:`LLMAnswer`) or goes wrong (:class:`ExpanderError`).

Network failures, timeouts and 5xx are retried by the SDK itself (bounded by the
expander's ``retries``) before a call raises ``ExpanderError("unavailable")``; a malformed
answer gets exactly one more call that carries the bad answer and a corrective message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.prompting.llm_messages import corrective_message
from app.prompting.local_expander import Expansion

log = logging.getLogger("bildwerk.prompting.llm")

RAW_LIMIT = 2000  # characters of each raw answer kept for the record
MAX_REASON = 300


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling settings an expander sends; ``None`` leaves the provider's default (the
    field is not sent). Built from the request's :class:`app.schemas.prompts.Sampling`."""

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
    # the model's English translation of the wish (the answer's "translation" field), or
    # None when it sent none that is usable
    translation: str | None = None


Parse = Callable[[str], "tuple[list[Expansion], bool, str | None]"]


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


def run_with_retry(call: Callable[[Correction | None], Reply], parse: Parse,
                   *, model: str) -> LLMAnswer:
    """Call once; on a malformed answer call once more with a :class:`Correction`.

    ``call`` raises :class:`ExpanderError` ("unavailable", "refused") itself, after the
    SDK's own bounded retries; ``parse`` returns (expansions, repaired, translation) or
    raises ``ExpanderError("malformed")``. Every error leaves with ``attempts`` and ``raw``
    filled in."""
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
            expansions, repaired, translation = parse(reply.text)
        except ExpanderError as exc:
            exc.attempts, exc.raw = attempt, list(raw)
            if attempt == 2:
                raise
            log.info("LLM answer malformed (%s); asking once more", exc.reason)
            correction = Correction(previous=reply.text[:RAW_LIMIT], error=exc.reason)
            continue
        return LLMAnswer(expansions=expansions, model=reply.model or model, calls=attempt,
                         repaired=repaired, usage=usage or None, raw=raw,
                         translation=translation)
    raise AssertionError("unreachable")  # pragma: no cover


def _add_usage(total: dict, usage: dict | None) -> None:
    """Add a call's integer usage counters (tokens) to ``total``."""
    for key, value in (usage or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the secret, cut to a short reason."""
    if secret:
        text = text.replace(secret, "***")
    return clip_reason(text)


def clip_reason(text: str) -> str:
    """``text`` cut to ``MAX_REASON`` characters (an error's reason stays short)."""
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


__all__ = [
    "Correction", "ExpanderError", "LLMAnswer", "Parse", "Reply", "SamplingOptions",
    "clip_reason",
    "run_with_retry", "scrub",
]
