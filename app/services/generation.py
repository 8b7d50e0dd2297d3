"""Generation service: turns a validated request into a recorded job, runs it on the
device worker, and stores what it produced.

Flow for every request::

    accept()  (HTTP side)   limits -> model lookup -> seeds -> input blobs -> record (queued)
                            -> job submitted (429 recorded as "rejected")
    _execute  (worker)      record running -> load model -> pipeline -> PNG blobs
                            -> record finished (succeeded / failed / cancelled)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

import torch

from app.config import Settings
from app.errors import (
    BildwerkError,
    GenerationFailed,
    InvalidInput,
    JobCancelled,
    PayloadTooLarge,
    QueueFull,
)
from app.imaging.decode import DecodedImage, ImageLimits, decode_image, image_bytes
from app.imaging.geometry import round_to_multiple
from app.imaging.masks import binary_mask
from app.imaging.png import encode_plain_png, encode_png
from app.jobs.job import Job
from app.jobs.queue import JobQueue
from app.persistence.blobs import BlobStore
from app.persistence.records import NewRecord, OutputImage, RecordRepository
from app.pipelines.device import free_memory
from app.pipelines.inpaint import InpaintPipeline
from app.pipelines.progress import StepReporter
from app.pipelines.registry import ModelEntry, ModelRegistry
from app.pipelines.requests import GenerationOutput, InpaintInput, Txt2ImgInput
from app.pipelines.txt2img import Txt2ImgPipeline
from app.schemas.generation import MAX_SEED, GenerationParams, InpaintRequest, Txt2ImgRequest

log = logging.getLogger("bildwerk.generation")


@dataclass
class Accepted:
    job: Job
    record_id: str


class GenerationService:
    def __init__(self, settings: Settings, registry: ModelRegistry, queue: JobQueue,
                 records: RecordRepository, blobs: BlobStore) -> None:
        self.settings = settings
        self.registry = registry
        self.queue = queue
        self.records = records
        self.blobs = blobs

    # ----------------------------------------------------------------------------------
    # Accepting (runs in a threadpool thread: it touches the database and decodes images)
    # ----------------------------------------------------------------------------------
    def accept_txt2img(self, req: Txt2ImgRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None) -> Accepted:
        entry = self._check_common(req)
        width = req.width or entry.native_resolution
        height = req.height or entry.native_resolution
        self._check_size(width, height)
        args = Txt2ImgInput(prompt=req.prompt, negative_prompt=req.negative_prompt,
                            width=width, height=height, steps=req.steps,
                            guidance_scale=req.guidance_scale, seeds=self._seeds(req),
                            scheduler=req.scheduler)
        return self._submit("txt2img", entry, args, loop, client, inputs={})

    def accept_inpaint(self, req: InpaintRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None, endpoint: str = "inpaint") -> Accepted:
        entry = self._check_common(req)
        limits = ImageLimits(max_pixels=self.settings.max_pixels,
                             max_side=self.settings.max_width)
        image = decode_image(image_bytes(req.image, "image", self.blobs.read), "image", limits)
        mask_in = decode_image(image_bytes(req.mask, "mask", self.blobs.read), "mask", limits)
        mask = binary_mask(mask_in.image, image.image.size, invert=req.invert_mask)
        width, height = self._inpaint_size(req, entry, image)
        args = InpaintInput(
            prompt=req.prompt, negative_prompt=req.negative_prompt, width=width, height=height,
            steps=req.steps, guidance_scale=req.guidance_scale, seeds=self._seeds(req),
            scheduler=req.scheduler, image=image.image, mask=mask, strength=req.strength,
            mask_blur=req.mask_blur, padding=req.padding, inpaint_area=req.inpaint_area)
        inputs = {"input_image_sha256": self._store_input(image),
                  "mask_sha256": self._store_input(mask_in)}
        return self._submit(endpoint, entry, args, loop, client, inputs=inputs)

    def _check_common(self, req: GenerationParams) -> ModelEntry:
        s = self.settings
        if req.steps > s.max_steps:
            raise InvalidInput(f"steps must be at most {s.max_steps}", param="steps")
        if req.num_images > s.max_images:
            raise InvalidInput(f"num_images must be at most {s.max_images}", param="num_images")
        return self.registry.resolve(req.model)

    def _check_size(self, width: int, height: int) -> None:
        s = self.settings
        if max(width, height) > s.max_width or width * height > s.max_pixels:
            raise PayloadTooLarge(
                f"{width}x{height} exceeds the limit of {s.max_width}px per side and "
                f"{s.max_pixels} pixels", param="width")

    def _inpaint_size(self, req: InpaintRequest, entry: ModelEntry,
                      image: DecodedImage) -> tuple[int, int]:
        if req.width and req.height:
            size = (req.width, req.height)
        elif req.inpaint_area == "full":
            w, h = image.image.size
            size = (req.width or round_to_multiple(w), req.height or round_to_multiple(h))
        else:
            native = entry.native_resolution
            size = (req.width or native, req.height or native)
        self._check_size(*size)
        return size

    @staticmethod
    def _seeds(req: GenerationParams) -> list[int]:
        first = req.seed if req.seed is not None and req.seed >= 0 else secrets.randbelow(MAX_SEED)
        return [(first + i) % (MAX_SEED + 1) for i in range(req.num_images)]

    def _store_input(self, decoded: DecodedImage) -> str:
        return self.blobs.put(decoded.raw, decoded.content_type)

    def _submit(self, endpoint: str, entry: ModelEntry, args: Txt2ImgInput,
                loop: asyncio.AbstractEventLoop, client: dict | None,
                inputs: dict[str, str]) -> Accepted:
        record_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
        params = _public_params(args)
        self.records.create(NewRecord(
            id=record_id, job_id=job_id, endpoint=endpoint, provider="local", model=entry.id,
            prompt=args.prompt, negative_prompt=args.negative_prompt, params=params,
            scheduler=args.scheduler, client=client, **inputs))
        accepted_at = time.perf_counter()

        def run(job: Job) -> dict:
            return self._execute(job, endpoint, entry, args, accepted_at)

        job = Job(id=job_id, record_id=record_id, endpoint=endpoint, run=run, loop=loop)
        try:
            self.queue.submit(job)
        except QueueFull as exc:
            self.records.finish(record_id, status="rejected", seeds=args.seeds,
                                error_code=exc.code, error_message=exc.message)
            raise
        return Accepted(job=job, record_id=record_id)

    # ----------------------------------------------------------------------------------
    # Executing (worker thread)
    # ----------------------------------------------------------------------------------
    def _execute(self, job: Job, endpoint: str, entry: ModelEntry, args: Txt2ImgInput,
                 accepted_at: float) -> dict:
        started = time.perf_counter()
        timings: dict[str, float] = {"queued_s": round(started - accepted_at, 4)}
        self.records.mark_running(job.record_id)
        reporter = StepReporter(report=job.set_progress, cancelled=lambda: job.cancel_requested)
        try:
            reporter.stage_changed("loading_model")
            loaded = self.registry.load(entry.id)
            reporter.check_cancelled()
            t_loaded = time.perf_counter()
            timings["load_s"] = round(t_loaded - started, 4)
            runner = InpaintPipeline(loaded) if isinstance(args, InpaintInput) \
                else Txt2ImgPipeline(loaded)
            with torch.inference_mode():
                output = runner(args, reporter)
            t_done = time.perf_counter()
            timings["inference_s"] = round(t_done - t_loaded, 4)
            reporter.stage_changed("saving", reporter.total)
            result = self._store_outputs(job, endpoint, entry, args, output)
            timings["save_s"] = round(time.perf_counter() - t_done, 4)
            timings["total_s"] = round(time.perf_counter() - accepted_at, 4)
            result["timings"] = timings
            self.records.finish(
                job.record_id, status="succeeded", seeds=args.seeds, timings=timings,
                prompt_used=args.prompt, outputs=result.pop("_outputs"),
                mask_applied_sha256=(result.get("mask_applied") or {}).get("sha256"))
            return result
        except JobCancelled as exc:
            self._record_end(job, "cancelled", exc, args, timings)
            raise
        except BildwerkError as exc:
            self._record_end(job, "failed", exc, args, timings)
            raise
        except torch.cuda.OutOfMemoryError as exc:
            err = GenerationFailed("the device ran out of memory; try fewer or smaller images")
            err.code = "out_of_memory"
            self._record_end(job, "failed", err, args, timings)
            raise err from exc
        except Exception as exc:
            log.exception("generation failed")
            err = GenerationFailed(f"generation failed: {exc}")
            self._record_end(job, "failed", err, args, timings)
            raise err from exc

    def _record_end(self, job: Job, status: str, exc: BildwerkError, args: Txt2ImgInput,
                    timings: dict) -> None:
        free_memory(self.registry.runtime)
        self.records.finish(job.record_id, status=status, seeds=args.seeds, timings=timings,
                            error_code=exc.code, error_message=exc.message)

    def _store_outputs(self, job: Job, endpoint: str, entry: ModelEntry, args: Txt2ImgInput,
                       output: GenerationOutput) -> dict[str, Any]:
        params = _public_params(args)
        images, outputs = [], []
        for image, seed in zip(output.images, output.seeds, strict=True):
            meta = {"prompt": args.prompt, "negative_prompt": args.negative_prompt,
                    "model": entry.id, "endpoint": endpoint, **params, "seed": seed,
                    "width": image.width, "height": image.height}
            meta.pop("seeds", None)
            sha = self.blobs.put(encode_png(image, meta), "image/png")
            outputs.append(OutputImage(sha256=sha, seed=seed, width=image.width,
                                       height=image.height))
            images.append({"sha256": sha, "url": f"/blobs/{sha}", "width": image.width,
                           "height": image.height, "seed": seed, "content_type": "image/png"})
        result: dict[str, Any] = {
            "job_id": job.id, "record_id": job.record_id, "status": "succeeded",
            "endpoint": endpoint, "provider": "local", "model": entry.id, "images": images,
            "prompt": args.prompt, "negative_prompt": args.negative_prompt,
            "parameters": params, "_outputs": outputs,
        }
        if output.mask_applied is not None:
            sha = self.blobs.put(encode_plain_png(output.mask_applied), "image/png")
            result["mask_applied"] = {"sha256": sha, "url": f"/blobs/{sha}"}
        return result


def _public_params(args: Txt2ImgInput) -> dict:
    """The parameters worth recording and returning (no image objects)."""
    skip = ("image", "mask", "prompt", "negative_prompt")
    data = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in skip}
    data["seeds"] = list(args.seeds)
    return data
