"""Ideas for prompt batches without a wish (``bildwerk prompts N`` with no ``--idea``): a
subject, sometimes a detail, and a setting from ``data/themes.json``, drawn with a seeded
``random.Random`` so a batch can be made again."""

from __future__ import annotations

import json
import random
from functools import lru_cache

from app.prompting.vocab import DATA_DIR


@lru_cache(maxsize=1)
def _themes() -> dict:
    return json.loads((DATA_DIR / "themes.json").read_text(encoding="utf-8"))


def suggest_ideas(n: int, seed: int) -> list[str]:
    """``n`` ideas; idea ``i`` depends only on ``seed + i``."""
    themes = _themes()
    ideas = []
    for i in range(n):
        rng = random.Random(f"bildwerk-idea|{seed + i}")
        parts = [rng.choice(themes["subjects"])]
        if rng.random() < 0.5:
            parts.append(rng.choice(themes["details"]))
        parts.append(rng.choice(themes["settings"]))
        ideas.append(" ".join(parts))
    return ideas
