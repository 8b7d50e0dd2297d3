"""txt2img and inpaint: validate a request into pipeline inputs, queue it as a recorded
job (see :mod:`app.services.submission`), run it on the worker, store the images."""

from __future__ import annotations

import asyncio
import time
from dataclasses import fields

from app.errors import InvalidInput
from app.imaging.decode import DecodedImage
from app.imaging.geometry import round_to_multiple
from app.imaging.masks import binary_mask
from app.imaging.png import encode_plain_png, encode_png
from app.persistence.records import OutputImage
from app.pipelines.inpaint import InpaintPipeline
from app.pipelines.registry import ModelEntry
from app.pipelines.requests import GenerationOutput, InpaintInput, Txt2ImgInput
from app.pipelines.txt2img import Txt2ImgPipeline
from app.schemas.generation import MAX_SEED, GenerationParams, InpaintRequest, Txt2ImgRequest
from app.services.submission import Accepted, Choice, Finished, JobSubmitter, RunContext


class GenerationService:
    def __init__(self, submitter: JobSubmitter) -> None:
        self.jobs = submitter

    # -- accepting (threadpool thread) --------------------------------------------------
    def accept_txt2img(self, req: Txt2ImgRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None) -> Accepted:
        entry, choice = self._check(req, "txt2img")
        width = req.width or entry.native_resolution
        height = req.height or entry.native_resolution
        self.jobs.check_size(width, height, req.num_images)
        args = Txt2ImgInput(prompt=req.prompt, negative_prompt=req.negative_prompt,
                            width=width, height=height, steps=req.steps,
                            guidance_scale=req.guidance_scale, seeds=self._seeds(req),
                            scheduler=req.scheduler, loras=choice.lora_refs,
                            vae=req.vae, clip_skip=req.clip_skip)
        return self._submit("txt2img", entry, choice, args, loop, client)

    def accept_inpaint(self, req: InpaintRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None, endpoint: str = "inpaint") -> Accepted:
        entry, choice = self._check(req, "inpaint")
        image = self.jobs.decode(req.image, "image")
        mask_in = self.jobs.decode(req.mask, "mask")
        mask = binary_mask(mask_in.image, image.image.size, invert=req.invert_mask)
        width, height = self._inpaint_size(req, entry, image)
        self.jobs.check_size(width, height, req.num_images)
        self.jobs.check_strength(req.steps, req.strength)
        args = InpaintInput(
            prompt=req.prompt, negative_prompt=req.negative_prompt, width=width, height=height,
            steps=req.steps, guidance_scale=req.guidance_scale, seeds=self._seeds(req),
            scheduler=req.scheduler, image=image.image, mask=mask, strength=req.strength,
            mask_blur=req.mask_blur, padding=req.padding, inpaint_area=req.inpaint_area,
            invert_mask=req.invert_mask, loras=choice.lora_refs, vae=req.vae,
            clip_skip=req.clip_skip)
        inputs = {"input_image_sha256": self.jobs.store(image),
                  "mask_sha256": self.jobs.store(mask_in)}
        return self._submit(endpoint, entry, choice, args, loop, client, inputs)

    def _check(self, req: GenerationParams, task: str) -> tuple[ModelEntry, Choice]:
        self.jobs.check_steps(req.steps)
        if req.num_images > self.jobs.settings.max_images:
            raise InvalidInput(f"num_images must be at most {self.jobs.settings.max_images}",
                               param="num_images")
        entry = self.jobs.resolve(req.model, task)
        return entry, self.jobs.check_choice(req, entry)

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
        self.jobs.check_size(*size)
        return size

    def _seeds(self, req: GenerationParams) -> list[int]:
        first = self.jobs.first_seed(req.seed)
        return [(first + i) % (MAX_SEED + 1) for i in range(req.num_images)]

    def _submit(self, endpoint: str, entry: ModelEntry, choice: Choice, args: Txt2ImgInput,
                loop: asyncio.AbstractEventLoop, client: dict | None,
                inputs: dict[str, str] | None = None) -> Accepted:
        def body(ctx: RunContext) -> Finished:
            return self._run(ctx, endpoint, entry, choice, args)

        return self.jobs.submit(
            endpoint=endpoint, entry=entry, prompt=args.prompt,
            negative_prompt=args.negative_prompt, params=public_params(args),
            scheduler=args.scheduler, seeds=args.seeds, body=body, loop=loop, client=client,
            inputs=inputs, choice=choice)

    # -- running (worker thread) --------------------------------------------------------
    def _run(self, ctx: RunContext, endpoint: str, entry: ModelEntry, choice: Choice,
             args: Txt2ImgInput) -> Finished:
        reporter = ctx.job.reporter()
        t0 = time.perf_counter()
        with self.jobs.model_session(entry, choice, reporter) as (loaded, vae):
            t1 = ctx.lap("load_s", t0)
            runner = InpaintPipeline(loaded, vae) if isinstance(args, InpaintInput) \
                else Txt2ImgPipeline(loaded, vae)
            output = runner(args, reporter)
            t2 = ctx.lap("inference_s", t1)
        reporter.stage_changed("saving", reporter.total)
        done = self._store(ctx, endpoint, entry, args, output)
        ctx.lap("save_s", t2)
        return done

    def _store(self, ctx: RunContext, endpoint: str, entry: ModelEntry, args: Txt2ImgInput,
               output: GenerationOutput) -> Finished:
        params = public_params(args)
        images, outputs = [], []
        for image, seed in zip(output.images, output.seeds, strict=True):
            meta = {"prompt": args.prompt, "negative_prompt": args.negative_prompt,
                    "model": entry.id, "endpoint": endpoint, **params, "seed": seed,
                    "width": image.width, "height": image.height}
            meta.pop("seeds", None)
            sha = self.jobs.blobs.put(encode_png(image, meta), "image/png")
            outputs.append(OutputImage(sha256=sha, seed=seed, width=image.width,
                                       height=image.height))
            images.append(image_ref(sha, image.width, image.height, seed))
        result = {
            "job_id": ctx.job.id, "record_id": ctx.job.record_id, "endpoint": endpoint,
            "provider": "local", "model": entry.id, "images": images, "prompt": args.prompt,
            "negative_prompt": args.negative_prompt, "parameters": params,
        }
        mask_sha = None
        if output.mask_applied is not None:
            mask_sha = self.jobs.blobs.put(encode_plain_png(output.mask_applied), "image/png")
            result["mask_applied"] = {"sha256": mask_sha, "url": f"/blobs/{mask_sha}"}
        return Finished(result=result, outputs=outputs, seeds=args.seeds,
                        prompt_used=args.prompt, mask_applied_sha256=mask_sha)


def image_ref(sha: str, width: int, height: int, seed: int) -> dict:
    return {"sha256": sha, "url": f"/blobs/{sha}", "width": width, "height": height,
            "seed": seed, "content_type": "image/png"}


def public_params(args) -> dict:
    """The parameters worth recording and returning (no image objects)."""
    skip = ("image", "mask", "prompt", "negative_prompt")
    data = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in skip}
    if "seeds" in data:
        data["seeds"] = list(data["seeds"])
    return data
