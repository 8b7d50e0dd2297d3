"""Per endpoint: request -> checks -> a :class:`~app.services.plans.JobPlan`.

This is the one place where a request is checked. Every 4xx an image route can answer
(limits, unknown model/LoRA/VAE/scheduler, bad images, masks, schedules, provider chains)
is raised here, on the request's thread, before anything is stored, recorded or queued.
What comes out is plain data: the worker never validates again.
"""

from __future__ import annotations

import secrets
from dataclasses import fields, replace

from PIL import Image

from app.errors import EmptyMask, InvalidInput
from app.imaging.decode import DecodedImage
from app.imaging.fit import fit_image
from app.imaging.geometry import round_to_multiple
from app.imaging.masks import binary_mask
from app.imaging.motion import MotionStep
from app.pipelines.img2seq import SequenceInput
from app.pipelines.registry import ModelEntry
from app.pipelines.requests import Img2ImgInput, InpaintInput, Txt2ImgInput
from app.pipelines.schedules import check_keyframes, expand
from app.providers.registry import LOCAL, ProviderSet
from app.schemas.generation import (
    MAX_SEED,
    GenerationParams,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)
from app.schemas.sequences import Img2SeqRequest
from app.services.checks import InputChecks, owner_of
from app.services.plans import Choice, GenerationWork, JobPlan, SequenceWork, Upload
from app.services.prompting import PreparedPrompt, PromptService, ScheduledPrompt
from app.services.sequence_limits import check_package_canvas, check_sequence_work
from app.webhooks.target import WebhookTarget
from app.webhooks.validation import check_webhook


class NothingToChange(Exception):  # noqa: N818 (an outcome, not an error)
    """The kiosk's legacy route got an empty mask: its original server answered the image
    unchanged, and so does /inpainting/ (:mod:`app.services.kiosk`)."""

    def __init__(self, image: DecodedImage, mask: DecodedImage | None) -> None:
        super().__init__("the mask marks no pixel to change")
        self.image = image
        self.mask = mask


def _resize_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    if mask.mode in ("P", "PA") or "transparency" in mask.info:
        mask = mask.convert("RGBA")  # keep a palette mask's transparency through the resize
    return mask.resize(size, Image.Resampling.NEAREST)


