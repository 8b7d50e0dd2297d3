"""GET /metrics: Prometheus metrics (app/observability/metrics.py), while
``BILDWERK_METRICS`` is on (the default; off, the route does not exist: 404).

Who may scrape: an API key with the ``admin`` scope, or a loopback caller without a key
whom the auth mode lets in (``BILDWERK_AUTH_MODE=auto``: a Prometheus on the same host,
which cannot easily send a key; ``open`` lets everyone in as admin anyway). A non-admin
key gets 403 even from loopback, and ``BILDWERK_AUTH_MODE=keys`` requires an admin key
from everyone. The numbers leak little (model ids, queue lengths, timings), but they are
not for the public.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Depends, FastAPI, Response

from app.config import Settings
from app.errors import Forbidden
from app.observability import metrics
from app.schemas.errors import AUTH_ERRORS
from app.security.auth import Principal, PrincipalDep

router = APIRouter(tags=["health"])


def metrics_access(principal: PrincipalDep) -> Principal:
    """Admin, or a keyless loopback caller the auth mode admitted (see the module)."""
    if principal.admin or (principal.loopback and principal.key_id is None):
        return principal
    raise Forbidden("this API key lacks the 'admin' scope (GET /metrics needs it, or a "
                    "loopback caller without a key)", param="scope")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "The Prometheus text format.",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
def get_metrics() -> Response:
    """Every series in the Prometheus text format (`text/plain; version=0.0.4`): the HTTP
    metrics (`http_requests_total`, `http_request_duration_seconds`, ...) and Bildwerk's
    own: `bildwerk_queue_depth{model}`, `bildwerk_jobs_running`,
    `bildwerk_job_queue_seconds`, `bildwerk_job_duration_seconds{endpoint,model,status}`,
    `bildwerk_model_load_seconds{model}` and `bildwerk_gpu_memory_bytes{device}` (CUDA
    only). With several worker processes (`PROMETHEUS_MULTIPROC_DIR`) it sums them all.
    Needs the `admin` scope, or a loopback caller without a key."""
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


@cache
def _http_metrics():
    """The instrumentator's default HTTP series, made once per process: it would make
    them again for each app, fail to register them twice and count nothing (the tests
    build many apps in one process)."""
    from prometheus_fastapi_instrumentator import metrics as http

    return http.default()


def install_metrics(app: FastAPI, settings: Settings) -> None:
    """``/metrics`` and the HTTP metrics middleware, unless ``BILDWERK_METRICS`` is off.
    Call it after the routers and before the outer middlewares (CORS), so requests the
    request gate refuses are counted too."""
    if not settings.metrics:
        return
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator(excluded_handlers=["^/metrics$"]).add(_http_metrics()).instrument(app)
    app.include_router(router, responses=AUTH_ERRORS,
                       dependencies=[Depends(metrics_access)])
