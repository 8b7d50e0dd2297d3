"""Model administration: describe, load, unload, refresh. Loading and unloading run on
the device worker like any job, so they never race a generation for the same weights."""

from __future__ import annotations

import asyncio
import uuid

from app.jobs.job import Job
from app.jobs.queue import JobQueue
from app.pipelines.lora_catalog import LoraCatalog
from app.pipelines.merge import MergeSpec, check_merge, merge, taken
from app.pipelines.registry import ModelEntry, ModelRegistry
from app.schemas.models import MergeRequest
from app.services.jobs import JobService


class ModelService:
    def __init__(self, registry: ModelRegistry, loras: LoraCatalog, queue: JobQueue,
                 timeout_s: float) -> None:
        self.registry = registry
        self.loras = loras
        self.queue = queue
        self.timeout_s = timeout_s

    def describe(self, entry: ModelEntry) -> dict:
        loaded = self.registry.loaded_info(entry.id)
        sha = self.registry.content_hash(entry)
        return {
            "id": entry.id, "family": entry.family, "variant": entry.variant,
            "format": entry.format, "prediction_type": entry.prediction_type,
            "native_resolution": entry.native_resolution, "size_bytes": entry.size_bytes,
            "sha256": sha, "short_hash": sha[:10] if sha else None,
            "loaded": loaded is not None,
            "resident_bytes": loaded.resident_bytes if loaded else None,
            "optimizations": loaded.optimizations if loaded else None,
            "default": entry.id == self.registry.default_id, "embedded": entry.embedded,
            "description": entry.description, "context_dim": entry.context_dim,
        }

    def list(self) -> list[dict]:
        return [self.describe(e) for e in self.registry.list()]

    def get(self, model_id: str) -> dict:
        from app.errors import NotFound

        entry = next((e for e in self.registry.list() if e.id == model_id), None)
        if entry is None:
            raise NotFound(f"model {model_id!r} not found", param="model_id")
        return self.describe(entry)

    async def load(self, model_id: str) -> dict:
        self.get(model_id)  # 404 first
        await self._on_worker("model_load", lambda: self.registry.load(model_id))
        return self.get(model_id)

    async def unload(self, model_id: str) -> dict:
        loaded = self.registry.loaded_info(model_id)
        entry = loaded.entry if loaded else None
        if entry is None:
            self.get(model_id)  # 404 for unknown ids
            entry = next(e for e in self.registry.list() if e.id == model_id)
        await self._on_worker("model_unload", lambda: self.registry.unload(model_id))
        return self.describe(entry)

    async def refresh(self) -> list[dict]:
        # On the worker: a refresh may unload models whose files vanished or changed.
        await self._on_worker("model_refresh", self.registry.refresh)
        await asyncio.to_thread(self.loras.refresh)
        return self.list()

    async def merge(self, req: MergeRequest) -> dict:
        spec = self.merge_spec(req)
        await self._on_worker("model_merge",
                              lambda: merge(spec, self.registry.models_dir))
        await asyncio.to_thread(self.registry.refresh)
        return self.get(req.name)

    def merge_spec(self, req: MergeRequest) -> MergeSpec:
        from app.errors import Conflict

        if req.name in {e.id for e in self.registry.list()} or \
                taken(self.registry.models_dir, req.name):
            raise Conflict(f"a model named {req.name!r} already exists", param="name")
        a, b = self.registry.resolve(req.a), self.registry.resolve(req.b)
        c = self.registry.resolve(req.c) if req.c else None
        loras = [(self.loras.resolve(ref.name, a.context_dim, a.family), ref.weight)
                 for ref in req.loras]
        spec = MergeSpec(a=a, b=b, c=c, method=req.method, alpha=req.alpha, name=req.name,
                         loras=loras)
        check_merge(spec)
        return spec

    async def _on_worker(self, endpoint: str, action) -> None:
        def run(_job: Job) -> dict:
            action()
            return {}

        job = Job(id=str(uuid.uuid4()), record_id="", endpoint=endpoint, run=run,
                  loop=asyncio.get_running_loop())
        self.queue.submit(job)
        await JobService.wait_result(job, self.timeout_s)
