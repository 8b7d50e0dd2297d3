"""Response models for records, models and health; the feedback request."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.schemas.base import RequestModel, UtcDateTime

FLAG_PATTERN = r"^[a-z0-9_]{1,32}$"
MAX_FLAGS = 16
MAX_COMMENT_CHARS = 2000
# Suggested, not enforced: any name matching FLAG_PATTERN is a flag.
SUGGESTED_FLAGS = ("good", "bad", "use_for_training", "exclude", "wrong_colour", "wrong_shape",
                   "artifact", "nsfw")
Flag = Annotated[str, StringConstraints(pattern=FLAG_PATTERN)]


class RecordOutput(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    index: int
    kind: str
    name: str | None
    sha256: str
    content_type: str | None
    seed: int | None
    width: int | None
    height: int | None
    prompt: str | None
    strength: float | None


class FeedbackRequest(RequestModel):
    """Feedback on a record. It replaces any earlier feedback on the record as a whole: a
    field left out is cleared."""

    rating: int | None = Field(None, ge=1, le=5, description="1 (bad) to 5 (very good).")
    flags: list[Flag] | None = Field(
        None, max_length=MAX_FLAGS,
        description="Up to 16 names of `[a-z0-9_]{1,32}`. Suggested: "
                    + ", ".join(f"`{f}`" for f in SUGGESTED_FLAGS)
                    + ". `bildwerk dataset export` leaves out `exclude` by default.")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)

    @model_validator(mode="after")
    def _something_given(self) -> FeedbackRequest:
        if self.rating is None and not self.flags and self.comment is None:
            raise ValueError("give at least one of `rating`, `flags` or `comment`")
        return self


FEEDBACK_EXAMPLES = {
    "rate": {"summary": "A good picture, for the next fine-tune", "value": {
        "rating": 5, "flags": ["good", "use_for_training"],
        "comment": "The lake sits exactly where the visitor painted it."}},
    "reject": {"summary": "Keep it out of every training set", "value": {
        "rating": 1, "flags": ["wrong_colour", "exclude"]}},
}


class Feedback(BaseModel):
    rating: int | None
    flags: list[str]
    comment: str | None
    at: UtcDateTime
    key_id: str | None = Field(..., description="The key that gave it (null: no key).")


class Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    job_id: str
    endpoint: str
    status: str
    provider: str
    model: str | None
    loras: list | None
    vae: str | None
    scheduler: str | None
    prompt: str
    prompt_translated: str | None
    prompt_expanded: str | None
    prompt_used: str | None
    negative_prompt: str | None
    params: dict
    seeds: list | None
    timings: dict | None
    attempts: list | None = None
    usage: dict | None = None
    result: dict | None = None
    error_code: str | None
    error_message: str | None
    client: dict | None
    api_key_id: str | None = None  # the key that made it (its id; the secret is never kept)
    input_image_sha256: str | None
    mask_sha256: str | None
    mask_applied_sha256: str | None
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    worker: str | None = Field(None, description="The process that ran the job: "
                               "host:pid:id, or ray:<replica>@host:pid on a Ray replica.")
    outputs: list[RecordOutput]
    feedback: Feedback | None = Field(None, description="The latest feedback (POST "
                                      "/records/{id}/feedback); null: none yet.")

    @model_validator(mode="before")
    @classmethod
    def _feedback_from_columns(cls, data):
        """A record row keeps its feedback in ``feedback_*`` columns."""
        if isinstance(data, dict) or getattr(data, "feedback_at", None) is None:
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if name != "feedback"}
        return {**fields, "feedback": {
            "rating": data.feedback_rating, "flags": data.feedback_flags or [],
            "comment": data.feedback_comment, "at": data.feedback_at,
            "key_id": data.feedback_key_id}}


class RecordPage(BaseModel):
    items: list[Record]
    total: int
    limit: int
    offset: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str
    family: str
    variant: str
    format: str
    prediction_type: str
    native_resolution: int
    size_bytes: int
    sha256: str | None = None
    short_hash: str | None = None
    loaded: bool
    resident_bytes: int | None = None
    optimizations: list[str] | None = Field(
        None, description="What the loaded model runs with: sdpa, channels_last, "
        "torch.compile, fp16/bf16 weights, tf32, VAE slicing/tiling (docs/performance.md); "
        "null while not loaded.")
    default: bool
    embedded: bool
    description: str
    context_dim: int | None = None


class LoraInfo(BaseModel):
    id: str
    format: str
    family: str | None
    rank: int | None
    context_dim: int | None
    size_bytes: int


class VaeInfo(BaseModel):
    id: str
    format: str
    latent_channels: int | None
    size_bytes: int
    loaded: bool


class ProviderInfo(BaseModel):
    name: str
    usable: bool
    reason: str | None
    txt2img: bool
    inpaint: bool
    img2img: bool
    models: list[str]
    sizes: list[str] | None
    max_batch: int
    chains: list[str] = []


class SchedulerInfo(BaseModel):
    name: str
    description: str
    default: bool
    max_steps: int | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, bool | str] = {}
