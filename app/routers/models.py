"""Models, LoRAs, VAEs and schedulers: what can be asked for, and model administration."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.deps import ModelsDep, RegistryDep
from app.pipelines.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from app.schemas.errors import BAD_BODY, FORBIDDEN, error_responses
from app.schemas.models import MergeRequest
from app.schemas.records import LoraInfo, ModelInfo, SchedulerInfo, VaeInfo
from app.security.auth import require

router = APIRouter(tags=["models"])
_UNKNOWN = error_responses(_404="Unknown model.")
# The GETs need any API key (app/main.py); administration needs the admin scope.
_ADMIN = [Depends(require("admin"))]


@router.get("/models", response_model=list[ModelInfo], summary="Models this server can use")
def list_models(models: ModelsDep) -> list[dict]:
    """Every discovered checkpoint with its probed family, variant, prediction type and
    native resolution, whether it is loaded, its size and content hash (computed in the
    background after start; `null` until then)."""
    return models.list()


@router.post("/models/refresh", response_model=list[ModelInfo], dependencies=_ADMIN,
             responses=FORBIDDEN, summary="Scan the models dir again")
async def refresh_models(models: ModelsDep) -> list[dict]:
    return await models.refresh()


@router.post("/models/merge", response_model=ModelInfo, status_code=201, dependencies=_ADMIN,
             responses={**FORBIDDEN, **BAD_BODY, **error_responses(
                 _409="A model with that name exists.",
                 _422="Unknown models, LoRAs, or families that differ.")},
             summary="Merge checkpoints into a new single-file model")
async def merge_models(body: MergeRequest, models: ModelsDep) -> dict:
    """Weighted sum or add-difference of checkpoints of one family, optionally with LoRAs
    fused in, written as `<name>.safetensors` in the models dir and registered at once."""
    return await models.merge(body)


@router.post("/models/{model_id:path}/load", response_model=ModelInfo, dependencies=_ADMIN,
             responses={**_UNKNOWN, **FORBIDDEN, **error_responses(
                 _429="Queue full.", _500="The model failed to load.",
                 _503="The model does not fit the memory budget.")},
             summary="Load a model now (evicting least-recently-used ones if needed)")
async def load_model(model_id: str, models: ModelsDep) -> dict:
    return await models.load(model_id)


@router.post("/models/{model_id:path}/unload", response_model=ModelInfo, dependencies=_ADMIN,
             responses={**_UNKNOWN, **FORBIDDEN}, summary="Unload a model and free its memory")
async def unload_model(model_id: str, models: ModelsDep) -> dict:
    return await models.unload(model_id)


@router.get("/models/{model_id:path}", response_model=ModelInfo, responses=_UNKNOWN,
            summary="One model")
def get_model(model_id: str, models: ModelsDep) -> dict:
    return models.get(model_id)


@router.get("/loras", response_model=list[LoraInfo], summary="LoRAs under <models>/loras")
def list_loras(models: ModelsDep) -> list[dict]:
    return [{"id": e.id, "format": e.format, "family": e.family, "rank": e.rank,
             "context_dim": e.context_dim, "size_bytes": e.size_bytes}
            for e in models.loras.list()]


@router.get("/vaes", response_model=list[VaeInfo], summary="VAEs under <models>/vae")
def list_vaes(registry: RegistryDep) -> list[dict]:
    return [{"id": v.id, "format": v.format, "latent_channels": v.latent_channels,
             "size_bytes": v.size_bytes, "loaded": registry.vae_cache.is_loaded(v.id)}
            for v in registry.vaes()]


@router.get("/schedulers", response_model=list[SchedulerInfo],
            summary="Scheduler names accepted by `scheduler`")
def list_schedulers() -> list[SchedulerInfo]:
    return [SchedulerInfo(name=name, description=spec.description,
                          default=name == DEFAULT_SCHEDULER, max_steps=spec.max_steps)
            for name, spec in SCHEDULERS.items()]
