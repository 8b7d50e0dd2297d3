"""What every generation service shares: checking limits, resolving the model, decoding
and storing inputs, writing the record when a request is accepted, submitting the job,
and recording how the job ended.

Flow for every request::

    accept (HTTP side)   limits -> model -> queue place held -> inputs stored
                         -> record "queued" -> job queued in the held place
                         (a full queue is recorded "rejected" and answered 429 before
                         any upload is stored)
    run    (worker)      record "running" -> the service's body -> record finished
                         (succeeded / failed / cancelled, with the error and timings)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from app.config import Settings
from app.errors import (
    BildwerkError,
    GenerationFailed,
    InvalidInput,
    JobCancelled,
    JobInterrupted,
    PayloadTooLarge,
    QueueFull,
    ShuttingDown,
    TooManyJobs,
)
from app.imaging.decode import DecodedImage, ImageLimits, decode_image, image_bytes
from app.jobs.job import Job
from app.jobs.owners import OwnerLimit
from app.jobs.queue import JobQueue
from app.limits import caller_key, check_prompt_lengths
from app.persistence.blobs import BlobStore
from app.persistence.records import NewRecord, OutputImage, RecordRepository
from app.pipelines.adapters import LoraCatalog
from app.pipelines.device import free_memory
from app.pipelines.memory import pipeline_bytes
from app.pipelines.registry import LoadedModel, ModelEntry, ModelRegistry
from app.pipelines.schedulers import SCHEDULERS
from app.pipelines.vaes import VaeEntry
from app.schemas.generation import MAX_SEED, ModelChoice

log = logging.getLogger("bildwerk.jobs")


@dataclass
class Choice:
    """A request's validated LoRAs and VAE."""

    loras: list = field(default_factory=list)  # [(LoraEntry, weight)]
    vae: VaeEntry | None = None

    @property
    def lora_refs(self) -> list[tuple[str, float]]:
        return [(entry.id, weight) for entry, weight in self.loras]


@dataclass
class Accepted:
    job: Job
    record_id: str


@dataclass
class RunContext:
    """Handed to a service's job body on the worker thread."""

    job: Job
    accepted_at: float
    timings: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - since, 4)
        return now


@dataclass
class Finished:
    """What a job body returns: the client's result plus what the record keeps."""

    result: dict
    outputs: list[OutputImage]
    seeds: list[int]
    prompt_used: str | None = None
    mask_applied_sha256: str | None = None
    provider: str | None = None
    attempts: list | None = None
    usage: dict | None = None


Body = Callable[[RunContext], Finished]


