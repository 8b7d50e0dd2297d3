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
        return self.together([args], reporter)[0]

    def together(self, requests: list[Txt2ImgInput], reporter) -> list[GenerationOutput]:
        """Several requests that differ only in prompts and seeds (app/services/batching)
        as one pipeline call, their images in order; one request is the plain call."""
        first = requests[0]
        # 1. A pipeline object of our own, sharing the weights, with a fresh scheduler.
        pipe = self.model.request_pipeline("txt2img", first.scheduler, vae=self.vae)
        # 2. Per-image generators.
        seeds = [seed for args in requests for seed in args.seeds]
        generators = make_generators(seeds)
        # 3. Denoise with progress and cancel after every step, then decode.
        reporter.total = first.steps
        reporter.stage_changed("denoising")
        result = pipe(
            **prompt_kwargs(pipe, [args.prompt for args in requests for _ in args.seeds],
                            [args.negative_prompt for args in requests for _ in args.seeds],
                            first.clip_skip, first.guidance_scale),
            width=first.width, height=first.height,
            num_inference_steps=first.steps, guidance_scale=first.guidance_scale,
            generator=generators, callback_on_step_end=reporter.on_step_end,
        )
        images, outputs = list(result.images), []
        for args in requests:
            mine, images = images[:len(args.seeds)], images[len(args.seeds):]
            outputs.append(GenerationOutput(images=mine, seeds=args.seeds, width=args.width,
                                            height=args.height))
        return outputs
