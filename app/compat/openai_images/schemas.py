"""The OpenAI Images API's requests and answers, as the ``openai`` SDK sends and reads them.

Requests name OpenAI's parameters plus Bildwerk's own (:class:`BildwerkOptions`), which
the SDK sends with ``extra_body``. Parameters OpenAI's API knows but Bildwerk cannot honour
(``background``, ``moderation``, ``style``, ``complexity``, ``input_fidelity``) are accepted
and ignored; anything else unknown is a 400, as on OpenAI's API.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.compat.openai_images.options import (
    QUALITY_STEPS,
    SIZE_PATTERN,
    OutputFormat,
    Quality,
)
from app.schemas.base import RequestModel
from app.schemas.generation import MAX_SEED, LoraRef, SchedulerName

_QUALITY_TABLE = ", ".join(f"`{q}` {s}" for q, s in QUALITY_STEPS.items())
_IGNORED = "Accepted and ignored."


class BildwerkOptions(RequestModel):
    """Bildwerk's own parameters (the SDK's ``extra_body``)."""

    seed: int | None = Field(None, ge=-1, le=MAX_SEED,
                             description="Bildwerk: seed of the first image; image i uses "
                             "seed+i. None or -1 draws one.")
    negative_prompt: str = Field("", max_length=4000, description="Bildwerk: what to avoid.")
    steps: int | None = Field(None, ge=1, le=1000, description="Bildwerk: denoising steps; "
                              "overrides `quality`.")
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0,
                                         description="Bildwerk: classifier-free guidance "
                                         "(default 7).")
    scheduler: SchedulerName | None = Field(None, description="Bildwerk: sampler, see "
                                            "GET /schedulers.")
    loras: list[LoraRef] = Field(default_factory=list, max_length=8,
                                 description="Bildwerk: LoRAs for this request. In a form: "
                                 "`loras[][name]`/`loras[][weight]` (as the SDK sends "
                                 "`extra_body`), or JSON text.")


class _Common(BildwerkOptions):
    model: str | None = Field(None, max_length=255, description="A model id from "
                              "GET /v1/models (Bildwerk's models). Default: the server's.")
    n: int | None = Field(None, ge=1, le=10, description="How many images (1-10).")
    response_format: Literal["b64_json", "url"] | None = Field(
        None, description="`b64_json` (default) or `url`: an absolute URL of the stored "
        "PNG, `/blobs/{sha256}` (fetch it with the same API key).")
    output_format: OutputFormat | None = Field(
        None, description="png (default), jpeg or webp, for `b64_json` and streamed images "
        "(`url` always points at the stored PNG).")
    output_compression: int | None = Field(
        None, ge=0, le=100, description="jpeg/webp encoder quality 0-100 (default 100: the "
        "best picture, the largest file).")
    user: str | None = Field(None, max_length=256, description="The end user; recorded.")


class _Prompted(_Common):
    size: str | None = Field(
        None, max_length=16, json_schema_extra={"pattern": SIZE_PATTERN},
        description="WIDTHxHEIGHT, each a multiple of 8 from 64 to 4096, or `auto` "
        "(default).", examples=["512x512", "auto"])
    quality: Quality | None = Field(
        None, description=f"Denoising steps: {_QUALITY_TABLE} (`auto` is the default).")
    stream: bool | None = Field(None, description="Answer with Server-Sent Events: "
                                "`partial_images` previews, then one `completed` event per "
                                "image.")
    partial_images: int | None = Field(None, ge=0, le=3,
                                       description="Step previews to stream (0-3).")
    safety_identifier: str | None = Field(None, max_length=256,
                                          description="The end user; recorded.")
    background: Literal["transparent", "opaque", "auto"] | None = Field(
        None, description=f"{_IGNORED} Images are opaque.")
    complexity: Literal["low", "medium", "high"] | None = Field(None, description=_IGNORED)


class GenerateRequest(_Prompted):
    """POST /v1/images/generations (JSON)."""

    prompt: str = Field(..., min_length=1, max_length=32000,
                        description="What to draw.", examples=["a lighthouse at dusk"])
    moderation: Literal["low", "auto"] | None = Field(None, description=_IGNORED)
    style: Literal["vivid", "natural"] | None = Field(None, description=_IGNORED)


class EditRequest(_Prompted):
    """POST /v1/images/edits (multipart form), without its files."""

    prompt: str = Field(..., min_length=1, max_length=32000,
                        description="What the edited area should show.")
    input_fidelity: Literal["high", "low"] | None = Field(None, description=_IGNORED)
    mask_blur: int | None = Field(None, ge=0, le=64,
                                  description="Bildwerk: blur radius of the area's edge in "
                                  "pixels (default 4); 0 keeps every pixel outside the "
                                  "area unchanged.")
    strength: float | None = Field(None, gt=0.0, le=1.0,
                                   description="Bildwerk: how far to move from the input: "
                                   "default 1.0 inside the area, 0.6 for the whole image "
                                   "when nothing marks an area.")


class VariationRequest(_Common):
    """POST /v1/images/variations (multipart form), without its file."""

    size: str | None = Field(
        None, max_length=16, json_schema_extra={"pattern": SIZE_PATTERN},
        description="WIDTHxHEIGHT or `auto` (default): the image's own size, rounded down "
        "to multiples of 8.")
    prompt: str | None = Field(None, max_length=32000,
                               description="Bildwerk: a prompt to steer the variation; "
                               "default none (a neutral, empty prompt).")
    strength: float | None = Field(None, gt=0.0, le=1.0,
                                   description="Bildwerk: how far to move from the image "
                                   "(default 0.6).")


# -- answers --------------------------------------------------------------------------
class OpenAIImage(BaseModel):
    b64_json: str | None = Field(None, description="The image, base64 (`b64_json`).")
    url: str | None = Field(None, description="Absolute URL of the stored PNG (`url`).")
    revised_prompt: str | None = Field(None, description="The prompt actually used, where "
                                       "it differs from the one sent.")


class OpenAIInputTokens(BaseModel):
    image_tokens: int = 0
    text_tokens: int = 0


class OpenAIUsage(BaseModel):
    """Bildwerk does not count tokens: all zero, present because the SDK's streaming
    events require it."""

    input_tokens: int = 0
    input_tokens_details: OpenAIInputTokens = Field(default_factory=OpenAIInputTokens)
    output_tokens: int = 0
    total_tokens: int = 0


class OpenAIImagesResponse(BaseModel):
    created: int = Field(..., description="Unix time of the answer.")
    data: list[OpenAIImage]
    background: Literal["transparent", "opaque"] | None = None
    output_format: OutputFormat | None = None
    quality: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    size: str | None = Field(None, description="The output's WIDTHxHEIGHT.")
    usage: OpenAIUsage | None = None
    safety_identifier: str | None = None


class OpenAIModel(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(..., examples=["bildwerk-micro"])
    object: Literal["model"] = "model"
    created: int = Field(..., description="Unix time the model's files were written.")
    owned_by: str = Field("bildwerk")
    family: str | None = Field(None, description="Bildwerk: sd15, sd21 or sdxl.")
    variant: str | None = Field(None, description="Bildwerk: base, inpaint or refiner.")
    native_resolution: int | None = Field(None, description="Bildwerk: the `auto` size.")


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIError(BaseModel):
    message: str = Field(..., examples=["size '100x100': width and height must be multiples "
                                        "of 8"])
    type: str = Field(..., examples=["invalid_request_error"])
    param: str | None = Field(None, examples=["size"])
    code: str | None = Field(None, examples=["invalid_input"])


class OpenAIErrorEnvelope(BaseModel):
    error: OpenAIError
