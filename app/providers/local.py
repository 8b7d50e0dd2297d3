"""Local diffusers as a :class:`Provider`: capabilities and availability from the model
registry, for ``GET /providers``, chains and the doctor. Local generation itself runs
only as jobs on the device queue, through the HTTP routes (``POST /txt2img``,
``/inpaint``, ``/img2seq``: progress, cancel, time limit, LoRAs, VAEs); ``generate``
refuses, so there is no second, unqueued local path."""

from __future__ import annotations

from app.pipelines.registry import ModelRegistry
from app.providers.base import (
    Availability,
    Capabilities,
    Provider,
    ProviderRefused,
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
        raise ProviderRefused("local generation runs as a job on the device queue through "
                              "the HTTP routes (POST /txt2img, /inpaint, /img2seq), not "
                              "through LocalProvider.generate", param="provider")
