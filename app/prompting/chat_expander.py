"""What the LLM prompt expanders (``openai_expander``, ``gemini_expander``) share.

An expander's ``expand(idea, style=, count=, seed=, sampling=)`` goes through four steps:

1. **Ask**: :func:`~app.prompting.llm_messages.system_prompt` (the task, the rules, the
   style), few-shot user/assistant turns from :class:`~app.prompting.fewshot.FewShot` and
   :func:`~app.prompting.llm_messages.user_message` (``Wish:``, ``Style:``, ``Count:``
   lines), with :data:`~app.prompting.llm_answers.ANSWER_SCHEMA` as the structured-output
   schema, and the request's :class:`~app.prompting.llm_calls.SamplingOptions`.
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
   list, calls made, whether JSON had to be repaired, usage summed over the calls and the
   raw answer texts (for the record).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from app.prompting.fewshot import FewShot
from app.prompting.llm_answers import parse_answer, to_expansions
from app.prompting.llm_calls import ExpanderError
from app.prompting.llm_messages import check_request
from app.prompting.local_expander import Expansion
from app.prompting.styles import StylePreset


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


__all__ = ["ChatExpander"]
