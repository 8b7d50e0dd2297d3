"""Request and response models for POST /img2seq."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.imaging.packaging import PACKAGE_KINDS
from app.schemas.base import RequestModel
from app.schemas.generation import (
    EXAMPLE_IMAGE,
    MAX_SEED,
    ModelChoice,
    PromptOptions,
    ResultBase,
)
from app.schemas.webhooks import WebhookSpec

FloatSchedule = float | list[float] | dict[int, float]
PackageKind = Literal[PACKAGE_KINDS]  # type: ignore[valid-type]


class Motion(RequestModel):
    """2D motion applied to the source of every frame after the first. Each field is a
    constant, one value per frame, or keyframes ``{frame: value}`` (linear in between)."""

    zoom: FloatSchedule = Field(1.0, description="Scale per frame; 1.02 moves in by 2%.")
    pan_x: FloatSchedule = Field(0.0, description="Pixels per frame; + moves content right.")
    pan_y: FloatSchedule = Field(0.0, description="Pixels per frame; + moves content down.")
    rotate: FloatSchedule = Field(0.0, description="Degrees per frame, counter-clockwise.")


class Img2SeqRequest(PromptOptions, ModelChoice):
    """One init image into an ordered sequence of frames."""

    # The rule of _one_prompt_source, in the schema too (so generated clients know it).
    model_config = ConfigDict(json_schema_extra={
        "oneOf": [{"required": ["prompt"]}, {"required": ["prompt_schedule"]}]})

    image: str = Field(..., description="Init image: a data-URL, raw base64, or a blob sha256.")
    prompt: str | None = Field(None, min_length=1, max_length=4000,
                               description="One prompt for every frame (or use prompt_schedule).")
    prompt_schedule: dict[int, str] | None = Field(
        None, description="Keyframes {frame: prompt}, frames counted from 0. Between "
        "keyframes the prompt embeddings are interpolated.",
        examples=[{"0": "a castle in spring", "7": "a castle in winter"}])
    negative_prompt: str = Field("", max_length=4000)
    frames: int = Field(8, ge=1, le=10000, description="Frames to make (bounded by the server).")
    fps: int = Field(8, ge=1, le=60, description="Playback rate of the GIF/WebP/MP4 packages.")
    strength: FloatSchedule = Field(
        0.5, description="Denoising strength per frame: a constant, one value per frame, or "
        "keyframes {frame: strength}.")
    mode: Literal["loopback", "independent"] = Field(
        "loopback", description="loopback: each frame starts from the previous output. "
        "independent: each frame starts from the init image.")
    seed: int | None = Field(None, ge=-1, le=MAX_SEED, description="First frame's seed.")
    seed_policy: Literal["fixed", "increment", "random"] = Field(
        "increment", description="fixed: every frame uses seed. increment: frame i uses "
        "seed+i. random: a fresh seed per frame. Every seed is returned and recorded.")
    motion: Motion | None = Field(None, description="Optional 2D motion before each frame.")
    webhook: WebhookSpec | None = Field(
        None, description="POST the job's events (started, completed, ...) to this URL, "
        "signed (Standard Webhooks). See docs/webhooks.md.")
    color_coherence: bool = Field(
        False, description="Match every frame's histogram to the first frame's.")
    width: int | None = Field(None, ge=64, le=4096, multiple_of=8,
                              description="Frame width. Default: the init image's, rounded to 8.")
    height: int | None = Field(None, ge=64, le=4096, multiple_of=8)
    steps: int = Field(25, ge=1, le=1000)
    guidance_scale: float = Field(7.0, ge=0.0, le=50.0)
    packages: list[PackageKind] = Field(
        default_factory=list, description="Packages to build: zip, sheet, strip, gif, webp, mp4.")

    @model_validator(mode="after")
    def _one_prompt_source(self) -> Img2SeqRequest:
        if (self.prompt is None) == (self.prompt_schedule is None):
            raise ValueError("give either prompt or prompt_schedule")
        if self.prompt_schedule is not None and any(
                not p.strip() for p in self.prompt_schedule.values()):
            raise ValueError("prompt_schedule prompts must not be empty")
        return self


IMG2SEQ_EXAMPLES = {
    "loop": {"summary": "A short loopback sequence as a GIF", "value": {
        "image": EXAMPLE_IMAGE, "prompt": "a harbour town at dusk", "frames": 6,
        "strength": 0.45, "seed": 1, "steps": 12, "width": 128, "height": 128,
        "mode": "loopback", "motion": {"zoom": 1.03}, "color_coherence": True,
        "packages": ["gif", "zip"]}},
    "schedule": {"summary": "A keyframed prompt schedule, every package", "value": {
        "image": EXAMPLE_IMAGE, "prompt_schedule": {"0": "a forest in spring",
                                                    "5": "a forest in winter"},
        "frames": 6, "strength": {"0": 0.3, "5": 0.6}, "seed": 3, "seed_policy": "fixed",
        "mode": "independent", "steps": 10, "width": 64, "height": 64,
        "packages": ["zip", "sheet", "strip", "gif", "webp", "mp4"]}},
}


class FrameOut(BaseModel):
    index: int
    name: str
    sha256: str
    url: str
    width: int
    height: int
    seed: int
    strength: float
    prompt: str
    prompt_to: str | None = None
    prompt_weight: float = 0.0


class PackageOut(BaseModel):
    kind: str
    name: str
    sha256: str
    url: str
    content_type: str
    size: int


class SequenceResult(ResultBase):
    """A finished (or, with status cancelled, partial) image sequence."""

    frames: list[FrameOut]
    packages: list[PackageOut]
    fps: int
    parameters: dict
    timings: dict
