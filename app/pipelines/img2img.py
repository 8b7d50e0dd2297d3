"""Image to image on a loaded checkpoint: the input, already fitted to the processing
size, is noised to ``strength`` and denoised towards the prompt."""

from __future__ import annotations

from app.pipelines.progress import StepReporter
from app.pipelines.prompts import prompt_kwargs
from app.pipelines.registry import LoadedModel
from app.pipelines.requests import GenerationOutput, Img2ImgInput
from app.pipelines.txt2img import make_generators


class Img2ImgPipeline:
    """Runs one img2img request. ``__call__`` reads as numbered steps."""

    def __init__(self, model: LoadedModel, vae=None) -> None:
        self.model = model
        self.vae = vae

    def __call__(self, args: Img2ImgInput, reporter: StepReporter) -> GenerationOutput:
        # 1. A pipeline object of our own, sharing the weights (from_pipe), fresh scheduler.
        pipe = self.model.request_pipeline("img2img", args.scheduler, vae=self.vae)
        # 2. Only the last ``strength`` of the schedule runs.
        reporter.total = max(1, int(args.steps * args.strength))
        reporter.stage_changed("denoising")
        result = pipe(
            **prompt_kwargs(pipe, [args.prompt] * len(args.seeds),
                            [args.negative_prompt] * len(args.seeds), args.clip_skip,
                            args.guidance_scale),
            image=args.image, strength=args.strength, num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, generator=make_generators(args.seeds),
            callback_on_step_end=reporter.on_step_end,
        )
        return GenerationOutput(images=list(result.images), seeds=args.seeds,
                                width=args.width, height=args.height)
