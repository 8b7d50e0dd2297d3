"""What an LLM expander says to the model: the system prompt (the task, the rules, the
style, the ``translation`` field), the request (``Wish:``, ``Style:``, ``Count:`` lines;
the wish as the visitor typed it, so the model translates it itself) and the corrective
message of a second call; and the input check every expander applies first."""

from __future__ import annotations

from app.errors import InvalidInput
from app.prompting.local_expander import MAX_COUNT
from app.prompting.styles import StylePreset


def system_prompt(style: StylePreset | None, count: int) -> str:
    """The task and its rules; with a style, its template and negative prompt."""
    lines = [
        "You write prompts for Stable Diffusion. Turn the user's wish into exactly "
        f"{count} different prompt suggestions.",
        "Rules:",
        "- Always write in English, whatever language the wish is in. Translate the wish "
        "faithfully; keep place names as written.",
        "- translation: the wish itself in English, translated faithfully as one plain "
        "phrase or sentence: nothing added, nothing left out, no German word left, place "
        "names as written (Olpe, Bigge, Sauerland). If the wish is already English, repeat "
        "it.",
        "- prompt: comma-separated Stable Diffusion terms, not sentences. The user's "
        "subject comes first, then medium, setting, details, lighting and composition. "
        "At most 60 words. No weights, brackets or quotes.",
        "- negative_prompt: comma-separated terms for what must not appear (flaws, "
        "unwanted elements), at most 30 words.",
        "- title: 2 to 6 words. description: one sentence describing the picture.",
        "- metatags: 3 to 8 lowercase tags of one to three words.",
        "- The suggestions differ in mood, time of day, light or composition; all keep "
        "the user's subject.",
        '- Answer with JSON only, {"translation": "...", "prompts": [...]}, exactly as the '
        "schema says: no commentary, no code fences.",
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


__all__ = ["check_request", "corrective_message", "system_prompt", "user_message"]
