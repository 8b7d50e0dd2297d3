"""txt2img and inpaint: validate a request into pipeline inputs, queue it as a recorded
job (see :mod:`app.services.submission`), run it on the worker, store the images."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from app.errors import BildwerkError, InvalidInput, JobCancelled
from app.imaging.decode import DecodedImage
from app.imaging.geometry import round_to_multiple
from app.imaging.masks import binary_mask
from app.imaging.png import encode_plain_png, encode_png
from app.persistence.records import OutputImage
from app.pipelines.inpaint import InpaintPipeline
from app.pipelines.registry import ModelEntry
from app.pipelines.requests import GenerationOutput, InpaintInput, Txt2ImgInput
from app.pipelines.txt2img import Txt2ImgPipeline
from app.providers.registry import LOCAL, ProviderSet
from app.schemas.generation import MAX_SEED, GenerationParams, InpaintRequest, Txt2ImgRequest
from app.services.prompting import PreparedPrompt, PromptService
from app.services.remote import remote_generate
from app.services.submission import Accepted, Choice, Finished, JobSubmitter, RunContext


@dataclass
class Plan:
    chain: list[str]
    entry: ModelEntry | None
    choice: Choice
    remote_model: str | None


class GenerationService:
    def __init__(self, submitter: JobSubmitter, providers: ProviderSet,
                 prompts: PromptService) -> None:
        self.jobs = submitter
        self.providers = providers
        self.prompts = prompts

    # -- accepting (threadpool thread) --------------------------------------------------
    def accept_txt2img(self, req: Txt2ImgRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None) -> Accepted:
        self.jobs.check_request(req, client)  # prompt lengths, the caller's jobs
        req = self.prompts.with_style_params(req)
        plan = self._plan(req, "txt2img")
        default = plan.entry.native_resolution if plan.entry else 1024
        width, height = req.width or default, req.height or default
        self.jobs.check_size(width, height, req.num_images)
        seeds = self._seeds(req)
        prepared = self._prepare(req, seeds)
        args = Txt2ImgInput(prompt=prepared.prompt, negative_prompt=prepared.negative_prompt,
                            width=width, height=height, steps=req.steps,
                            guidance_scale=req.guidance_scale, seeds=seeds,
                            scheduler=req.scheduler, loras=plan.choice.lora_refs,
                            vae=req.vae, clip_skip=req.clip_skip)
        return self._submit("txt2img", plan, args, loop, client, prepared=prepared)

    def accept_inpaint(self, req: InpaintRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None, endpoint: str = "inpaint") -> Accepted:
        self.jobs.check_request(req, client)  # prompt lengths, the caller's jobs
        req = self.prompts.with_style_params(req)
        plan = self._plan(req, "inpaint")
        image = self.jobs.decode(req.image, "image", client)
        mask_in = self.jobs.decode(req.mask, "mask", client)
        mask = binary_mask(mask_in.image, image.image.size, invert=req.invert_mask)
        width, height = self._inpaint_size(req, plan.entry, image)
        self.jobs.check_size(width, height, req.num_images)
        self.jobs.check_strength(req.steps, req.strength)
        seeds = self._seeds(req)
        prepared = self._prepare(req, seeds)
        args = InpaintInput(
            prompt=prepared.prompt, negative_prompt=prepared.negative_prompt, width=width,
            height=height, steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds,
            scheduler=req.scheduler, image=image.image, mask=mask, strength=req.strength,
            mask_blur=req.mask_blur, padding=req.padding, inpaint_area=req.inpaint_area,
            invert_mask=req.invert_mask, loras=plan.choice.lora_refs, vae=req.vae,
            clip_skip=req.clip_skip)
        def inputs() -> dict[str, str]:  # stored once the queue has a place for the job
            return {"input_image_sha256": self.jobs.store(image),
                    "mask_sha256": self.jobs.store(mask_in)}

        return self._submit(endpoint, plan, args, loop, client, inputs, prepared)

    def _prepare(self, req: GenerationParams, seeds: list[int]) -> PreparedPrompt:
        return self.prompts.prepare(req.prompt, req.negative_prompt, style=req.style,
                                    translate=req.translate, expand=req.expand_prompt,
                                    seed=seeds[0])

    def _plan(self, req: GenerationParams, task: str) -> Plan:
        """Which providers to try, in order, and the local model and choices if any."""
        self.jobs.check_steps(req.steps)
        if req.num_images > self.jobs.settings.max_images:
            raise InvalidInput(f"num_images must be at most {self.jobs.settings.max_images}",
                               param="num_images")
        chain = self.providers.usable(self.providers.chain(req.provider), task)
        entry, choice = None, Choice()
        if LOCAL in chain:
            entry = self.jobs.resolve(req.model if chain[0] == LOCAL else None, task)
            choice = self.jobs.check_choice(req, entry)
        remote_model = req.model if chain[0] != LOCAL else None
        return Plan(chain=chain, entry=entry, choice=choice, remote_model=remote_model)

    def _inpaint_size(self, req: InpaintRequest, entry: ModelEntry | None,
                      image: DecodedImage) -> tuple[int, int]:
        if req.width and req.height:
            size = (req.width, req.height)
        elif req.inpaint_area == "full":
            w, h = image.image.size
            size = (req.width or round_to_multiple(w), req.height or round_to_multiple(h))
        else:
            native = entry.native_resolution if entry else 1024
            size = (req.width or native, req.height or native)
        self.jobs.check_size(*size)
        return size

    def _seeds(self, req: GenerationParams) -> list[int]:
        first = self.jobs.first_seed(req.seed)
        return [(first + i) % (MAX_SEED + 1) for i in range(req.num_images)]

    def _submit(self, endpoint: str, plan: Plan, args: Txt2ImgInput,
                loop: asyncio.AbstractEventLoop, client: dict | None,
                inputs: Callable[[], dict[str, str]] | None = None,
                prepared: PreparedPrompt | None = None) -> Accepted:
        def body(ctx: RunContext) -> Finished:
            done = self._run_chain(ctx, endpoint, plan, args)
            if prepared is not None:
                done.result["prompting"] = prepared.summary()
            return done

        local = LOCAL in plan.chain
        return self.jobs.submit(
            endpoint=endpoint, entry=plan.entry, prompt=args.prompt,
            negative_prompt=args.negative_prompt, params=public_params(args),
            prepared=prepared,
            scheduler=args.scheduler, seeds=args.seeds, body=body, loop=loop, client=client,
            inputs=inputs, choice=plan.choice, provider=plan.chain[0],
            model=plan.entry.id if plan.chain[0] == LOCAL and plan.entry else plan.remote_model,
            queue=None if local else self.jobs.remote_queue)

    # -- running (worker thread) --------------------------------------------------------
    def _run_chain(self, ctx: RunContext, endpoint: str, plan: Plan,
                   args: Txt2ImgInput) -> Finished:
        """Try each provider of the chain in turn; every attempt is recorded."""
        attempts: list[dict] = []
        last: BildwerkError | None = None
        for name in plan.chain:
            started = time.perf_counter()
            try:
                if name == LOCAL:
                    done = self._run_local(ctx, endpoint, plan.entry, plan.choice, args)
                else:
                    done = self._run_remote(ctx, endpoint, name, plan.remote_model, args)
            except JobCancelled:
                raise
            except BildwerkError as exc:
                attempts.append({"provider": name, "status": "failed", "error_code": exc.code,
                                 "error_message": exc.message,
                                 "seconds": round(time.perf_counter() - started, 4)})
                last = exc
                ctx.job.reporter().check_cancelled()
                continue
            attempts.append({"provider": name, "status": "succeeded",
                             "model": done.result["model"],
                             "seconds": round(time.perf_counter() - started, 4)})
            flags = sorted({f for img in done.result["images"] for f in img.get("flags", [])})
            if flags:
                attempts[-1]["flags"] = flags
            done.provider, done.attempts = name, attempts
            done.result.update(provider=name, attempts=attempts, usage=done.usage)
            return done
        assert last is not None
        last.attempts = attempts  # type: ignore[attr-defined]
        raise last

    def _run_local(self, ctx: RunContext, endpoint: str, entry: ModelEntry, choice: Choice,
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
        done = self._store(ctx, endpoint, entry.id, args, output)
        ctx.lap("save_s", t2)
        return done

    def _run_remote(self, ctx: RunContext, endpoint: str, name: str, model: str | None,
                    args: Txt2ImgInput) -> Finished:
        reporter = ctx.job.reporter()
        reporter.stage_changed(f"waiting_for_{name}")
        t0 = time.perf_counter()
        output, result = remote_generate(self.providers.get(name), args, model)
        t1 = ctx.lap("inference_s", t0)
        reporter.stage_changed("saving")
        done = self._store(ctx, endpoint, result.model, args, output, provider=name)
        done.usage = result.usage
        ctx.lap("save_s", t1)
        return done

    def _store(self, ctx: RunContext, endpoint: str, model: str, args: Txt2ImgInput,
               output: GenerationOutput, provider: str = LOCAL) -> Finished:
        params = public_params(args)
        images, outputs = [], []
        for image, seed in zip(output.images, output.seeds, strict=True):
            meta = {"prompt": args.prompt, "negative_prompt": args.negative_prompt,
                    "model": model, "provider": provider, "endpoint": endpoint, **params,
                    "seed": seed,
                    "width": image.width, "height": image.height}
            meta.pop("seeds", None)
            sha = self.jobs.blobs.put(encode_png(image, meta), "image/png")
            outputs.append(OutputImage(sha256=sha, seed=seed, width=image.width,
                                       height=image.height))
            images.append(image_ref(sha, image.width, image.height, seed))
        for ref, image_flags in zip(images, output.flags, strict=False):
            if image_flags:
                ref["flags"] = image_flags
        result = {
            "job_id": ctx.job.id, "record_id": ctx.job.record_id, "endpoint": endpoint,
            "provider": provider, "model": model, "images": images, "prompt": args.prompt,
            "negative_prompt": args.negative_prompt, "parameters": params,
        }
        mask_sha = None
        if output.mask_applied is not None:
            mask_sha = self.jobs.blobs.put(encode_plain_png(output.mask_applied), "image/png")
            result["mask_applied"] = {"sha256": mask_sha, "url": f"/blobs/{mask_sha}"}
        return Finished(result=result, outputs=outputs, seeds=list(output.seeds),
                        prompt_used=args.prompt, mask_applied_sha256=mask_sha,
                        provider=provider)


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
