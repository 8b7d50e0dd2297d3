"""Inpainting on a loaded checkpoint, with the kiosk's crop-and-paste-back behaviour.

``inpaint_area="masked"`` crops the masked region (plus ``padding``, widened to the
processing aspect ratio), generates at the processing size and pastes the result back;
``"full"`` processes the whole image. Either way the result is blended over the input
through the blurred mask, so every pixel outside it is the input's pixel, bit for bit,
and the output has the input's size.
"""

from __future__ import annotations

from PIL import Image

from app.imaging.geometry import Box, masked_region, paste_back
from app.imaging.masks import blur_mask
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
        image = args.image.convert("RGB")
        # 1. The mask as applied: the binary mask, blurred outward.
        soft_mask = blur_mask(args.mask, args.mask_blur)
        # 2. The region to process and its processing size.
        box = self._region(soft_mask, args)
        crop_image = image.crop(box.as_tuple()).resize((args.width, args.height),
                                                       Image.Resampling.LANCZOS)
        crop_mask = soft_mask.crop(box.as_tuple()).resize((args.width, args.height),
                                                          Image.Resampling.LANCZOS)
        # 3. Denoise the region.
        pipe = self.model.request_pipeline("inpaint", args.scheduler, vae=self.vae)
        steps_run = max(1, int(args.steps * args.strength))
        reporter.total = steps_run
        reporter.stage_changed("denoising")
        result = pipe(
            **prompt_kwargs(pipe, [args.prompt] * len(args.seeds),
                            [args.negative_prompt] * len(args.seeds), args.clip_skip,
                            args.guidance_scale),
            image=crop_image, mask_image=crop_mask, width=args.width, height=args.height,
            strength=args.strength, num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, generator=make_generators(args.seeds),
            callback_on_step_end=reporter.on_step_end,
        )
        # 4. Paste back through the soft mask: pixels outside it stay untouched.
        reporter.stage_changed("compositing", steps_run)
        outputs = [paste_back(args.image, out, box, soft_mask) for out in result.images]
        return GenerationOutput(images=outputs, seeds=args.seeds, width=image.width,
                                height=image.height, mask_applied=soft_mask)

    @staticmethod
    def _region(soft_mask: Image.Image, args: InpaintInput) -> Box:
        if args.inpaint_area == "full":
            return Box(0, 0, soft_mask.width, soft_mask.height)
        return masked_region(soft_mask, args.padding, args.width / args.height)
