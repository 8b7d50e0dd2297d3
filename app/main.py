"""Builds the FastAPI app. ``uvicorn app.main:app`` serves the module-level ``app``;
tests call :func:`create_app` with their own :class:`Settings`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.config import Settings
from app.docs import install_docs
from app.errors import install_error_handlers
from app.jobs.job import Job
from app.jobs.owners import OwnerLimit
from app.jobs.queue import JobQueue
from app.lifecycle import Lifecycle, recover_after_restart
from app.limits import ControlCharGuard, install_cors
from app.persistence.blobs import BlobStore
from app.persistence.database import Database
from app.persistence.integrity import check_database
from app.persistence.records import RecordRepository
from app.pipelines.adapters import LoraCatalog
from app.pipelines.device import resolve_runtime
from app.pipelines.registry import build_registry
from app.providers.local import LocalProvider
from app.providers.registry import ProviderSet, build_providers
from app.ratelimit import WorkGuard
from app.request_gate import RequestGate
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
)
from app.routers import (
    providers as providers_router,
)
from app.schemas.errors import AUTH_ERRORS, COMMON_ERRORS, UNAUTHORIZED
from app.security.auth import announce as announce_auth
from app.security.auth import authenticate, require
from app.security.keys import ApiKeyRepository
from app.services.generation import GenerationService
from app.services.jobs import JobService
from app.services.models import ModelService
from app.services.prompting import build_prompt_service
from app.services.sequences import SequenceService
from app.services.submission import JobSubmitter

log = logging.getLogger("bildwerk")

DESCRIPTION = """Self-hosted image generation: **txt2img**, **inpaint** and **img2seq** on
Stable Diffusion checkpoints, and **prompt-expand** (wishes in any language into rich
prompts, with `GET /styles`), every request recorded. Requests wait for their result by
default; send `Prefer: respond-async` to get `202` and follow `/jobs/{id}` or `/jobs/{id}/events`.
`Accept: image/png` returns the first image's bytes. Errors always have the shape
`{"error": {"code", "message", "param"}}`."""


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    _quiet_libraries()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(check_database, settings)  # damaged, or lost beside old blobs
    db = Database(settings.resolved_database_url)
    await asyncio.to_thread(db.migrate)
    app.state.keys = ApiKeyRepository(db)
    await asyncio.to_thread(announce_auth, settings, app.state.keys)  # who may call
    record_repo = RecordRepository(db)
    await asyncio.to_thread(recover_after_restart, settings, record_repo)  # temp files, blobs
    stale = await asyncio.to_thread(record_repo.mark_unfinished_interrupted)
    if stale:
        log.warning("marked %d unfinished job(s) from a previous run as interrupted", stale)
    runtime = resolve_runtime(settings.device)

    def record_cancelled(job: Job) -> None:
        record_repo.finish(job.record_id, status="cancelled", error_code="cancelled",
                           error_message="cancelled before it started")

    queue = JobQueue(settings.queue_max, settings.retry_after_s, device=runtime.name,
                     on_cancelled_before_start=record_cancelled)
    remote_queue = JobQueue(settings.queue_max, settings.retry_after_s, device="remote",
                            on_cancelled_before_start=record_cancelled)
    owners = OwnerLimit(settings.max_queued_per_key, settings.retry_after_s,
                        [queue, remote_queue])
    # a bad style file fails here
    prompt_service = build_prompt_service(settings, record_repo, owners)
    blob_store = BlobStore(settings.blobs_dir, db)
    registry = build_registry(settings, runtime)
    loras = LoraCatalog(settings.models_dir, max_resident=settings.max_resident_loras)
    registry.on_unload.append(lambda model_id, loaded: loras.forget_model(model_id,
                                                                          loaded.main))
    await asyncio.to_thread(registry.refresh)
    await asyncio.to_thread(loras.refresh)

    queue.start()
    remote_queue.start()
    local = LocalProvider(registry, max_batch=settings.max_images)
    providers = ProviderSet(build_providers(settings, local), settings.provider_chains)
    state = app.state
    state.db, state.records, state.blobs, state.registry, state.queue = (
        db, record_repo, blob_store, registry, queue)
    submitter = JobSubmitter(settings, registry, queue, record_repo, blob_store, loras,
                             remote_queue=remote_queue, owners=owners)
    state.loras, state.providers, state.prompts = loras, providers, prompt_service
    state.generation = GenerationService(submitter, providers, state.prompts)
    state.sequences = SequenceService(submitter, state.prompts)
    state.jobs = JobService([queue, remote_queue], record_repo)
    state.models = ModelService(registry, loras, queue, settings.sync_timeout_s)
    state.lifecycle = Lifecycle.start([queue, remote_queue], record_repo, settings)  # SIGTERM
    log.info("bildwerk ready on %s (%s); default model %s", runtime.name, runtime.dtype,
             registry.default_id)
    try:
        yield
    finally:
        await state.lifecycle.shutdown()  # refuse new work, grace period, interrupt the rest
        await asyncio.to_thread(queue.stop)
        await asyncio.to_thread(remote_queue.stop)
        db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Bildwerk", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
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
            (kiosk, [Depends(require("generate"))]),
            (jobs, [Depends(require("generate"))]),
            (records, [Depends(require("read", "generate"))]),  # GETs need read (per route)
            (blobs, [Depends(require("read", "generate"))]),
            # generate first, then the guard: a read-only key gets 403, not a 429
            (prompts, [Depends(require("generate"))]),
            (styles, any_key), (models, any_key), (providers_router, any_key),
            (health, [])):
        responses = (COMMON_ERRORS if not dependencies else
                     {**COMMON_ERRORS, **UNAUTHORIZED} if dependencies is any_key else scoped)
        app.include_router(module.router, responses=responses, dependencies=dependencies + (
            guard if module in (generation, sequences, kiosk, prompts) else []) + (
            prompt_guard if module is prompts else []))
    app.add_middleware(RequestGate, settings=settings)  # auth, size, time, JSON shape
    app.add_middleware(ControlCharGuard)
    install_cors(app, settings)  # outermost, so every answer carries the CORS headers
    return app


app = create_app()
