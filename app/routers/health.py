"""GET /health (the process is up) and GET /ready (it can take work)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import QueueDep, RecordsDep, RegistryDep
from app.schemas.records import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness")
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Health, summary="Readiness",
            responses={503: {"model": Health, "description": "Not ready."}})
def ready(request: Request, queue: QueueDep, records: RecordsDep,
          registry: RegistryDep) -> JSONResponse:
    checks: dict[str, bool | str] = {"worker": queue.alive, "models": bool(registry.list())}
    lifecycle = getattr(request.app.state, "lifecycle", None)
    checks["accepting"] = not (lifecycle and lifecycle.draining)  # false: shutting down
    try:
        with records.db.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    checks["device"] = registry.runtime.name
    ok = all(v for k, v in checks.items() if k != "device")
    body = Health(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
