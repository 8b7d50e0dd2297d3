"""Validation images during and after a run: ``<work dir>/validation/step-<n>/<i>.png``,
one per validation prompt (seed ``seed + i``).

The pipeline (txt2img, or inpaint for an inpaint run) is built once, on first use, from
the modules being trained, so it always shows the current weights. An inpaint run repaints
its first example: the image as the training transform crops it, with the dataset's mask
(or the random rectangle of step 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training._data import Example, Transform, random_rect_mask
from training.base_model import BaseParts
from training.config import TrainConfig


class ValidationImages:
    def __init__(self, cfg: TrainConfig, accelerator, parts: BaseParts, *,
                 unet: torch.nn.Module, text_encoder: torch.nn.Module, train_te: bool,
                 inpaint: bool, example: Example, transform: Transform) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.parts = parts
        self.unet = unet
        self.text_encoder = text_encoder
        self.train_te = train_te
        self.inpaint = inpaint
        self.example = example
        self.transform = transform
        self._pipe = None

    def _pipeline(self):
        if self._pipe is not None:
            return self._pipe
        import diffusers
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        sched_cls = getattr(diffusers, self.parts.scheduler_config.get("_class_name", ""),
                            diffusers.DDPMScheduler)
        cls = StableDiffusionInpaintPipeline if self.inpaint else StableDiffusionPipeline
        pipe = cls(vae=self.parts.vae, text_encoder=self.accelerator.unwrap_model(
            self.text_encoder), tokenizer=self.parts.tokenizer,
            unet=self.accelerator.unwrap_model(self.unet),
            scheduler=sched_cls.from_config(self.parts.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        if self.inpaint:
            from PIL import Image

            ex = self.example
            with Image.open(ex.image) as img:
                mask_img = None
                if ex.mask is not None:
                    with Image.open(ex.mask) as m:
                        mask_img = m.copy()
                pixels, mask = self.transform(img, mask_img, 0, 0, False)
            if mask is None:
                mask = random_rect_mask(self.cfg.resolution, self.cfg.seed, 0, 0)
            self._image = Image.fromarray(((pixels.permute(1, 2, 0) + 1) * 127.5)
                                          .round().clamp(0, 255).byte().numpy())
            self._mask = Image.fromarray((mask[0] * 255).byte().numpy())
        return pipe

    def render(self, step: int, work_dir: Path) -> Path | None:
        """The images of ``step`` under ``work_dir``; None without validation prompts.
        The trained modules are in eval mode meanwhile, and back in train mode after."""
        cfg = self.cfg
        if not cfg.validation_prompts:
            return None
        pipe = self._pipeline()
        out = work_dir / "validation" / f"step-{step}"
        out.mkdir(parents=True, exist_ok=True)
        modules = [self.unet] + ([self.text_encoder] if self.train_te else [])
        for m in modules:
            m.eval()
        try:
            for i, prompt in enumerate(cfg.validation_prompts):
                kwargs: dict[str, Any] = dict(
                    prompt=prompt, num_inference_steps=cfg.validation_inference_steps,
                    height=cfg.resolution, width=cfg.resolution,
                    generator=torch.Generator("cpu").manual_seed(cfg.seed + i))
                if self.inpaint:
                    kwargs.update(image=self._image, mask_image=self._mask, strength=1.0)
                with torch.no_grad(), self.accelerator.autocast():
                    image = pipe(**kwargs).images[0]
                image.save(out / f"{i}.png")
        finally:
            for m in modules:
                m.train()
        return out


__all__ = ["ValidationImages"]