class Planner:
    def __init__(self, checks: InputChecks, providers: ProviderSet,
                 prompts: PromptService) -> None:
        self.check = checks
        self.providers = providers
        self.prompts = prompts
        self.settings = checks.settings

    # -- txt2img and inpaint ------------------------------------------------------------
    def txt2img(self, req: Txt2ImgRequest, client: dict | None) -> JobPlan:
        self.check.request(req, client)  # prompt lengths, the caller's jobs
        webhook = self._webhook(req, client)
        req = self.prompts.with_style_params(req)
        chain, entry, choice, remote_model = self._providers(req, "txt2img")
        default = entry.native_resolution if entry else 1024
        width, height = req.width or default, req.height or default
        self.check.size(width, height, req.num_images)
        seeds = self._seeds(req)
        prepared = self._prepare(req, seeds)
        args = Txt2ImgInput(prompt=prepared.prompt, negative_prompt=prepared.negative_prompt,
                            width=width, height=height, steps=req.steps,
                            guidance_scale=req.guidance_scale, seeds=seeds,
                            scheduler=req.scheduler, loras=choice.lora_refs,
                            vae=req.vae, clip_skip=req.clip_skip)
        plan = self._generation_plan("txt2img", chain, entry, choice, remote_model, args,
                                     prepared, client, uploads=(), webhook=webhook)
        if not req.batch:  # run alone, for exact bytes: on the record too
            plan = replace(plan, batch=False, record={
                **plan.record, "params": {**plan.record["params"], "batch": False}})
        return plan

    def inpaint(self, req: InpaintRequest, client: dict | None,
                endpoint: str = "inpaint", legacy: bool = False,
                notes: tuple[str, ...] = ()) -> JobPlan:
        """``legacy``: the kiosk's /inpainting/, as its original server behaved: a mask of
        another size is resized to the image (nearest) and the record notes it; an empty
        mask (an empty string, or nothing painted) raises :class:`NothingToChange`."""
        self.check.request(req, client)
        webhook = self._webhook(req, client)
        req = self.prompts.with_style_params(req)
        chain, entry, choice, remote_model = self._providers(req, "inpaint")
        image = self.check.image(req.image, "image", client)
        mask_in, mask, mask_notes = self._inpaint_mask(req, image, client, legacy)
        notes = [*notes, *mask_notes]
        width, height = self._inpaint_size(req, entry, image)
        self.check.size(width, height, req.num_images)
        self.check.strength(req.steps, req.strength)
        seeds = self._seeds(req)
        prepared = self._prepare(req, seeds)
        args = InpaintInput(
            prompt=prepared.prompt, negative_prompt=prepared.negative_prompt, width=width,
            height=height, steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds,
            scheduler=req.scheduler, image=image.image, mask=mask, strength=req.strength,
            mask_blur=req.mask_blur, padding=req.padding, inpaint_area=req.inpaint_area,
            invert_mask=req.invert_mask, loras=choice.lora_refs, vae=req.vae,
            clip_skip=req.clip_skip)
        uploads = (Upload("input_image_sha256", image.raw, image.content_type),
                   Upload("mask_sha256", mask_in.raw, mask_in.content_type))
        plan = self._generation_plan(endpoint, chain, entry, choice, remote_model, args,
                                     prepared, client, uploads, webhook)
        if notes:
            plan.record["params"]["notes"] = notes
        return plan

    def _inpaint_mask(self, req: InpaintRequest, image: DecodedImage, client: dict | None,
                      legacy: bool) -> tuple[DecodedImage, Image.Image, list[str]]:
        """The uploaded mask, the binary mask at the image's size, and notes for the
        record. Strict (``/inpaint``): same size, something painted, else 422."""
        if legacy and not req.mask.strip():
            raise NothingToChange(image, None)
        mask_in = self.check.image(req.mask, "mask", client)
        mask_image, notes = mask_in.image, []
        if legacy and mask_image.size != image.image.size:
            notes.append(f"mask resized from {mask_image.width}x{mask_image.height} to "
                         f"{image.image.width}x{image.image.height} (nearest), as the "
                         "kiosk's original server did")
            mask_image = _resize_mask(mask_image, image.image.size)
        try:
            mask = binary_mask(mask_image, image.image.size, invert=req.invert_mask)
        except EmptyMask:
            if legacy:
                raise NothingToChange(image, mask_in) from None
            raise
        return mask_in, mask, notes

    def img2img(self, req: Img2ImgRequest, client: dict | None,
                endpoint: str = "img2img") -> JobPlan:
        self.check.request(req, client)
        webhook = self._webhook(req, client)
        req = self.prompts.with_style_params(req)
        chain, entry, choice, remote_model = self._providers(req, "img2img")
        image = self.check.image(req.image, "image", client)
        width = req.width or round_to_multiple(image.image.width)
        height = req.height or round_to_multiple(image.image.height)
        self.check.size(width, height, req.num_images)
        self.check.strength(req.steps, req.strength)
        seeds = self._seeds(req)
        prepared = self._prepare(req, seeds)
        args = Img2ImgInput(
            prompt=prepared.prompt, negative_prompt=prepared.negative_prompt, width=width,
            height=height, steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds,
            scheduler=req.scheduler, loras=choice.lora_refs, vae=req.vae,
            clip_skip=req.clip_skip, image=fit_image(image.image, (width, height),
                                                     req.resize_mode),
            strength=req.strength, resize_mode=req.resize_mode)
        uploads = (Upload("input_image_sha256", image.raw, image.content_type),)
        return self._generation_plan(endpoint, chain, entry, choice, remote_model, args,
                                     prepared, client, uploads, webhook)

    def _webhook(self, req, client: dict | None) -> WebhookTarget | None:
        """The request's webhook, checked (422 naming ``webhook.url``)."""
        return check_webhook(getattr(req, "webhook", None), client,
                             self.settings.webhook_allowed_hosts)

    def _providers(self, req: GenerationParams, task: str):
        """Which providers to try, in order, and the local model and choices if any."""
        self.check.steps(req.steps)
        self.check.num_images(req.num_images)
        chain = tuple(self.providers.usable(self.providers.chain(req.provider), task))
        entry, choice = None, Choice()
        if LOCAL in chain:
            entry = self.check.model(req.model if chain[0] == LOCAL else None, task)
            choice = self.check.choice(req, entry)
        remote_model = req.model if chain[0] != LOCAL else None
        return chain, entry, choice, remote_model

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
        self.check.size(*size)
        return size

    def _seeds(self, req: GenerationParams) -> list[int]:
        first = self.check.first_seed(req.seed)
        return [(first + i) % (MAX_SEED + 1) for i in range(req.num_images)]

    def _prepare(self, req: GenerationParams, seeds: list[int]) -> PreparedPrompt:
        return self.prompts.prepare(req.prompt, req.negative_prompt, style=req.style,
                                    translate=req.translate, expand=req.expand_prompt,
                                    seed=seeds[0])

    def _generation_plan(self, endpoint: str, chain: tuple[str, ...],
                         entry: ModelEntry | None, choice: Choice, remote_model: str | None,
                         args: Txt2ImgInput, prepared: PreparedPrompt, client: dict | None,
                         uploads: tuple[Upload, ...],
                         webhook: WebhookTarget | None = None) -> JobPlan:
        provider = chain[0]
        model = entry.id if provider == LOCAL and entry else remote_model
        work = GenerationWork(endpoint=endpoint, chain=chain, entry=entry, choice=choice,
                              remote_model=remote_model, args=args,
                              prompting=prepared.summary())
        return JobPlan(endpoint=endpoint, work=work, seeds=tuple(args.seeds),
                       owner=owner_of(client), remote=LOCAL not in chain, uploads=uploads,
                       webhook=webhook,
                       record=_record_fields(
                           endpoint=endpoint, provider=provider, model=model,
                           negative_prompt=args.negative_prompt,
                           params=public_params(args), scheduler=args.scheduler,
                           client=client, choice=choice, prepared=prepared))

    # -- img2seq ------------------------------------------------------------------------
    def img2seq(self, req: Img2SeqRequest, client: dict | None) -> JobPlan:
        settings = self.settings
        self.check.request(req, client)
        webhook = self._webhook(req, client)
        req = self.prompts.with_style_params(req)
        if "gif" in req.packages and req.fps > 50:
            raise InvalidInput("GIF timing has centisecond steps: fps above 50 plays at 10 "
                               "fps in browsers; use webp or mp4, or fps <= 50", param="fps")
        if req.frames > settings.max_frames:
            raise InvalidInput(f"frames must be at most {settings.max_frames}", param="frames")
        self.check.steps(req.steps)
        if req.provider not in (None, "local", "default"):
            raise InvalidInput("img2seq runs on local models only", param="provider")
        entry = self.check.model(req.model, "img2img")
        choice = self.check.choice(req, entry)
        prompts = req.prompt_schedule or {0: req.prompt or ""}
        check_keyframes(prompts, req.frames, "prompt_schedule")
        strengths = expand(req.strength, req.frames, "strength")
        if any(not 0.0 < s <= 1.0 for s in strengths):
            raise InvalidInput("every strength must lie in (0, 1]", param="strength")
        self.check.strength(req.steps, min(strengths))
        image = self.check.image(req.image, "image", client)
        width = req.width or round_to_multiple(image.image.width)
        height = req.height or round_to_multiple(image.image.height)
        self.check.size(width, height)
        check_sequence_work(req.frames, width, height, req.steps, settings.max_sequence_work)
        check_package_canvas(list(req.packages), req.frames, width, height,
                             settings.max_canvas_pixels)
        seeds = self._sequence_seeds(req)
        prepared = self._prepare_schedule(req, prompts, seeds[0])
        args = SequenceInput(
            image=image.image, prompts=dict(sorted(prepared.keyframes.items())),
            negative_prompt=prepared.negative_prompt, frames=req.frames, width=width,
            height=height, steps=req.steps, guidance_scale=req.guidance_scale,
            strengths=strengths, seeds=seeds, scheduler=req.scheduler, mode=req.mode,
            motion=_motion(req), color_coherence=req.color_coherence,
            loras=choice.lora_refs, vae=req.vae, clip_skip=req.clip_skip)
        params = {
            "frames": req.frames, "fps": req.fps, "width": width, "height": height,
            "steps": req.steps, "guidance_scale": req.guidance_scale,
            "scheduler": req.scheduler, "mode": req.mode, "seed_policy": req.seed_policy,
            "seeds": args.seeds, "strengths": strengths, "prompt_schedule": args.prompts,
            "motion": req.motion.model_dump() if req.motion else None,
            "color_coherence": req.color_coherence, "packages": list(req.packages),
            "clip_skip": req.clip_skip, "prompting": prepared.summary(),
        }
        work = SequenceWork(entry=entry, choice=choice, args=args, params=params,
                            fps=req.fps, packages=tuple(dict.fromkeys(req.packages)))
        return JobPlan(
            endpoint="img2seq", work=work, seeds=tuple(args.seeds), owner=owner_of(client),
            webhook=webhook,
            uploads=(Upload("input_image_sha256", image.raw, image.content_type),),
            record=_record_fields(
                endpoint="img2seq", provider=LOCAL, model=entry.id,
                negative_prompt=prepared.negative_prompt, params=params,
                scheduler=req.scheduler, client=client, choice=choice, prepared=prepared))

    def _prepare_schedule(self, req: Img2SeqRequest, prompts: dict[int, str],
                          seed: int) -> ScheduledPrompt:
        """Translate/expand/style every keyframe prompt (the same way for each)."""
        parts: dict[int, PreparedPrompt] = {}
        for frame, text in sorted(prompts.items()):
            parts[frame] = self.prompts.prepare(
                text, req.negative_prompt, style=req.style, translate=req.translate,
                expand=req.expand_prompt, seed=seed)
        return ScheduledPrompt.combine(parts, single=req.prompt is not None)

    def _sequence_seeds(self, req: Img2SeqRequest) -> list[int]:
        first = self.check.first_seed(req.seed)
        if req.seed_policy == "fixed":
            return [first] * req.frames
        if req.seed_policy == "increment":
            return [(first + i) % (MAX_SEED + 1) for i in range(req.frames)]
        return [first] + [secrets.randbelow(MAX_SEED) for _ in range(req.frames - 1)]


