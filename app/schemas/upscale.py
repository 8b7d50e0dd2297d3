"""Request and response models of POST /upscale and GET /upscalers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.base import RequestModel
from app.schemas.generation import EXAMPLE_IMAGE, BlobRef, ResultBase
from app.schemas.webhooks import WebhookSpec


class UpscaleRequest(RequestModel):
    # The rule of _one_target (scale, or width and height, or neither) is in the field
    # descriptions only: a oneOf with a "neither" branch trips Schemathesis' form coverage.

    image: str = Field(..., description="Image to upscale: a data-URL, raw base64, or the "
                       "sha256 of a stored blob.")
    upscaler: str = Field("Lanczos", max_length=255,
                          description="An upscaler from GET /upscalers: `Lanczos`, `Nearest`, "
                          "or a model file's name (case does not matter).")
    scale: float | None = Field(None, gt=0, le=16, description="Factor for both sides. Give "
                                "scale, or width and height, or neither: then the model's "
                                "own scale (2 for Lanczos/Nearest).")
    width: int | None = Field(None, ge=1, le=16384,
                              description="Exact output width; give width and height, or "
                              "scale, not both.")
    height: int | None = Field(None, ge=1, le=16384, description="Exact output height.")
    webhook: WebhookSpec | None = Field(
        None, description="POST the job's events (started, completed, ...) to this URL, "
        "signed (Standard Webhooks). See docs/webhooks.md.")

    @model_validator(mode="after")
    def _one_target(self) -> UpscaleRequest:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        if self.width is not None and self.scale is not None:
            raise ValueError("give scale or width/height, not both")
        return self

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width and self.height else None


class UpscaledImage(BaseModel):
    sha256: str
    url: str
    width: int
    height: int
    content_type: str = "image/png"


class UpscaleResult(ResultBase):
    """A finished upscale. ``model`` is the upscaler's name."""

    images: list[UpscaledImage]
    input: BlobRef
    parameters: dict
    timings: dict


class UpscalerOut(BaseModel):
    name: str
    kind: Literal["builtin", "model"]
    scale: float | None = Field(None, description="The model's scale: from its file name "
                                "until it is loaded, then the model's own. None for the "
                                "built-ins, which resize to any scale.")
    path: str | None = Field(None, description="The model file, relative to "
                             "BILDWERK_MODELS_DIR/upscalers.")
    size_bytes: int | None = None
    loaded: bool = False


UPSCALE_EXAMPLES = {
    "lanczos": {"summary": "Twice the size with Lanczos", "value": {
        "image": EXAMPLE_IMAGE, "upscaler": "Lanczos", "scale": 2}},
    "exact": {"summary": "To an exact size", "value": {
        "image": EXAMPLE_IMAGE, "upscaler": "Nearest", "width": 256, "height": 200}},
}
