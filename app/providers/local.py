"""Local diffusers as a :class:`Provider`: capabilities and availability from the model
registry, and ``generate`` through the same registry and pipeline classes the HTTP
routes use. (The routes run local work as jobs with progress, cancel, LoRAs and VAEs;
this is the plain synchronous form, for callers such as scripts and chains.)"""

from __future__ import annotations

import torch

from app.pipelines.inpaint import InpaintPipeline
from app.pipelines.progress import StepReporter
from app.pipelines.registry import ModelRegistry
from app.pipelines.requests import InpaintInput, Txt2ImgInput
from app.pipelines.schedulers import DEFAULT_SCHEDULER
from app.pipelines.txt2img import Txt2ImgPipeline
from app.providers.base import (
    Availability,
    Capabilities,
    Provider,
    ProviderRefused,
    RemoteImage,
    RemoteRequest,
    RemoteResult,
)


class LocalProvider(Provider):
    name = "local"

    def __init__(self, registry: ModelRegistry, max_batch: int = 8) -> None:
        self.registry = registry
        self.max_batch = max_batch

    def capabilities(self) -> Capabilities:
        return Capabilities(tasks=("txt2img", "inpaint", "img2img"),
                            models=tuple(e.id for e in self.registry.list()), sizes=None,
                            max_batch=self.max_batch)

    def availability(self) -> Availability:
        if not self.registry.list():
            return Availability(False, "no local model discovered")
        return Availability(True)

    def generate(self, request: RemoteRequest) -> RemoteResult:
        if request.task not in ("txt2img", "inpaint"):
            raise ProviderRefused(f"local generate() serves txt2img and inpaint; use "
                                  f"/img2seq for {request.task}", param="provider")
        entry = self.registry.resolve_for(request.model, request.task)  # type: ignore[arg-type]
        loaded = self.registry.load(entry.id)
        first = request.seed if request.seed is not None else 0
        common = dict(prompt=request.prompt, negative_prompt=request.negative_prompt,
                      width=request.width, height=request.height,
                      steps=request.steps or 25, guidance_scale=request.guidance_scale or 7.0,
                      seeds=[first + i for i in range(request.num_images)],
                      scheduler=DEFAULT_SCHEDULER)
        reporter = StepReporter(report=lambda *_: None, cancelled=lambda: False)
        with torch.inference_mode():
            if request.task == "txt2img":
                output = Txt2ImgPipeline(loaded)(Txt2ImgInput(**common), reporter)
            else:
                output = InpaintPipeline(loaded)(InpaintInput(
                    **common, image=request.image, mask=request.mask,
                    strength=request.strength, inpaint_area="full"), reporter)
        return RemoteResult(images=[RemoteImage(image, seed) for image, seed in
                                    zip(output.images, output.seeds, strict=True)],
                            model=entry.id)
