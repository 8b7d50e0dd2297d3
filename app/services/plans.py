"""Plans: a request after every check, as plain data.

``app.services.checks`` turns a request into a :class:`JobPlan` (every 4xx is raised
there, before anything is stored or queued). ``app.services.admission`` stores the plan's
uploads, records it and hands it to an :class:`~app.services.executor.Executor`, which runs
its ``work`` through :class:`~app.services.runner.PlanRunner`.

A plan holds no live handles (no model, no database session, no event loop): decoded
images, the chosen model and adapters as registry entries, seeds and limits already
applied. It pickles, so an executor may run it in another process or on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from app.pipelines.img2seq import SequenceInput
from app.pipelines.registry import ModelEntry
from app.pipelines.requests import Img2ImgInput, InpaintInput, Txt2ImgInput
from app.pipelines.vaes import VaeEntry
from app.upscaling.catalog import UpscalerEntry
from app.webhooks.target import WebhookTarget


@dataclass(frozen=True)
class Choice:
    """A request's validated LoRAs (``(LoraEntry, weight)``) and VAE."""

    loras: tuple = ()
    vae: VaeEntry | None = None

    @property
    def lora_refs(self) -> list[tuple[str, float]]:
        return [(entry.id, weight) for entry, weight in self.loras]


@dataclass(frozen=True)
class Upload:
    """An input to store once the job has a place in the queue (its record field names
    the blob: ``input_image_sha256`` or ``mask_sha256``)."""

    record_field: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class GenerationWork:
    """txt2img, img2img or inpaint: the providers to try in order, and the local model if
    any."""

    endpoint: str
    chain: tuple[str, ...]
    entry: ModelEntry | None
    choice: Choice
    remote_model: str | None
    args: Txt2ImgInput | Img2ImgInput | InpaintInput
    prompting: dict | None = None  # the prompt's way (typed, translated, expanded, ...)


@dataclass(frozen=True)
class SequenceWork:
    """img2seq on a local model."""

    entry: ModelEntry
    choice: Choice
    args: SequenceInput
    params: dict
    fps: int
    packages: tuple[str, ...]


@dataclass(frozen=True)
class UpscaleWork:
    """An upscale on the device: the upscaler (app.upscaling), the image and the target
    (``scale`` or ``size``; with neither, a model's own scale)."""

    upscaler: UpscalerEntry
    image: Image.Image
    scale: float | None
    size: tuple[int, int] | None
    input_sha256: str


@dataclass(frozen=True)
class JobPlan:
    """Everything a job needs, checked. ``record`` holds the fields of its record
    (:class:`~app.persistence.records.NewRecord` without the ids and uploads)."""

    endpoint: str
    work: GenerationWork | SequenceWork | UpscaleWork
    record: dict
    seeds: tuple[int, ...]
    owner: str | None
    remote: bool = False  # runs on the remote providers' queue, not the device's
    uploads: tuple[Upload, ...] = field(default=())
    previews: int = 0  # step previews to make while denoising (app.pipelines.preview)
    webhook: WebhookTarget | None = None  # where to POST its events (app.webhooks)
    batch: bool = True  # may share a pipeline call with compatible jobs (app/services/batching.py)
