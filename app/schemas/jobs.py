"""Job status models, shared by every generation route."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.base import UtcDateTime
from app.schemas.generation import GenerationResult
from app.schemas.sequences import SequenceResult
from app.schemas.upscale import UpscaleResult


class JobProgress(BaseModel):
    step: int = Field(..., description="Denoising step within the current image or frame.")
    total: int
    frame: int | None = Field(None, description="img2seq: the frame being made (0-based).")
    frames: int | None = Field(None, description="img2seq: how many frames in all.")


class JobErrorOut(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobStatus(BaseModel):
    job_id: str
    record_id: str
    endpoint: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted",
                    "rejected"]
    stage: str
    progress: JobProgress
    created_at: UtcDateTime | None = None
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    result: GenerationResult | SequenceResult | UpscaleResult | None = Field(
        None, description="The result when finished; for a cancelled img2seq, the frames "
        "made before the cancel.")
    error: JobErrorOut | None = None
