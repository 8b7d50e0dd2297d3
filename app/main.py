"""Builds the FastAPI app. ``uvicorn app.main:app`` serves the module-level ``app``;
tests call :func:`create_app` with their own :class:`Settings`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.cluster.checks import check_cluster
from app.compat.a1111 import errors as a1111_errors
from app.compat.a1111.routes import build_router as a1111_router
from app.compat.openai_images.errors import openai_error_response
from app.compat.openai_images.routes import images_router as openai_images_router
from app.compat.openai_images.routes import models_router as openai_models_router
from app.config import Settings
from app.docs import install_docs
from app.errors import install_error_handlers
from app.lifecycle import Lifecycle, recover_after_restart
from app.observability import metrics as observability_metrics
from app.observability.logs import configure_logging
from app.persistence.integrity import check_database
from app.ratelimit import WorkGuard
from app.request_gate import RequestGate
from app.request_limits import ControlCharGuard, install_cors
from app.routers import (
    blobs,
    generation,
    health,
    jobs,
    kiosk,
    models,
    prompts,
    records,
    sequences,
    styles,
    upscale,
    upscalers,
)
from app.routers import (
    providers as providers_router,
)
from app.routers._rejected import record_refused_body
from app.routers.metrics import install_metrics
from app.schemas.errors import AUTH_ERRORS, COMMON_ERRORS, UNAUTHORIZED
from app.security.auth import announce as announce_auth
from app.security.auth import authenticate, require
from app.services.container import build_services

log = logging.getLogger("bildwerk")

DESCRIPTION = """Self-hosted image generation: **txt2img**, **img2img**, **inpaint**,
**img2seq** and **upscale** on Stable Diffusion checkpoints, and **prompt-expand** (wishes
in any language into rich prompts, with `GET /styles`), every request recorded. Requests
wait for their result by default; send `Prefer: respond-async` to get `202` and follow
`/jobs/{id}` or `/jobs/{id}/events`. `Accept: image/png` returns the first image's bytes.
Errors always have the shape `{"error": {"code", "message", "param"}}`, except under the
compatibility APIs, which answer as the originals do: AUTOMATIC1111's under `/sdapi/v1`,
OpenAI's Images API under `/v1`."""


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_format)  # structlog: JSON lines, or text on a TTY
    _quiet_libraries()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_cluster(settings)  # several processes: PostgreSQL and Redis, or no start
    await asyncio.to_thread(check_database, settings)  # damaged, or lost beside old blobs
    services = app.state.services = build_services(settings)
    await asyncio.to_thread(lambda: services.db)  # migrated
    await asyncio.to_thread(announce_auth, settings, services.keys)  # who may call
    await asyncio.to_thread(recover_after_restart, settings, services.records,
                            services.blobs)  # temp files; the blob store is checked here
    if settings.shared:  # others may be running jobs: only expired leases are dead
        stale = len(await asyncio.to_thread(services.leases.reap_now))
    else:  # alone on the database: no job of an earlier process can still be running
        stale = await asyncio.to_thread(services.records.mark_unfinished_interrupted)
    if stale:
        log.warning("marked %d unfinished job(s) from a previous run as interrupted", stale)
    await asyncio.to_thread(lambda: services.prompts)  # a bad style file fails here
    await asyncio.to_thread(lambda: (services.registry, services.loras))  # scan the models
    state = app.state
    for name in ("keys", "records", "blobs", "registry", "loras", "providers", "prompts",
                 "generation", "sequences", "jobs", "models", "upscale", "kiosk",
                 "admission"):
        setattr(state, name, getattr(services, name))
    state.db, state.queue = services.db, services.queues[0]
    state.executor = services.executor
    if settings.executor == "ray":  # join the cluster; deploy the Generator replicas
        await asyncio.to_thread(services.executor.connect, services.registry)
    services.executor.start_workers()
    services.leases.start()  # heartbeats (and, shared, the reaper)
    if services.bus is not None:  # a cancel sent to another ingress reaches our jobs
        services.bus.listen_cancels(services.jobs.cancel_local)
    state.lifecycle = Lifecycle.start(services.executor.queues, services.records,
                                      settings)  # SIGTERM
    log.info("bildwerk ready on %s (%s); default model %s", services.runtime.name,
             services.runtime.dtype, services.registry.default_id)
    try:
        yield
    finally:
        await state.lifecycle.shutdown()  # refuse new work, grace period, interrupt the rest
        if "webhooks" in services.__dict__:  # pending webhook deliveries get the grace too
            await services.webhooks.aclose(settings.shutdown_grace_s)
        await asyncio.to_thread(services.close)
        observability_metrics.process_exit()  # multiprocess mode: drop live gauges


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Bildwerk", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.record_invalid_body = record_refused_body  # refused bodies are recorded too
    install_error_handlers(app)
    install_docs(app)
    # Who may call what (app/security/auth.py): any key for the catalogues (the models
    # router adds admin per route, the records router read), a scope for the rest; health
    # public.
    any_key, scoped = [Depends(authenticate)], {**COMMON_ERRORS, **AUTH_ERRORS}
    guard = [Depends(WorkGuard(settings))]  # after auth: 503 while draining, rate limit 429
    prompt_guard = [Depends(WorkGuard(settings, settings.prompt_rate_limit,
                                      "bildwerk-prompt-expand"))]
    for module, dependencies in (
            (generation, [Depends(require("generate"))]),
            (sequences, [Depends(require("generate"))]),
            (upscale, [Depends(require("generate"))]),
            (kiosk, [Depends(require("generate"))]),
            (jobs, [Depends(require("generate"))]),
            (records, [Depends(require("read", "generate"))]),  # GETs need read (per route)
            (blobs, [Depends(require("read", "generate"))]),
            # generate first, then the guard: a read-only key gets 403, not a 429
            (prompts, [Depends(require("generate"))]),
            (styles, any_key), (models, any_key), (providers_router, any_key),
            (upscalers, any_key),
            (health, [])):
        responses = (COMMON_ERRORS if not dependencies else
                     {**COMMON_ERRORS, **UNAUTHORIZED} if dependencies is any_key else scoped)
        app.include_router(module.router, responses=responses, dependencies=dependencies + (
            guard if module in (generation, sequences, upscale, kiosk, prompts) else []) + (
            prompt_guard if module is prompts else []))
    # The OpenAI Images API (app/compat/openai_images): images need generate and pass the
    # guard, models any key; its errors (and the gate's) are in OpenAI's shape.
    app.include_router(openai_images_router,
                       dependencies=[Depends(require("generate")), *guard])
    app.include_router(openai_models_router, dependencies=any_key)
    app.state.error_dialects.add("/v1/", openai_error_response)
    # AUTOMATIC1111's API (app/compat/a1111): scopes per route (generate for work, admin for
    # refresh-*, any key for the catalogues); its errors (and the gate's) in A1111's shape.
    app.include_router(a1111_router(guard), dependencies=any_key)
    app.state.error_dialects.add(a1111_errors.PREFIX, a1111_errors.render)
    from app.routers import kiosk_page  # the visitor page at /kiosk/ (BILDWERK_KIOSK_PAGE)
    app.include_router(kiosk_page.router)  # public, static; 404 while the setting is off
    app.add_middleware(RequestGate, settings=settings)  # auth, size, time, JSON shape
    app.add_middleware(ControlCharGuard)
    install_metrics(app, settings)  # /metrics (admin or loopback), HTTP metrics
    install_cors(app, settings)  # outermost, so every answer carries the CORS headers
    return app


app = create_app()
