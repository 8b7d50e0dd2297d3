"""The checks every image request goes through, in one place: limits, model and adapter
choice, and image decoding with access control. Each raises the 4xx the caller gets;
:mod:`app.services.planning` calls them while it builds a plan, before anything is
stored or queued."""

from __future__ import annotations

import secrets

from app.config import Settings
from app.errors import InvalidInput, PayloadTooLarge
from app.imaging.decode import DecodedImage, ImageLimits, decode_image, image_bytes
from app.jobs.owners import OwnerLimit
from app.persistence.blobs import BlobStore
from app.persistence.records import KEYLESS, RecordRepository
from app.pipelines.lora_catalog import LoraCatalog
from app.pipelines.registry import ModelEntry, ModelRegistry
from app.pipelines.schedulers import SCHEDULERS
from app.request_limits import caller_key, check_prompt_lengths
from app.schemas.generation import MAX_SEED, ModelChoice
from app.services.plans import Choice


def owner_of(client: dict | None) -> str | None:
    """Who a job counts against: the API key from the client info, else the host."""
    client = client or {}
    return caller_key(client.get("key_id"), client.get("host"))


class InputChecks:
    def __init__(self, settings: Settings, registry: ModelRegistry, loras: LoraCatalog,
                 blobs: BlobStore, records: RecordRepository, owners: OwnerLimit) -> None:
        self.settings = settings
        self.registry = registry
        self.loras = loras
        self.blobs = blobs
        self.records = records
        self.owners = owners

    def request(self, req, client: dict | None) -> None:
        """First of all: prompt lengths, and whether the caller may queue another job."""
        check_prompt_lengths(req, self.settings.max_prompt_chars)
        self.owners.check(owner_of(client))

    def steps(self, steps: int) -> None:
        if steps > self.settings.max_steps:
            raise InvalidInput(f"steps must be at most {self.settings.max_steps}",
                               param="steps")

    def num_images(self, count: int) -> None:
        if count > self.settings.max_images:
            raise InvalidInput(f"num_images must be at most {self.settings.max_images}",
                               param="num_images")

    def size(self, width: int, height: int, images: int = 1) -> None:
        s = self.settings
        if max(width, height) > s.max_width or width * height > s.max_pixels:
            raise PayloadTooLarge(
                f"{width}x{height} exceeds the limit of {s.max_width}px per side and "
                f"{s.max_pixels} pixels", param="width")
        if images * width * height > s.max_batch_pixels:
            raise PayloadTooLarge(
                f"{images} images of {width}x{height} exceed the batch budget of "
                f"{s.max_batch_pixels} pixels (BILDWERK_MAX_BATCH_PIXELS)", param="num_images")

    @staticmethod
    def scheduler(scheduler: str, steps: int) -> None:
        limit = SCHEDULERS[scheduler].max_steps
        if limit is not None and steps > limit:
            raise InvalidInput(f"scheduler {scheduler} runs at most {limit} steps",
                               param="steps")

    @staticmethod
    def strength(steps: int, strength: float, param: str = "strength") -> None:
        if int(steps * strength) < 1:
            raise InvalidInput(
                f"steps x strength must be at least 1 (got {steps} x {strength}): raise "
                "strength or steps", param=param)

    def model(self, model: str | None, task: str) -> ModelEntry:
        return self.registry.resolve_for(model, task)  # type: ignore[arg-type]

    def choice(self, req: ModelChoice, entry: ModelEntry) -> Choice:
        """Validate a request's LoRAs and VAE against the model; 422 naming the field."""
        self.scheduler(req.scheduler, getattr(req, "steps", 1))
        if entry.text_layers is not None and req.clip_skip > entry.text_layers:
            raise InvalidInput(f"clip_skip must be at most {entry.text_layers} for model "
                               f"{entry.id!r} (its text encoder has {entry.text_layers} "
                               "layers)", param="clip_skip")
        loras = tuple((self.loras.resolve(ref.name, entry.context_dim, entry.family),
                       ref.weight) for ref in req.loras)
        vae = self.registry.resolve_vae(req.vae, entry) if req.vae else None
        return Choice(loras=loras, vae=vae)

    def image(self, value: str, param: str, client: dict | None = None) -> DecodedImage:
        """Decode an image field. A key without admin may name only the blobs of its own
        records by sha256 (a keyless loopback caller: the keyless records'); any other blob
        is "no stored blob", as if it did not exist.

        The upload's own limits (``max_input_side``/``max_input_pixels``, 8192 px by
        default) are not the processing limits: what a model processes is checked by
        :meth:`size` (an inpaint crop, the img2img size), so a map larger than a model could
        take whole is accepted when only a crop of it is processed."""
        limits = ImageLimits(max_pixels=self.settings.max_input_pixels,
                             max_side=self.settings.max_input_side)
        client = client or {}
        reader = self.blobs.read
        owner = client.get("key_id") or (KEYLESS if client.get("admin") is False else None)
        if owner and not client.get("admin"):
            def reader(sha: str) -> bytes:
                if not self.records.blob_belongs_to(sha, owner):
                    raise LookupError(sha)
                return self.blobs.read(sha)
        return decode_image(image_bytes(value, param, reader), param, limits)

    @staticmethod
    def first_seed(seed: int | None) -> int:
        return seed if seed is not None and seed >= 0 else secrets.randbelow(MAX_SEED)
