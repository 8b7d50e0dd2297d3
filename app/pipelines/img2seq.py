"""One init image into a sequence of frames, on the checkpoint's shared img2img pipeline.

Each keyframe prompt is encoded once; a frame between keyframes gets the linear blend
of the two keyframes' embeddings. ``loopback`` feeds each output into the next frame
(with optional 2D motion first), ``independent`` starts every frame from the init image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from PIL import Image

from app.imaging.color import match_histogram
from app.imaging.motion import MotionStep, apply_motion
from app.pipelines.progress import StepReporter
from app.pipelines.prompts import prompt_kwargs
from app.pipelines.registry import LoadedModel
from app.pipelines.schedules import bracket
from app.pipelines.txt2img import make_generators


@dataclass
class SequenceInput:
    image: Image.Image
    prompts: dict[int, str]  # keyframes; a single prompt is {0: prompt}
    negative_prompt: str
    frames: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    strengths: list[float]
    seeds: list[int]
    scheduler: str
    mode: Literal["loopback", "independent"]
    motion: list[MotionStep] | None = None
    color_coherence: bool = False
    loras: list[tuple[str, float]] = field(default_factory=list)
    vae: str | None = None
    clip_skip: int = 1


@dataclass
class FrameResult:
    index: int
    image: Image.Image
    seed: int
    strength: float
    prompt: str
    prompt_to: str | None = None
    prompt_weight: float = 0.0


@dataclass
class _Embeddings:
    """Encoded prompts per keyframe plus the shared negative embedding."""

    keys: list[int]
    by_key: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    def at(self, frame: int) -> tuple[dict[str, torch.Tensor], int, int, float]:
        lo, hi, t = bracket(self.keys, frame)
        a, b = self.by_key[lo], self.by_key[hi]
        if t == 0.0:
            return a, lo, hi, t
        return {k: torch.lerp(a[k], b[k], t) if "negative" not in k else a[k] for k in a}, \
            lo, hi, t


class Img2SeqPipeline:
    """Runs one sequence. ``__call__`` reads as numbered steps."""

    def __init__(self, model: LoadedModel, vae=None) -> None:
        self.model = model
        self.vae = vae

    def __call__(self, args: SequenceInput, reporter: StepReporter,
                 on_frame: Callable[[FrameResult], None],
                 on_frame_start: Callable[[int], None] | None = None) -> None:
        # 1. One pipeline object for the whole sequence, with its own scheduler.
        pipe = self.model.request_pipeline("img2img", args.scheduler, vae=self.vae)
        # 2. Encode every keyframe prompt once.
        reporter.stage_changed("encoding")
        embeds = self._encode(pipe, args)
        init = args.image.convert("RGB").resize((args.width, args.height),
                                               Image.Resampling.LANCZOS)
        source, reference = init, None
        for index in range(args.frames):
            reporter.check_cancelled()
            if on_frame_start is not None:
                on_frame_start(index)
            # 3. The frame's source: previous output (loopback) or init, moved.
            if index > 0 and args.motion is not None:
                source = apply_motion(source, args.motion[index])
            # 4. Denoise from the source with the frame's prompt blend, strength and seed.
            frame_embeds, lo, hi, t = embeds.at(index)
            reporter.stage_changed("denoising")
            image = pipe(
                image=source, strength=args.strengths[index],
                num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                generator=make_generators([args.seeds[index]]),
                callback_on_step_end=reporter.on_step_end, **frame_embeds,
            ).images[0]
            # 5. Colour coherence against the first frame.
            if args.color_coherence:
                if reference is None:
                    reference = image
                else:
                    image = match_histogram(image, reference)
            on_frame(FrameResult(
                index=index, image=image, seed=args.seeds[index],
                strength=args.strengths[index], prompt=args.prompts[lo],
                prompt_to=args.prompts[hi] if t else None, prompt_weight=round(t, 4)))
            source = image if args.mode == "loopback" else \
                (source if args.motion is not None else init)

    @staticmethod
    def _encode(pipe, args: SequenceInput) -> _Embeddings:
        cfg = args.guidance_scale > 1.0
        embeds = _Embeddings(keys=sorted(args.prompts))
        for key in embeds.keys:
            given = prompt_kwargs(pipe, [args.prompts[key]], [args.negative_prompt],
                                  args.clip_skip, args.guidance_scale)
            encoded = pipe.encode_prompt(
                prompt=given.get("prompt"), device=pipe._execution_device,
                num_images_per_prompt=1, do_classifier_free_guidance=cfg,
                negative_prompt=given.get("negative_prompt"),
                prompt_embeds=given.get("prompt_embeds"),
                negative_prompt_embeds=given.get("negative_prompt_embeds"),
                clip_skip=given.get("clip_skip"))
            names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                     "negative_pooled_prompt_embeds")
            embeds.by_key[key] = {n: v for n, v in zip(names, encoded, strict=False)
                                  if v is not None}
        return embeds
