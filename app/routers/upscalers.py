"""GET /upscalers: a catalogue, for any key (like /models and /loras)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import UpscaleDep
from app.schemas.upscale import UpscalerOut

router = APIRouter(tags=["upscaling"])


@router.get("/upscalers", response_model=list[UpscalerOut], summary="List upscalers")
def list_upscalers(service: UpscaleDep) -> list[dict]:
    """The built-ins and every model file in `BILDWERK_MODELS_DIR/upscalers/` (`.pth`,
    `.pt`, `.safetensors`, `.ckpt`), rescanned on each call. A model's scale comes from
    its file name until it is loaded."""
    return service.upscalers()
