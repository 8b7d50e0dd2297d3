"""Request models for model administration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.schemas.base import RequestModel
from app.schemas.generation import LoraRef


class MergeRequest(RequestModel):
    """Merge checkpoints of one family into a new single-file checkpoint."""

    a: str = Field(..., description="Model id of A.")
    b: str = Field(..., description="Model id of B.")
    c: str | None = Field(None, description="Model id of C (add_difference only).")
    method: Literal["weighted_sum", "add_difference"] = Field(
        "weighted_sum", description="weighted_sum: (1-alpha)·A + alpha·B. add_difference: "
        "A + alpha·(B - C).")
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    loras: list[LoraRef] = Field(default_factory=list, max_length=8,
                                 description="LoRAs to fuse into the result.")
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                      description="Id of the new model; written as <name>.safetensors.",
                      examples=["my-merge"])