def _motion(req: Img2SeqRequest) -> list[MotionStep] | None:
    if req.motion is None:
        return None
    n = req.frames
    zoom, pan_x, pan_y, rotate = (expand(getattr(req.motion, f), n, f"motion.{f}")
                                  for f in ("zoom", "pan_x", "pan_y", "rotate"))
    if any(z <= 0 for z in zoom):
        raise InvalidInput("motion.zoom must be positive", param="motion.zoom")
    return [MotionStep(zoom[i], pan_x[i], pan_y[i], rotate[i]) for i in range(n)]


def public_params(args) -> dict:
    """The parameters worth recording and returning (no image objects)."""
    skip = ("image", "mask", "prompt", "negative_prompt")
    data = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in skip}
    if "seeds" in data:
        data["seeds"] = list(data["seeds"])
    return data


def _record_fields(*, endpoint: str, provider: str, model: str | None,
                   negative_prompt: str, params: dict, scheduler: str, client: dict | None,
                   choice: Choice, prepared) -> dict:
    """The fields of the job's record (the prompt as typed, translated and expanded)."""
    return {"endpoint": endpoint, "provider": provider, "model": model,
            "prompt": prepared.typed, "prompt_translated": prepared.translated,
            "prompt_expanded": prepared.expanded, "negative_prompt": negative_prompt,
            "params": {**params, "prompting": prepared.summary()}, "scheduler": scheduler,
            "client": client,
            "loras": [{"name": n, "weight": w} for n, w in choice.lora_refs] or None,
            "vae": choice.vae.id if choice.vae else None}
