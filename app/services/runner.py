"""Running a plan on a worker: the record says ``running``, the plan's work runs, the record
says how it ended (succeeded / failed / cancelled / interrupted, with the error, the
outputs made and the timings), and the typed result is built once, at the end.

:class:`PlanRunner` is what an :class:`~app.services.executor.Executor` calls with a plan
and the job that reports its progress. The work itself lives in
:mod:`app.services.run_generation` (txt2img, img2img, inpaint, provider chains),
:mod:`app.services.run_sequence` (img2seq) and :mod:`app.services.run_upscale`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from app.config import Settings
from app.errors import (
    BildwerkError,
    GenerationFailed,
    JobCancelled,
    JobInterrupted,
    OutOfMemory,
)
from app.jobs.job import Job
from app.observability import metrics
from app.persistence.blobs import BlobStore
from app.persistence.records import OutputImage, RecordRepository
from app.pipelines.device import free_memory
from app.pipelines.lora_catalog import LoraCatalog
from app.pipelines.memory import pipeline_bytes
from app.pipelines.registry import LoadedModel, ModelEntry, ModelRegistry
from app.providers.registry import ProviderSet
from app.schemas.generation import GenerationResult
from app.schemas.sequences import SequenceResult
from app.schemas.upscale import UpscaleResult
from app.services.plans import Choice, GenerationWork, JobPlan, SequenceWork

log = logging.getLogger("bildwerk.jobs")


@dataclass
class RunContext:
    """Handed to the work on the worker thread."""

    job: Job
    accepted_at: float
    timings: dict[str, float] = field(default_factory=dict)
    started: float = 0.0  # perf_counter when it started running

    def lap(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - since, 4)
        return now


@dataclass
class Finished:
    """What the work made: the result's content, and what the record keeps."""

    fields: dict
    outputs: list[OutputImage]
    seeds: list[int]
    prompt_used: str | None = None
    mask_applied_sha256: str | None = None
    provider: str | None = None
    attempts: list | None = None
    usage: dict | None = None


Result = GenerationResult | SequenceResult | UpscaleResult
_RESULTS = {"img2seq": SequenceResult, "upscale": UpscaleResult}


def build_result(endpoint: str, fields: dict, status: str,
                 timings: dict) -> Result:
    """The typed result, once: a sequence's for img2seq, an upscale's for upscale, a
    generation's otherwise."""
    model = _RESULTS.get(endpoint, GenerationResult)
    return model.model_validate({**fields, "status": status, "timings": dict(timings)})


@contextmanager
def model_session(registry: ModelRegistry, loras: LoraCatalog, entry: ModelEntry,
                  choice: Choice, reporter,
                  images: int = 1) -> Iterator[tuple[LoadedModel, object]]:
    """Load the model (within the memory budget), its request VAE and LoRAs; the LoRAs
    are removed again however the job ends. ``images``: of a batch of several jobs (its
    threads; a job alone runs with the threads it always had, for the same bytes)."""
    reporter.stage_changed("loading_model")
    loaded = registry.load(entry.id)
    registry.fast_path.use_threads(entry.load_bytes, registry.runtime, images)
    vae = None
    if choice.vae is not None:
        vae = registry.vae_cache.get(choice.vae, entry.family_spec.config_dir())
    reporter.check_cancelled()
    with loras.applied(loaded.main, entry.id, list(choice.loras)):
        if choice.loras:  # resident adapters take memory too
            loaded.resident_bytes = pipeline_bytes(loaded.main)
            registry.fit_budget(keep=entry.id)
        yield loaded, vae


