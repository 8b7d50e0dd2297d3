"""The AUTOMATIC1111 API's calls on our services, and the little state it keeps.

State (in memory, one :class:`A1111State` per router, made when the router is built, so
that no two first requests can each make their own; for this API only):

- **options** per caller (the API key; callers without one share one set): the checkpoint
  ``POST /sdapi/v1/options`` selects (``sd_model_checkpoint``), clip skip, VAE and live
  preview settings. They apply to this caller's ``/sdapi/v1`` calls only; the server's
  default model and the native routes are untouched, and a restart forgets them.
- **jobs**: the jobs started through ``/sdapi/v1``, for ``progress``, ``interrupt`` and
  ``skip``. A caller sees and stops its own (a caller without a key, or an admin key, all).
"""

from __future__ import annotations

import asyncio
import base64
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from app.compat.a1111 import checkpoints, infotext, translate
from app.compat.a1111.schemas import ExtrasSingleImageBody, GenerationFields, PngInfoBody
from app.errors import Conflict, InvalidInput, NotFound
from app.jobs.job import Job
from app.persistence.records import KEYLESS
from app.request_limits import check_prompt_lengths
from app.security.auth import Principal
from app.services.jobs import JobFailed

API_TAG = "sdapi"  # client["api"] on every record made through this API
OPTION_DEFAULTS: dict[str, Any] = {
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "samples_format": "png",
    "show_progress_every_n_steps": 10,
    "live_previews_enable": True,
    "live_previews_image_format": "png",
    "eta_noise_seed_delta": 0,
}
MAX_CLIP_SKIP = 12


@dataclass
class Tracked:
    job: Job
    key_id: str | None
    skipped: bool = False


class A1111State:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._options: dict[str | None, dict[str, Any]] = {}
        self._jobs: list[Tracked] = []

    # -- options --------------------------------------------------------------------------
    def options(self, key_id: str | None) -> dict[str, Any]:
        with self._lock:
            return {**OPTION_DEFAULTS, **self._options.get(key_id, {})}

    def set_options(self, key_id: str | None, values: dict[str, Any]) -> None:
        with self._lock:
            self._options.setdefault(key_id, {}).update(values)

    # -- jobs -----------------------------------------------------------------------------
    def track(self, job: Job, key_id: str | None) -> None:
        with self._lock:
            self._jobs = [t for t in self._jobs if not t.job.finished]
            self._jobs.append(Tracked(job, key_id))

    def live(self, principal: Principal) -> list[Tracked]:
        """The caller's unfinished jobs, oldest first."""
        with self._lock:
            self._jobs = [t for t in self._jobs if not t.job.finished]
            return [t for t in self._jobs
                    if principal.owner is None
                    or (t.key_id or KEYLESS) == principal.owner]


