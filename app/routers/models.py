"""GET /models and GET /schedulers."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RegistryDep
from app.pipelines.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from app.schemas.records import ModelInfo, SchedulerInfo

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo], summary="Models this server can use")
def list_models(registry: RegistryDep) -> list[ModelInfo]:
    default = registry.default_id
    return [ModelInfo(id=e.id, family=e.family, variant=e.variant, format=e.format,
                      prediction_type=e.prediction_type, native_resolution=e.native_resolution,
                      size_bytes=e.size_bytes, loaded=registry.is_loaded(e.id),
                      default=e.id == default, embedded=e.embedded, description=e.description)
            for e in registry.list()]


@router.get("/schedulers", response_model=list[SchedulerInfo],
            summary="Scheduler names accepted by `scheduler`")
def list_schedulers() -> list[SchedulerInfo]:
    return [SchedulerInfo(name=name, description=spec.description,
                          default=name == DEFAULT_SCHEDULER)
            for name, spec in SCHEDULERS.items()]
