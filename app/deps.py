"""FastAPI dependencies: the heavy objects built in the lifespan, reached through
``Annotated`` aliases so handlers just declare what they need."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.jobs.queue import JobQueue
from app.persistence.blobs import BlobStore
from app.persistence.records import RecordRepository
from app.pipelines.registry import ModelRegistry
from app.providers.registry import ProviderSet
from app.security.auth import Principal, authenticate
from app.security.keys import ApiKeyRepository
from app.services.generation import GenerationService
from app.services.jobs import JobService
from app.services.kiosk import KioskService
from app.services.models import ModelService
from app.services.prompting import PromptService
from app.services.sequences import SequenceService
from app.services.upscale import UpscaleService


def _state(request: Request):
    return request.app.state


def get_settings(request: Request) -> Settings:
    return _state(request).settings


def get_registry(request: Request) -> ModelRegistry:
    return _state(request).registry


def get_queue(request: Request) -> JobQueue:
    return _state(request).queue


def get_records(request: Request) -> RecordRepository:
    return _state(request).records


def get_blobs(request: Request) -> BlobStore:
    return _state(request).blobs


def get_generation(request: Request) -> GenerationService:
    return _state(request).generation


def get_kiosk(request: Request) -> KioskService:
    return _state(request).kiosk


def get_sequences(request: Request) -> SequenceService:
    return _state(request).sequences


def get_models(request: Request) -> ModelService:
    return _state(request).models


def get_providers(request: Request) -> ProviderSet:
    return _state(request).providers


def get_prompts(request: Request) -> PromptService:
    return _state(request).prompts


def get_jobs(request: Request) -> JobService:
    return _state(request).jobs


def get_upscale(request: Request) -> UpscaleService:
    return _state(request).upscale


def get_keys(request: Request) -> ApiKeyRepository:
    return _state(request).keys


def client_of(request: Request, principal: Principal | None) -> dict:
    """Who asked, as the record keeps it: the key's id and name, never the key."""
    return {"host": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent"),
            "key_id": principal.key_id if principal else None,
            "key_name": principal.name if principal else None,
            "admin": principal.admin if principal else False}


def client_info(request: Request,
                principal: Annotated[Principal, Depends(authenticate)]) -> dict:
    return client_of(request, principal)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
RecordsDep = Annotated[RecordRepository, Depends(get_records)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
SequencesDep = Annotated[SequenceService, Depends(get_sequences)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
ProvidersDep = Annotated[ProviderSet, Depends(get_providers)]
ModelsDep = Annotated[ModelService, Depends(get_models)]
ClientDep = Annotated[dict, Depends(client_info)]
PromptsDep = Annotated[PromptService, Depends(get_prompts)]
KeysDep = Annotated[ApiKeyRepository, Depends(get_keys)]
UpscaleDep = Annotated[UpscaleService, Depends(get_upscale)]
KioskDep = Annotated[KioskService, Depends(get_kiosk)]