class A1111Api:
    """One request's view of the app's services (``app.state``) and of this API's state."""

    def __init__(self, app_state, state: A1111State) -> None:
        self.app = app_state
        self.state = state
        self.registry = app_state.registry
        self.settings = app_state.settings

    @property
    def checks(self):
        """The input checks of the native routes (image decoding with access control).
        The container exposes them only through the planner."""
        return self.app.generation.planner.check

    # -- what a request may name ------------------------------------------------------------
    def catalogue(self) -> translate.Catalogue:
        styles = tuple(p.name for p in self.app.prompts.list_styles())
        return translate.Catalogue(registry=self.registry,
                                   loras=tuple(e.id for e in self.app.loras.list()),
                                   styles=styles)

    def defaults(self, principal: Principal) -> translate.Defaults:
        opts = self.state.options(principal.key_id)
        model = opts.get("_model")
        if model is not None and model not in {e.id for e in self.registry.list()}:
            model = None  # the model went away (refresh): back to the server's default
        return translate.Defaults(model=model, clip_skip=int(opts["CLIP_stop_at_last_layers"]),
                                  vae=translate.vae_id(opts["sd_vae"], self.registry))

    def _previews(self, principal: Principal, steps: int) -> int:
        opts = self.state.options(principal.key_id)
        every = opts.get("show_progress_every_n_steps") or 0
        if not opts.get("live_previews_enable") or every <= 0:
            return 0
        return max(1, math.ceil(steps / every))

    # -- txt2img / img2img ------------------------------------------------------------------
    async def generate(self, kind: str, body: GenerationFields, request: Request,
                       client: dict, principal: Principal) -> dict:
        # the prompt as sent (LoRA tags included), before anything parses it
        check_prompt_lengths(body, self.settings.max_prompt_chars)
        defaults, catalogue = self.defaults(principal), self.catalogue()
        work = await run_in_threadpool(
            translate.txt2img if kind == "txt2img" else translate.img2img, body, defaults,
            catalogue)
        generation = self.app.generation
        accept = {"txt2img": generation.accept_txt2img, "img2img": generation.accept_img2img,
                  "inpaint": generation.accept_inpaint}[work.kind]
        loop = asyncio.get_running_loop()
        accepted = await run_in_threadpool(
            accept, work.request, loop, {**client, "api": API_TAG},
            previews=self._previews(principal, work.request.steps))
        self.state.track(accepted.job, principal.key_id)
        try:
            result = await self.app.jobs.wait_result(accepted.job, self.settings.sync_timeout_s,
                                                     request.is_disconnected)
        except JobFailed as exc:
            if exc.code != "cancelled":
                raise
            result = None  # interrupted or skipped: answered like AUTOMATIC1111, no images
        return await run_in_threadpool(self._answer, body, work, accepted, result)

    def _answer(self, body: GenerationFields, work: translate.Translation, accepted,
                result) -> dict:
        job = accepted.job
        if result is not None:
            images = list(result.images)
            seeds = [img.seed for img in images]
            model_id = result.model
        else:
            row = self.app.records.get(accepted.record_id)
            seeds = row.seeds or (row.params or {}).get("seeds") or []  # planned ones
            images, seeds, model_id = [], list(seeds), row.model
        req = work.request
        entry = next((e for e in self.registry.list() if e.id == model_id), None)
        ckpt = checkpoints.checkpoint(self.registry, entry) if entry else None
        sizes = [(img.width, img.height) for img in images] or \
            [(req.width or 0, req.height or 0)] * len(seeds)
        texts = [infotext.infotext(
            prompt=work.prompt, negative_prompt=work.negative_prompt, steps=req.steps,
            sampler=work.sampler.sampler, schedule=work.sampler.schedule,
            cfg_scale=req.guidance_scale, seed=seed, width=w, height=h,
            model=ckpt.model_name if ckpt else model_id,
            model_hash=ckpt.shorthash if ckpt else None,
            denoising_strength=work.denoising_strength, mask_blur=work.mask_blur,
            clip_skip=work.clip_skip, vae=work.vae)
            for seed, (w, h) in zip(seeds, sizes, strict=False)]
        count = len(seeds)
        width, height = sizes[0] if sizes else (req.width, req.height)
        info = infotext.generation_info(
            prompt=work.prompt, all_prompts=[work.prompt] * count,
            negative_prompt=work.negative_prompt,
            all_negative_prompts=[work.negative_prompt] * count,
            seed=seeds[0] if seeds else -1, all_seeds=seeds, subseed=-1,
            all_subseeds=[-1] * count, subseed_strength=0, width=width, height=height,
            sampler_name=work.sampler.sampler, cfg_scale=req.guidance_scale,
            steps=req.steps, batch_size=work.batch_size, restore_faces=False,
            face_restoration_model=None,
            sd_model_name=ckpt.model_name if ckpt else model_id,
            sd_model_hash=ckpt.shorthash if ckpt else None,
            sd_vae_name=work.vae, sd_vae_hash=None, seed_resize_from_w=-1,
            seed_resize_from_h=-1, denoising_strength=work.denoising_strength,
            extra_generation_params={"Schedule type": work.sampler.schedule},
            index_of_first_image=0, infotexts=texts, styles=list(body.styles or []),
            job_timestamp=infotext.job_timestamp(job.started_at or job.created_at),
            clip_skip=work.clip_skip,
            is_using_inpainting_conditioning=bool(work.kind == "inpaint" and entry
                                                  and entry.variant == "inpaint"),
            version=infotext.VERSION,
            # Bildwerk's own: where the job and its record are, and what it noted
            job_id=job.id, record_id=accepted.record_id, status=job.status,
            bildwerk_scheduler=req.scheduler, comments=work.notes)
        send = body.send_images is not False
        return {"images": [self._b64(img.sha256) for img in images] if send else [],
                "parameters": translate.echo(body), "info": info}

    def _b64(self, sha256: str) -> str:
        return base64.b64encode(self.app.blobs.read(sha256)).decode("ascii")

    # -- progress, interrupt, skip ------------------------------------------------------------
    def progress(self, principal: Principal, skip_current_image: bool) -> dict:
        live = self.state.live(principal)
        idle_state = {"skipped": False, "interrupted": False, "stopping_generation": False,
                      "job": "", "job_count": 0, "job_timestamp": infotext.job_timestamp(None),
                      "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
        if not live:
            return {"progress": 0, "eta_relative": 0, "state": idle_state,
                    "current_image": None, "textinfo": None}
        current = next((t for t in live if t.job.status == "running"), live[0])
        job = current.job
        count = len(live)
        progress = 0.01
        if job.status == "running" and job.total > 0:
            progress += min(job.step, job.total) / job.total / count
        started = job.started_at or job.created_at
        elapsed = max(0.0, time.time() - started.timestamp())
        eta_relative = elapsed / progress - elapsed if job.status == "running" else 0.0
        preview = job.preview
        state = {**idle_state, "skipped": current.skipped,
                 "interrupted": job.cancel_requested and not current.skipped,
                 "job": f"{job.endpoint}({job.id})", "job_count": count,
                 "job_timestamp": infotext.job_timestamp(started), "job_no": 0,
                 "sampling_step": job.step, "sampling_steps": job.total,
                 "job_id": job.id, "status": job.status}
        image = None
        if preview is not None and not skip_current_image:
            image = base64.b64encode(preview.png).decode("ascii")
        return {"progress": min(progress, 1.0), "eta_relative": eta_relative, "state": state,
                "current_image": image, "textinfo": job.stage}

    def interrupt(self, principal: Principal) -> int:
        """Cancel the caller's running and queued jobs of this API."""
        return self._cancel(self.state.live(principal))

    def skip(self, principal: Principal) -> int:
        """Stop the caller's running job of this API (its whole batch: one job makes every
        image of a call together); queued ones go on."""
        running = [t for t in self.state.live(principal) if t.job.status == "running"]
        for t in running:
            t.skipped = True
        return self._cancel(running)

    def _cancel(self, tracked: list[Tracked]) -> int:
        done = 0
        for t in tracked:
            try:
                self.app.jobs.cancel(t.job.id)
                done += 1
            except (Conflict, NotFound):
                continue  # it ended meanwhile
        return done

    # -- options ------------------------------------------------------------------------------
    def get_options(self, principal: Principal) -> dict:
        opts = self.state.options(principal.key_id)
        model = self.defaults(principal).model or self.registry.default_id
        entry = next((e for e in self.registry.list() if e.id == model), None)
        ckpt = checkpoints.checkpoint(self.registry, entry) if entry else None
        opts.pop("_model", None)
        return {"sd_model_checkpoint": ckpt.title if ckpt else model,
                "sd_checkpoint_hash": ckpt.sha256 if ckpt else None, **opts}

    def set_options(self, principal: Principal, values: dict[str, Any]) -> None:
        """Check every value first, then keep them for this caller; unknown options are
        ignored, as AUTOMATIC1111 ignores them."""
        update: dict[str, Any] = {}
        for key, value in values.items():
            if key == "sd_model_checkpoint":
                found = checkpoints.find(self.registry, value) if isinstance(value, str) \
                    else None
                if found is None:
                    raise NotFound(f"Model not found: {value!r} (see GET /sdapi/v1/sd-models)",
                                   param="sd_model_checkpoint")
                update["_model"] = found.entry.id
            elif key == "CLIP_stop_at_last_layers":
                if isinstance(value, bool) or not isinstance(value, int) or \
                        not 1 <= value <= MAX_CLIP_SKIP:
                    raise InvalidInput(f"{key} must be a whole number from 1 to "
                                       f"{MAX_CLIP_SKIP}", param=key)
                update[key] = value
            elif key == "sd_vae":
                if not isinstance(value, str) or (
                        translate.vae_id(value, self.registry) is None
                        and value.strip().lower() not in ("automatic", "none", "")):
                    raise NotFound(f"VAE not found: {value!r} (see GET /sdapi/v1/sd-vae)",
                                   param=key)
                update[key] = value
            elif key == "show_progress_every_n_steps":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidInput(f"{key} must be a whole number", param=key)
                update[key] = value
            elif key == "live_previews_enable":
                if not isinstance(value, bool):
                    raise InvalidInput(f"{key} must be true or false", param=key)
                update[key] = value
        self.state.set_options(principal.key_id, update)

    # -- png-info -------------------------------------------------------------------------------
    def png_info(self, body: PngInfoBody, client: dict) -> dict:
        decoded = self.checks.image(body.image, "image", client)
        info, items = infotext.read_image_text(decoded.image)
        return {"info": info, "items": items,
                "parameters": infotext.parse_infotext(info) if info else {}}

    # -- extra-single-image -----------------------------------------------------------------------
    async def extra_single_image(self, body: ExtrasSingleImageBody, request: Request,
                                 client: dict) -> dict:
        from app.compat.a1111.upscale import upscale_request

        decoded = await run_in_threadpool(self.checks.image, body.image, "image", client)
        if body.upscaler_1.strip().lower() in ("none", ""):  # AUTOMATIC1111: nothing to do
            return {"html_info": "", "image": base64.b64encode(decoded.raw).decode("ascii")}
        service = getattr(self.app, "upscale", None)
        if service is None:
            raise NotFound("upscaling is not available on this server", param="upscaler_1")
        req, note = upscale_request(body, decoded.image)
        loop = asyncio.get_running_loop()
        accepted = await run_in_threadpool(service.accept, req, loop,
                                           {**client, "api": API_TAG})
        result = await self.app.jobs.wait_result(accepted.job, self.settings.sync_timeout_s,
                                                 request.is_disconnected)
        image = result.images[0]
        return {"html_info": f"<p>{note}</p>", "image": self._b64(image.sha256)}
