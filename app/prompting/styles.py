"""Style presets: a prompt template with a ``{prompt}`` placeholder, a negative prompt and
recommended generation parameters, loaded from ``data/styles.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import InvalidInput
from app.prompting.vocab import (
    DATA_DIR,
    MAX_CONTENT_TOKENS,
    count_tokens,
    fit_negative,
    join_terms,
    merge_terms,
    split_terms,
    truncate_to_tokens,
)

PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class StylePreset:
    name: str
    description: str
    template: str
    negative_prompt: str
    domain: str = "general"
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int | None:
        return self.params.get("steps")

    @property
    def guidance_scale(self) -> float | None:
        return self.params.get("guidance_scale")

    def _parts(self) -> tuple[list[str], str, list[str]]:
        """(terms before the anchor, the anchor containing {prompt}, terms after it)."""
        parts = [p.strip() for p in self.template.split(",")]
        idx = next(i for i, p in enumerate(parts) if PLACEHOLDER in p)
        return [p for p in parts[:idx] if p], parts[idx], [p for p in parts[idx + 1:] if p]

    def terms(self) -> list[str]:
        """The style's own terms, most important first, without the user's prompt."""
        before, anchor, after = self._parts()
        rest = anchor.replace(PLACEHOLDER, "").strip(" ,")
        return [*before, *([rest] if rest else []), *after]

    def render(self, prompt: str, limit: int = MAX_CONTENT_TOKENS) -> str:
        """Fill the template; drop style terms from the end until it fits ``limit`` tokens.

        The user's prompt is never dropped; if it does not fit even with the bare anchor
        it is truncated at a word boundary."""
        before, anchor, after = self._parts()
        anchor_overhead = count_tokens(anchor.replace(PLACEHOLDER, "").strip())
        prompt, _ = truncate_to_tokens(prompt, max(1, limit - anchor_overhead))
        droppable = [*before, *after]
        n_before = len(before)
        while True:
            kept_before = droppable[: min(n_before, len(droppable))]
            kept_after = droppable[n_before:]
            text = join_terms([*kept_before, anchor.replace(PLACEHOLDER, prompt), *kept_after])
            if count_tokens(text) <= limit or not droppable:
                return text
            # Drop trailing terms first, then the leading ones from the outside in.
            if kept_after:
                droppable.pop()
            else:
                droppable.pop(0)
                n_before -= 1


class StyleBook:
    """The set of style presets. ``StyleBook.load()`` reads the shipped ``styles.json``."""

    def __init__(self, presets: list[StylePreset]) -> None:
        self._presets = {p.name: p for p in presets}

    @classmethod
    def load(
        cls, path: str | Path | None = None, negatives_path: str | Path | None = None
    ) -> StyleBook:
        path = Path(path) if path else DATA_DIR / "styles.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        neg_file = Path(negatives_path) if negatives_path else path.parent / "negative_presets.json"
        negatives = json.loads(neg_file.read_text(encoding="utf-8")) if neg_file.exists() else {}
        presets = []
        for entry in data["styles"]:
            template = entry["template"]
            if PLACEHOLDER not in template:
                raise ValueError(f"style {entry['name']!r}: template lacks {PLACEHOLDER}")
            base = negatives.get(entry.get("negative_preset", ""), "")
            negative = join_terms(
                merge_terms(split_terms(entry.get("negative_prompt", "")), split_terms(base))
            )
            presets.append(
                StylePreset(
                    name=entry["name"],
                    description=entry.get("description", ""),
                    template=template,
                    negative_prompt=fit_negative(negative),
                    domain=entry.get("domain", "general"),
                    params=dict(entry.get("params") or {}),
                )
            )
        return cls(presets)

    def names(self) -> list[str]:
        return list(self._presets)

    def __contains__(self, name: object) -> bool:
        return name in self._presets

    def get(self, name: str) -> StylePreset:
        try:
            return self._presets[name]
        except KeyError:
            raise InvalidInput(
                f"unknown style {name!r}; available styles: {', '.join(self.names())}",
                param="style",
            ) from None

    def apply(self, prompt: str, negative: str | None, name: str) -> tuple[str, str]:
        """Apply preset ``name`` to a prompt and negative prompt; both fit 75 CLIP tokens.

        The caller's negative terms come first; the style's are appended (deduplicated) and
        trimmed from the end when the window is full."""
        preset = self.get(name)
        styled = preset.render(prompt)
        merged = merge_terms(split_terms(negative or ""), split_terms(preset.negative_prompt))
        return styled, fit_negative(join_terms(merged))