class PlanRunner:
    def __init__(self, settings: Settings, registry: ModelRegistry, loras: LoraCatalog,
                 providers: ProviderSet, blobs: BlobStore, records: RecordRepository,
                 upscaler_models) -> None:
        from app.services.run_generation import GenerationRun
        from app.services.run_sequence import SequenceRun
        from app.services.run_upscale import UpscaleRun

        self.settings = settings
        self.registry = registry
        self.records = records
        self.upscaler_models = upscaler_models
        self.generation = GenerationRun(registry, loras, providers, blobs)
        self.sequence = SequenceRun(registry, loras, blobs, records)
        self.upscale = UpscaleRun(settings, upscaler_models, blobs)

    def run(self, plan: JobPlan, job: Job, accepted_at: float) -> Result:
        """Run ``plan`` as ``job`` (on the worker thread) and record how it ended. Returns
        the result, or raises the job's error (with ``partial``: the frames made)."""
        ctx = self.begin(job, accepted_at)
        try:
            with torch.inference_mode():
                if isinstance(plan.work, GenerationWork):
                    done = self.generation.run(ctx, plan.work)
                elif isinstance(plan.work, SequenceWork):
                    done = self.sequence.run(ctx, plan.work)
                else:
                    done = self.upscale.run(ctx, plan.work)
        except Exception as exc:
            ended = classify(job, exc)
        else:
            return self.succeed(plan, ctx, done)
        # Out of the except block, so the traceback no longer pins activations.
        raise self.fail(plan, ctx, *ended)

    def run_batch(self, items: list[tuple[JobPlan, Job, float]]) -> list:
        """Run compatible txt2img plans as one pipeline call (app/services/run_batch.py);
        per job, in order, its result or its error."""
        from app.services.run_batch import BatchRun

        return BatchRun(self).run(items)

    # -- a job's record, from running to how it ended -------------------------------------
    def begin(self, job: Job, accepted_at: float) -> RunContext:
        """The job starts running: its record says so and its time limit starts."""
        ctx = RunContext(job, accepted_at)
        ctx.started = time.perf_counter()
        ctx.timings["queued_s"] = round(ctx.started - ctx.accepted_at, 4)
        metrics.job_started(ctx.started - ctx.accepted_at)
        self.records.mark_running(job.record_id)
        job.start_clock(self.settings.job_timeout_s)
        return ctx

    def succeed(self, plan: JobPlan, ctx: RunContext, done: Finished) -> Result:
        metrics.job_ended(plan, "succeeded", time.perf_counter() - ctx.started)
        ctx.timings["total_s"] = round(time.perf_counter() - ctx.accepted_at, 4)
        self.records.finish(ctx.job.record_id, status="succeeded", seeds=done.seeds,
                            timings=ctx.timings, prompt_used=done.prompt_used,
                            outputs=done.outputs,
                            mask_applied_sha256=done.mask_applied_sha256,
                            provider=done.provider, attempts=done.attempts,
                            usage=done.usage)
        return build_result(plan.endpoint, done.fields, "succeeded", ctx.timings)

    def fail(self, plan: JobPlan, ctx: RunContext, status: str, error: BildwerkError,
             free: bool = True) -> BildwerkError:
        """Record how the job ended (``status``, ``error``, the partial outputs if any),
        free what the failure left (unless ``free`` is False: a job leaving a batch that
        still runs), and return the error to raise (``partial`` set)."""
        metrics.job_ended(plan, status, time.perf_counter() - ctx.started)
        if isinstance(error, OutOfMemory):
            self.registry.after_oom()  # drop other models and VAEs, give the cache back
            self.upscaler_models.clear()
        if free:
            free_memory(self.registry.runtime)
        partial: Finished | None = getattr(error, "partial", None)
        ctx.timings["total_s"] = round(time.perf_counter() - ctx.accepted_at, 4)
        self.records.finish(ctx.job.record_id, status=status,
                            seeds=partial.seeds if partial else list(plan.seeds),
                            timings=ctx.timings,
                            outputs=partial.outputs if partial else [],
                            error_code=error.code, error_message=error.message,
                            attempts=getattr(error, "attempts", None))
        if partial is not None:
            error.partial = build_result(plan.endpoint, partial.fields, status, ctx.timings)
        return error


def classify(job: Job, exc: Exception) -> tuple[str, BildwerkError]:
    """How a job whose work raised ``exc`` ended, and the error it ends with."""
    if isinstance(exc, JobCancelled):
        if job.interrupted:  # the server is shutting down
            return "interrupted", JobInterrupted(partial=exc.partial)
        return "cancelled", exc
    if isinstance(exc, BildwerkError):
        return "failed", exc
    if isinstance(exc, torch.cuda.OutOfMemoryError) or is_oom(exc):
        where = "device" if isinstance(exc, torch.cuda.OutOfMemoryError) else "machine"
        return "failed", OutOfMemory(f"the {where} ran out of memory; try fewer or smaller "
                                     "images")
    log.error("job %s failed", job.id, exc_info=exc)
    return "failed", GenerationFailed(f"generation failed: {exc}")


def is_oom(exc: BaseException) -> bool:
    """CPU and MPS allocators raise plain RuntimeErrors when memory runs out."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | MemoryError) and (
        isinstance(exc, MemoryError) or "can't allocate memory" in text
        or "out of memory" in text)
