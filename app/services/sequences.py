"""img2seq: one init image into an ordered, recorded, streamable frame sequence.

Every finished frame is stored as a blob, recorded as an output of the job's record and
announced as an SSE ``frame`` event with its URL, in that order, so a frame announced is
a frame recorded, whatever happens next (a crash leaves it on the ``interrupted`` record).
A cancel keeps the finished frames: they are returned as a partial result with status
``cancelled``.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from app.errors import InvalidInput, JobCancelled, JobTimeLimit
from app.imaging.geometry import round_to_multiple
from app.imaging.motion import MotionStep
from app.imaging.packaging import NamedFrame, package
from app.imaging.png import encode_png
from app.persistence.records import OutputImage
from app.pipelines.img2seq import FrameResult, Img2SeqPipeline, SequenceInput
from app.pipelines.registry import ModelEntry
from app.pipelines.schedules import check_keyframes, expand
from app.schemas.generation import MAX_SEED
from app.schemas.sequences import Img2SeqRequest
from app.services.prompting import PreparedPrompt, PromptService, ScheduledPrompt
from app.services.sequence_limits import check_package_canvas, check_sequence_work
from app.services.submission import Accepted, Choice, Finished, JobSubmitter, RunContext


def frame_name(index: int) -> str:
    return f"frame_{index + 1:04d}.png"


class SequenceService:
    def __init__(self, submitter: JobSubmitter, prompts: PromptService) -> None:
        self.jobs = submitter
        self.prompts = prompts

    # -- accepting (threadpool thread) --------------------------------------------------
    def accept_img2seq(self, req: Img2SeqRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None) -> Accepted:
        settings = self.jobs.settings
        self.jobs.check_request(req, client)  # prompt lengths, the caller's jobs
        req = self.prompts.with_style_params(req)
        if "gif" in req.packages and req.fps > 50:
            raise InvalidInput("GIF timing has centisecond steps: fps above 50 plays at 10 "
                               "fps in browsers; use webp or mp4, or fps <= 50", param="fps")
        if req.frames > settings.max_frames:
            raise InvalidInput(f"frames must be at most {settings.max_frames}", param="frames")
        self.jobs.check_steps(req.steps)
        if req.provider not in (None, "local", "default"):
            raise InvalidInput("img2seq runs on local models only", param="provider")
        entry = self.jobs.resolve(req.model, "img2img")
        choice = self.jobs.check_choice(req, entry)
        prompts = req.prompt_schedule or {0: req.prompt or ""}
        check_keyframes(prompts, req.frames, "prompt_schedule")
        strengths = expand(req.strength, req.frames, "strength")
        if any(not 0.0 < s <= 1.0 for s in strengths):
            raise InvalidInput("every strength must lie in (0, 1]", param="strength")
        self.jobs.check_strength(req.steps, min(strengths))
        image = self.jobs.decode(req.image, "image", client)
        width = req.width or round_to_multiple(image.image.width)
        height = req.height or round_to_multiple(image.image.height)
        self.jobs.check_size(width, height)
        check_sequence_work(req.frames, width, height, req.steps, settings.max_sequence_work)
        check_package_canvas(list(req.packages), req.frames, width, height,
                             settings.max_canvas_pixels)
        seeds = self._seeds(req)
        prepared = self._prepare(req, prompts, seeds[0])
        args = SequenceInput(
            image=image.image, prompts=dict(sorted(prepared.keyframes.items())),
            negative_prompt=prepared.negative_prompt, frames=req.frames, width=width, height=height,
            steps=req.steps, guidance_scale=req.guidance_scale, strengths=strengths,
            seeds=seeds, scheduler=req.scheduler, mode=req.mode,
            motion=self._motion(req), color_coherence=req.color_coherence,
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

        def body(ctx: RunContext) -> Finished:
            return self._run(ctx, entry, choice, args, params, req.fps, list(req.packages))

        return self.jobs.submit(
            endpoint="img2seq", entry=entry, prompt=prepared.prompt,
            negative_prompt=prepared.negative_prompt, params=params, scheduler=req.scheduler,
            prepared=prepared,
            seeds=args.seeds, body=body, loop=loop, client=client,
            inputs=lambda: {"input_image_sha256": self.jobs.store(image)}, choice=choice)

    def _prepare(self, req: Img2SeqRequest, prompts: dict[int, str],
                 seed: int) -> ScheduledPrompt:
        """Translate/expand/style every keyframe prompt (the same way for each)."""
        parts: dict[int, PreparedPrompt] = {}
        for frame, text in sorted(prompts.items()):
            parts[frame] = self.prompts.prepare(
                text, req.negative_prompt, style=req.style, translate=req.translate,
                expand=req.expand_prompt, seed=seed)
        return ScheduledPrompt.combine(parts, single=req.prompt is not None)

    def _seeds(self, req: Img2SeqRequest) -> list[int]:
        first = self.jobs.first_seed(req.seed)
        if req.seed_policy == "fixed":
            return [first] * req.frames
        if req.seed_policy == "increment":
            return [(first + i) % (MAX_SEED + 1) for i in range(req.frames)]
        return [first] + [secrets.randbelow(MAX_SEED) for _ in range(req.frames - 1)]

    @staticmethod
    def _motion(req: Img2SeqRequest) -> list[MotionStep] | None:
        if req.motion is None:
            return None
        n = req.frames
        zoom, pan_x, pan_y, rotate = (expand(getattr(req.motion, f), n, f"motion.{f}")
                                      for f in ("zoom", "pan_x", "pan_y", "rotate"))
        if any(z <= 0 for z in zoom):
            raise InvalidInput("motion.zoom must be positive", param="motion.zoom")
        return [MotionStep(zoom[i], pan_x[i], pan_y[i], rotate[i]) for i in range(n)]

    # -- running (worker thread) --------------------------------------------------------
    def _run(self, ctx: RunContext, entry: ModelEntry, choice: Choice, args: SequenceInput,
             params: dict, fps: int, package_kinds: list[str]) -> Finished:
        with self.jobs.model_session(entry, choice, ctx.job.reporter()) as (loaded, vae):
            return self._run_loaded(ctx, entry, loaded, vae, args, params, fps, package_kinds)

    def _run_loaded(self, ctx: RunContext, entry: ModelEntry, loaded, vae,
                    args: SequenceInput, params: dict, fps: int,
                    package_kinds: list[str]) -> Finished:
        job = ctx.job
        reporter = job.reporter()
        t1 = time.perf_counter()
        frames: list[NamedFrame] = []
        refs: list[dict] = []
        outputs: list[OutputImage] = []

        def on_frame_start(index: int) -> None:
            job.set_frame(index, args.frames)

        def on_frame(frame: FrameResult) -> None:
            name = frame_name(frame.index)
            meta = {"prompt": frame.prompt, "negative_prompt": args.negative_prompt,
                    "model": entry.id, "endpoint": "img2seq", "frame": frame.index,
                    "name": name, "seed": frame.seed, "strength": frame.strength,
                    "steps": args.steps, "guidance_scale": args.guidance_scale,
                    "scheduler": args.scheduler, "width": args.width, "height": args.height,
                    "prompt_to": frame.prompt_to, "prompt_weight": frame.prompt_weight}
            png = encode_png(frame.image, meta)
            sha = self.jobs.blobs.put(png, "image/png")
            frames.append(NamedFrame(name, png, frame.image))
            ref = {"index": frame.index, "name": name, "sha256": sha, "url": f"/blobs/{sha}",
                   "width": args.width, "height": args.height, "seed": frame.seed,
                   "strength": frame.strength, "prompt": frame.prompt,
                   "prompt_to": frame.prompt_to, "prompt_weight": frame.prompt_weight}
            refs.append(ref)
            # On the record before it is announced: after a crash the frame is still its
            # owner's (the record ends interrupted, listing it).
            outputs.append(self.jobs.records.add_output(job.record_id, OutputImage(
                sha256=sha, seed=frame.seed, width=args.width, height=args.height,
                kind="frame", name=name, prompt=_frame_prompt(frame), strength=frame.strength)))
            job.emit_event("frame", {"job_id": job.id, **ref})

        def result(packages: list[dict]) -> dict:
            return {"job_id": job.id, "record_id": job.record_id, "endpoint": "img2seq",
                    "provider": "local", "model": entry.id, "frames": refs,
                    "packages": packages, "fps": fps, "parameters": params}

        try:
            Img2SeqPipeline(loaded, vae)(args, reporter, on_frame, on_frame_start)
        except (JobCancelled, JobTimeLimit) as exc:  # the record keeps the frames made
            ctx.lap("inference_s", t1)
            exc.partial = Finished(result=result([]), outputs=outputs,
                                   seeds=args.seeds[:len(refs)])
            raise
        t2 = ctx.lap("inference_s", t1)
        packages = self._package(reporter, frames, fps, package_kinds, outputs)
        ctx.lap("packaging_s", t2)
        return Finished(result=result(packages), outputs=outputs, seeds=args.seeds)

    def _package(self, reporter, frames: list[NamedFrame], fps: int, kinds: list[str],
                 outputs: list[OutputImage]) -> list[dict]:
        refs = []
        for i, kind in enumerate(dict.fromkeys(kinds)):
            reporter.stage_changed("packaging", i)
            built = package(kind, frames, fps)
            sha = self.jobs.blobs.put(built.data, built.content_type)
            outputs.append(OutputImage(sha256=sha, seed=None, width=None, height=None,
                                       kind="package", name=built.name,
                                       content_type=built.content_type))
            refs.append({"kind": kind, "name": built.name, "sha256": sha,
                         "url": f"/blobs/{sha}", "content_type": built.content_type,
                         "size": len(built.data)})
        return refs


def _frame_prompt(frame: FrameResult) -> str:
    if frame.prompt_to is None:
        return frame.prompt
    return f"{frame.prompt} -> {frame.prompt_to} @ {frame.prompt_weight:.4f}"
