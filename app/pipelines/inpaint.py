"""Inpainting on a loaded checkpoint, with the kiosk's crop-and-paste-back behaviour.

The region to process, its crops at the processing size and the paste back through the
blurred mask are :class:`~app.imaging.inpaint_region.InpaintRegion` (shared with remote
inpaint): every pixel outside the blurred mask is the input's pixel, bit for bit, and
the output has the input's size.
"""

from __future__ import annotations

from app.imaging.inpaint_region import InpaintRegion
from app.pipelines.progress import StepReporter
from app.pipelines.prompts import prompt_kwargs
from app.pipelines.registry import LoadedModel
from app.pipelines.requests import GenerationOutput, InpaintInput
from app.pipelines.txt2img import make_generators


class InpaintPipeline:
    """Runs one inpaint request. ``__call__`` reads as numbered steps."""

    def __init__(self, model: LoadedModel, vae=None) -> None:
        self.model = model
        self.vae = vae

    def __call__(self, args: InpaintInput, reporter: StepReporter) -> GenerationOutput:
        # 1. The mask as applied (blurred outward) and the region to process.
        region = InpaintRegion.from_mask(args.image, args.mask, (args.width, args.height),
                                         blur=args.mask_blur, padding=args.padding,
                                         area=args.inpaint_area)
        # 2. Denoise the region at the processing size.
        pipe = self.model.request_pipeline("inpaint", args.scheduler, vae=self.vae)
        steps_run = max(1, int(args.steps * args.strength))
        reporter.total = steps_run
        reporter.stage_changed("denoising")
        result = pipe(
            **prompt_kwargs(pipe, [args.prompt] * len(args.seeds),
                            [args.negative_prompt] * len(args.seeds), args.clip_skip,
                            args.guidance_scale),
            image=region.crop(), mask_image=region.crop_applied_mask(), width=args.width,
            height=args.height, strength=args.strength, num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, generator=make_generators(args.seeds),
            callback_on_step_end=reporter.on_step_end,
        )
        # 3. Paste back through the applied mask: pixels outside it stay untouched.
        reporter.stage_changed("compositing", steps_run)
        outputs = [region.paste(out) for out in result.images]
        return GenerationOutput(images=outputs, seeds=args.seeds, width=args.image.width,
                                height=args.image.height, mask_applied=region.applied_mask)
