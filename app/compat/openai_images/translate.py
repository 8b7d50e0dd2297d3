"""OpenAI requests -> Bildwerk's request models (``app/schemas/generation.py``).

Nothing here generates: each function fills one of our request models, which the native
routes' services check, plan, record and run as they always do.

- generations -> ``Txt2ImgRequest``;
- edits with an area (a mask, or the image's transparent pixels) -> ``InpaintRequest``
  with the area converted to our mask convention (:mod:`.masks`);
- edits without any area -> ``Img2ImgRequest`` of the whole image at
  :data:`EDIT_STRENGTH` (what OpenAI's GPT image models do with an unmasked edit);
- variations -> ``Img2ImgRequest`` at :data:`VARIATION_STRENGTH` with a neutral prompt.
"""

from __future__ import annotations

import base64
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from app.compat.openai_images.masks import EditArea
from app.compat.openai_images.options import parse_size, steps_for
from app.compat.openai_images.schemas import (
    BildwerkOptions,
    EditRequest,
    GenerateRequest,
    VariationRequest,
)
from app.errors import invalid_input_from
from app.schemas.generation import Img2ImgRequest, InpaintRequest, Txt2ImgRequest

M = TypeVar("M", bound=BaseModel)

VARIATION_STRENGTH = 0.6
EDIT_STRENGTH = 0.6  # an edit with nothing marked: img2img of the whole image
# The variation's prompt: CLIP reads a blank text as the empty, unconditional prompt, so
# guidance has nothing to pull towards ("prompt" needs at least one character).
NEUTRAL_PROMPT = " "
_OUR_PARAMS = {"width": "size", "height": "size", "num_images": "n"}


def recorded_client(client: dict, user: str | None,
                    safety_identifier: str | None = None) -> dict:
    """The record's ``client``: who called, through which API, for which end user."""
    out = {**client, "api": "openai", "user": user}
    if safety_identifier:
        out["safety_identifier"] = safety_identifier
    return out


def txt2img(req: GenerateRequest) -> Txt2ImgRequest:
    return _ours(Txt2ImgRequest, req, prompt=req.prompt, **_size(req.size),
                 steps=steps_for(req.quality, req.steps))


def inpaint(req: EditRequest, area: EditArea) -> InpaintRequest:
    assert area.mask is not None
    return _ours(InpaintRequest, req, prompt=req.prompt, image=_b64(area.image),
                 mask=_b64(area.mask), **_size(req.size),
                 steps=steps_for(req.quality, req.steps), mask_blur=req.mask_blur,
                 strength=req.strength)


def edit_whole(req: EditRequest, image: bytes) -> Img2ImgRequest:
    return _ours(Img2ImgRequest, req, prompt=req.prompt, image=_b64(image), **_size(req.size),
                 steps=steps_for(req.quality, req.steps),
                 strength=req.strength or EDIT_STRENGTH)


def variation(req: VariationRequest, image: bytes) -> Img2ImgRequest:
    return _ours(Img2ImgRequest, req, prompt=req.prompt or NEUTRAL_PROMPT, image=_b64(image),
                 **_size(req.size), steps=steps_for(None, req.steps),
                 strength=req.strength or VARIATION_STRENGTH)


def _size(size: str | None) -> dict:
    parsed = parse_size(size)
    return {} if parsed is None else {"width": parsed[0], "height": parsed[1]}


def _ours(model: type[M], req: BildwerkOptions, **values) -> M:
    """``model`` from the OpenAI request's shared fields and ``values``; a value left out
    (None) takes our default."""
    shared = {"model": getattr(req, "model", None), "num_images": getattr(req, "n", None) or 1,
              "seed": req.seed, "negative_prompt": req.negative_prompt,
              "guidance_scale": req.guidance_scale, "scheduler": req.scheduler,
              "loras": [lora.model_dump() for lora in req.loras]}
    data = {k: v for k, v in {**shared, **values}.items() if v is not None}
    try:
        return model.model_validate(data)
    except ValidationError as exc:  # e.g. a prompt longer than ours may be
        raise invalid_input_from(exc, _OUR_PARAMS) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
