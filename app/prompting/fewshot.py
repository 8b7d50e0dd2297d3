"""Few-shot examples for the LLM expanders: worked (request, answer) pairs read from
``*.jsonl`` files (``app/prompting/data/fewshot/`` by default) and shown to the model as
user/assistant turns before the real request."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from app.prompting.llm_answers import item_error
from app.prompting.llm_messages import system_prompt, user_message
from app.prompting.styles import StylePreset
from app.prompting.vocab import DATA_DIR

log = logging.getLogger("bildwerk.prompting.llm")

FEWSHOT_DIR = DATA_DIR / "fewshot"


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
    answer, error = item_error(data.get("answer"))
    if answer is None:
        log.warning("%s: few-shot line skipped (answer %s)", source, error)
        return None
    return Example(idea=data["idea"].strip(), style=style or None, answer=answer, source=source)


__all__ = ["FEWSHOT_DIR", "Example", "FewShot"]