class JobSubmitter:
    def __init__(self, settings: Settings, registry: ModelRegistry, queue: JobQueue,
                 records: RecordRepository, blobs: BlobStore, loras: LoraCatalog,
                 remote_queue: JobQueue | None = None, owners: OwnerLimit | None = None
                 ) -> None:
        self.settings = settings
        self.registry = registry
        self.loras = loras
        self.remote_queue = remote_queue or queue
        self.queue = queue
        self.records = records
        self.blobs = blobs
        self.owners = owners or OwnerLimit(settings.max_queued_per_key,
                                           settings.retry_after_s, [queue, self.remote_queue])

    # -- checks and inputs (HTTP side, in a threadpool thread) --------------------------
    def check_request(self, req, client: dict | None) -> None:
        """First of all: prompt lengths, and whether the caller may queue another job."""
        check_prompt_lengths(req, self.settings.max_prompt_chars)
        self.check_owner(owner_of(client))

    def check_owner(self, owner: str | None) -> None:
        """429 ``too_many_jobs`` when ``owner`` has the most work in progress that
        ``BILDWERK_MAX_QUEUED_PER_KEY`` allows (:class:`~app.jobs.owners.OwnerLimit`)."""
        self.owners.check(owner)

    def check_steps(self, steps: int) -> None:
        if steps > self.settings.max_steps:
            raise InvalidInput(f"steps must be at most {self.settings.max_steps}",
                               param="steps")

    def check_size(self, width: int, height: int, images: int = 1) -> None:
        s = self.settings
        if max(width, height) > s.max_width or width * height > s.max_pixels:
            raise PayloadTooLarge(
                f"{width}x{height} exceeds the limit of {s.max_width}px per side and "
                f"{s.max_pixels} pixels", param="width")
        if images * width * height > s.max_batch_pixels:
            raise PayloadTooLarge(
                f"{images} images of {width}x{height} exceed the batch budget of "
                f"{s.max_batch_pixels} pixels (BILDWERK_MAX_BATCH_PIXELS)", param="num_images")

    def check_scheduler(self, scheduler: str, steps: int) -> None:
        limit = SCHEDULERS[scheduler].max_steps
        if limit is not None and steps > limit:
            raise InvalidInput(f"scheduler {scheduler} runs at most {limit} steps",
                               param="steps")

    @staticmethod
    def check_strength(steps: int, strength: float, param: str = "strength") -> None:
        if int(steps * strength) < 1:
            raise InvalidInput(
                f"steps x strength must be at least 1 (got {steps} x {strength}): raise "
                "strength or steps", param=param)

    def resolve(self, model: str | None, task: str) -> ModelEntry:
        return self.registry.resolve_for(model, task)  # type: ignore[arg-type]

    def check_choice(self, req: ModelChoice, entry: ModelEntry) -> Choice:
        """Validate a request's LoRAs and VAE against the model; 422 naming the field."""
        self.check_scheduler(req.scheduler, getattr(req, "steps", 1))
        if entry.text_layers is not None and req.clip_skip > entry.text_layers:
            raise InvalidInput(f"clip_skip must be at most {entry.text_layers} for model "
                               f"{entry.id!r} (its text encoder has {entry.text_layers} "
                               "layers)", param="clip_skip")
        loras = [(self.loras.resolve(ref.name, entry.context_dim, entry.family), ref.weight)
                 for ref in req.loras]
        vae = self.registry.resolve_vae(req.vae, entry) if req.vae else None
        return Choice(loras=loras, vae=vae)

    @contextmanager
    def model_session(self, entry: ModelEntry, choice: Choice,
                      reporter) -> Iterator[tuple[LoadedModel, object]]:
        """Load the model (within the memory budget), its request VAE and LoRAs; the
        LoRAs are removed again however the job ends."""
        reporter.stage_changed("loading_model")
        loaded = self.registry.load(entry.id)
        vae = None
        if choice.vae is not None:
            vae = self.registry.vae_cache.get(choice.vae, entry.family_spec.config_dir())
        reporter.check_cancelled()
        with self.loras.applied(loaded.main, entry.id, choice.loras):
            if choice.loras:  # resident adapters take memory too
                loaded.resident_bytes = pipeline_bytes(loaded.main)
                self.registry._evict_until(self.registry.budget_bytes, keep=entry.id)
            yield loaded, vae

    def decode(self, value: str, param: str, client: dict | None = None) -> DecodedImage:
        """Decode an image field. A key without admin may name only the blobs of its own
        records by sha256; any other blob is "no stored blob", as if it did not exist."""
        limits = ImageLimits(max_pixels=self.settings.max_pixels,
                             max_side=self.settings.max_width)
        client = client or {}
        reader = self.blobs.read
        key_id = client.get("key_id")
        if key_id and not client.get("admin"):
            def reader(sha: str) -> bytes:
                if not self.records.blob_belongs_to(sha, key_id):
                    raise LookupError(sha)
                return self.blobs.read(sha)
        return decode_image(image_bytes(value, param, reader), param, limits)

    def store(self, decoded: DecodedImage) -> str:
        return self.blobs.put(decoded.raw, decoded.content_type)

    @staticmethod
    def first_seed(seed: int | None) -> int:
        return seed if seed is not None and seed >= 0 else secrets.randbelow(MAX_SEED)

    # -- submit -------------------------------------------------------------------------
    def submit(self, *, endpoint: str, entry: ModelEntry, prompt: str, negative_prompt: str,
               params: dict, scheduler: str, seeds: list[int], body: Body,
               loop: asyncio.AbstractEventLoop, client: dict | None,
               inputs: Callable[[], dict[str, str]] | None = None,
               choice: Choice | None = None, provider: str = "local",
               model: str | None = None, queue: JobQueue | None = None,
               prepared=None) -> Accepted:
        """Hold a place in the queue, store the inputs (``inputs()`` stores them and
        returns their record fields), record the accepted request, then queue ``body`` to
        run on a worker. A request the queue refuses (429/503) is recorded ``rejected``
        before anything of it is stored.

        ``prepared`` (a :class:`~app.services.prompting.PreparedPrompt`) puts the prompt as
        typed, translated and expanded on the record; ``prompt`` is then the one used."""
        record_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
        queue = queue or self.queue
        choice = choice or Choice()
        extra: dict = {}
        if prepared is not None:
            params = {**params, "prompting": prepared.summary()}
            extra = {"prompt": prepared.typed, "prompt_translated": prepared.translated,
                     "prompt_expanded": prepared.expanded}

        def record(stored: dict[str, str]) -> None:
            self.records.create(NewRecord(
                id=record_id, job_id=job_id, endpoint=endpoint, provider=provider,
                model=model or (entry.id if entry else None),
                **({"prompt": prompt} | extra), negative_prompt=negative_prompt,
                params=params, scheduler=scheduler, client=client,
                loras=[{"name": n, "weight": w} for n, w in choice.lora_refs] or None,
                vae=choice.vae.id if choice.vae else None, **stored))

        owner = owner_of(client)
        try:
            with self.owners.lock:
                self.owners.check(owner)
                slot = queue.reserve(owner)
        except (QueueFull, TooManyJobs, ShuttingDown) as exc:
            record({})  # the refusal is recorded; the uploads were never stored
            self.records.finish(record_id, status="rejected", seeds=seeds,
                                error_code=exc.code, error_message=exc.message)
            raise
        try:
            record(inputs() if inputs else {})
            accepted_at = time.perf_counter()

            def run(job: Job) -> dict:
                return self._run_recorded(RunContext(job, accepted_at), body, seeds)

            job = Job(id=job_id, record_id=record_id, endpoint=endpoint, run=run, loop=loop,
                      owner=owner)
            queue.submit(job, slot)
        except ShuttingDown as exc:  # closed while the request was being prepared
            self.records.finish(record_id, status="rejected", seeds=seeds,
                                error_code=exc.code, error_message=exc.message)
            raise
        finally:
            queue.release(slot)  # a no-op once the job filled it
        return Accepted(job=job, record_id=record_id)

    # -- run (worker thread) ------------------------------------------------------------
    def _run_recorded(self, ctx: RunContext, body: Body, seeds: list[int]) -> dict:
        job = ctx.job
        started = time.perf_counter()
        ctx.timings["queued_s"] = round(started - ctx.accepted_at, 4)
        job.start_clock(self.settings.job_timeout_s)  # stopped at a step boundary past it
        self.records.mark_running(job.record_id)
        try:
            with torch.inference_mode():
                done = body(ctx)
        except JobCancelled as exc:
            ended: tuple[str, BildwerkError] = ("cancelled", exc)
            if job.interrupted:  # the server is shutting down
                ended = ("interrupted", JobInterrupted(partial=exc.partial))
        except BildwerkError as exc:
            ended = ("failed", exc)
        except torch.cuda.OutOfMemoryError:
            err = GenerationFailed("the device ran out of memory; try fewer or smaller images")
            err.code = "out_of_memory"
            ended = ("failed", err)
        except Exception as exc:
            if _is_oom(exc):
                err = GenerationFailed("the machine ran out of memory; try fewer or smaller "
                                       "images")
                err.code = "out_of_memory"
                ended = ("failed", err)
            else:
                log.exception("job %s failed", job.id)
                ended = ("failed", GenerationFailed(f"generation failed: {exc}"))
        else:
            result = self._with_timings(done, ctx, "succeeded")
            self.records.finish(job.record_id, status="succeeded", seeds=done.seeds,
                                timings=ctx.timings, prompt_used=done.prompt_used,
                                outputs=done.outputs,
                                mask_applied_sha256=done.mask_applied_sha256,
                                provider=done.provider, attempts=done.attempts,
                                usage=done.usage)
            return result
        # Out of the except block, so the traceback no longer pins activations.
        status, error = ended
        if error.code == "out_of_memory":
            self.registry.after_oom()  # drop other models and VAEs, give the cache back
        free_memory(self.registry.runtime)
        partial: Finished | None = getattr(error, "partial", None)
        ctx.timings["total_s"] = round(time.perf_counter() - ctx.accepted_at, 4)
        self.records.finish(job.record_id, status=status,
                            seeds=partial.seeds if partial else seeds, timings=ctx.timings,
                            outputs=partial.outputs if partial else [],
                            error_code=error.code, error_message=error.message,
                            attempts=getattr(error, "attempts", None))
        if partial is not None:
            error.partial = self._with_timings(partial, ctx, status)
        raise error

    @staticmethod
    def _with_timings(done: Finished, ctx: RunContext, status: str) -> dict:
        ctx.timings["total_s"] = round(time.perf_counter() - ctx.accepted_at, 4)
        return {**done.result, "status": status, "timings": ctx.timings}


def owner_of(client: dict | None) -> str | None:
    """Who a job counts against: the API key from the client info, else the host."""
    client = client or {}
    return caller_key(client.get("key_id"), client.get("host"))


def _is_oom(exc: BaseException) -> bool:
    """CPU and MPS allocators raise plain RuntimeErrors when memory runs out."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | MemoryError) and (
        isinstance(exc, MemoryError) or "can't allocate memory" in text
        or "out of memory" in text)
