"""GET /styles: the style presets (any valid key may list them)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import PromptsDep
from app.schemas.prompts import StyleInfo

router = APIRouter(tags=["prompts"])


@router.get("/styles", response_model=list[StyleInfo], summary="Style presets")
def list_styles(prompts: PromptsDep) -> list[StyleInfo]:
    """Named presets for `style` on /prompt-expand, /txt2img, /inpaint and /img2seq: a
    template around the prompt, a negative prompt, and recommended steps and guidance."""
    return [StyleInfo(name=p.name, description=p.description, template=p.template,
                      negative_prompt=p.negative_prompt, domain=p.domain, params=p.params)
            for p in prompts.list_styles()]
