"""Text to image on a loaded checkpoint."""

from __future__ import annotations

import torch

from app.pipelines.progress import StepReporter
from app.pipelines.prompts import prompt_kwargs
from app.pipelines.registry import LoadedModel
from app.pipelines.requests import GenerationOutput, Txt2ImgInput


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: the same seed gives the same noise on any device."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


class Txt2ImgPipeline:
    """Runs one txt2img request. ``__call__`` reads as numbered steps."""

    def __init__(self, model: LoadedModel, vae=None) -> None:
        self.model = model
        self.vae = vae

    def __call__(self, args: Txt2ImgInput, reporter: StepReporter) -> GenerationOutput:
        # 1. A pipeline object of our own, sharing the weights, with a fresh scheduler.
        pipe = self.model.request_pipeline("txt2img", args.scheduler, vae=self.vae)
        # 2. Per-image generators.
        generators = make_generators(args.seeds)
        # 3. Denoise with progress and cancel after every step, then decode.
        reporter.total = args.steps
        reporter.stage_changed("denoising")
        result = pipe(
            **prompt_kwargs(pipe, [args.prompt] * len(args.seeds),
                            [args.negative_prompt] * len(args.seeds), args.clip_skip,
                            args.guidance_scale),
            width=args.width, height=args.height,
            num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
            generator=generators, callback_on_step_end=reporter.on_step_end,
        )
        return GenerationOutput(images=list(result.images), seeds=args.seeds,
                                width=args.width, height=args.height)
