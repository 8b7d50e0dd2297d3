"""GET /health (the process is up) and GET /ready (it can take work)."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import QueueDep, RecordsDep, RegistryDep, SettingsDep
from app.schemas.records import Health

router = APIRouter(tags=["health"])


def disk_has_room(path: Path, min_free_mb: int) -> bool:
    """Whether the file system holding ``path`` has at least ``min_free_mb`` MB free
    (always true for 0)."""
    if min_free_mb <= 0:
        return True
    try:
        return shutil.disk_usage(path).free >= min_free_mb * 1024 * 1024
    except OSError:  # the data dir is gone
        return False


@router.get("/health", response_model=Health, summary="Liveness")
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Health, summary="Readiness",
            responses={503: {"model": Health, "description": "Not ready."}})
def ready(request: Request, queue: QueueDep, records: RecordsDep,
          registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """200 when every check holds, else 503 with the failing ones false: `worker`,
    `models`, `accepting` (false while shutting down), `database` (a connection),
    `records` (the records table answers a query) and `disk` (the data dir has at least
    `BILDWERK_MIN_FREE_DISK_MB` free). When several processes share the work, also `redis`
    (the bus answers), and with `BILDWERK_EXECUTOR=ray` `ray` (the cluster answers) and
    `replicas` (at least one Generator replica runs). `device` names the device."""
    checks: dict[str, bool | str] = {"worker": queue.alive, "models": bool(registry.list())}
    lifecycle = getattr(request.app.state, "lifecycle", None)
    checks["accepting"] = not (lifecycle and lifecycle.draining)  # false: shutting down
    try:
        with records.db.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    checks["records"] = records.readable()  # the table itself, not only the connection
    checks["disk"] = disk_has_room(settings.data_dir, settings.min_free_disk_mb)
    services = getattr(request.app.state, "services", None)
    if services is not None and services.bus is not None:
        checks["redis"] = services.bus.ping()  # events and cancels of the other processes
    executor = getattr(request.app.state, "executor", None)
    if executor is not None and hasattr(executor, "ready"):
        checks.update(executor.ready())  # Ray: reachable, and a Generator replica running
    checks["device"] = registry.runtime.name
    ok = all(v for k, v in checks.items() if k != "device")
    body = Health(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
