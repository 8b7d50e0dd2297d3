"""Response models for records, models and health."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


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
    input_image_sha256: str | None
    mask_sha256: str | None
    mask_applied_sha256: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outputs: list[RecordOutput]


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
