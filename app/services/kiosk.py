"""POST /inpainting/: the museum kiosk's legacy route, behaving like the kiosk's original
server where it was more forgiving than ``/inpaint``:

- unknown body fields are ignored (the schema, :class:`KioskInpaintRequest`);
- a mask of another size than the image is resized to it (nearest), and the record says so;
- an empty mask (an empty string, or nothing painted) answers the image unchanged, with a
  ``succeeded`` record whose output is that image;
- a wish with a quote or line break, which the backend's hand-written JSON cannot carry,
  is read back by the request gate (:mod:`app.compat.kiosk_body`).

Everything else is ``/inpaint``'s: the painted region is cropped with padding, generated
at the model's resolution and pasted back; the wish is translated first.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from app.config import Settings
from app.imaging.png import encode_plain_png
from app.persistence.blobs import BlobStore
from app.persistence.records import NewRecord, OutputImage, RecordRepository
from app.providers.registry import ProviderSet
from app.schemas.generation import InpaintRequest, KioskInpaintRequest
from app.services.admission import Accepted
from app.services.generation import GenerationService
from app.services.planning import NothingToChange

REPAIRED_NOTE = ("the body was not valid JSON (the kiosk backend writes it without escaping "
                 "the wish); its fields were read back in their fixed order")
UNCHANGED_NOTE = ("the mask marks no pixel to change: the image is answered unchanged, as "
                  "the kiosk's original server did")


@dataclass
class KioskAnswer:
    """Either a job to wait for, or the image answered at once (an empty mask)."""

    record_id: str
    accepted: Accepted | None = None
    png: bytes | None = None


class KioskService:
    def __init__(self, generation: GenerationService, providers: ProviderSet,
                 records: RecordRepository, blobs: BlobStore, settings: Settings) -> None:
        self.generation = generation
        self.providers = providers
        self.records = records
        self.blobs = blobs
        self.settings = settings

    def inpaint_request(self, body: KioskInpaintRequest) -> InpaintRequest:
        """The kiosk's body as an /inpaint request. ``model: 1`` asks for DALL·E;
        ``model: 0`` the local model, or the "kiosk" chain when one is configured (e.g.
        local, then openai)."""
        provider = "openai" if body.model == 1 else (
            "kiosk" if "kiosk" in self.providers.chains else None)
        s = self.settings
        return InpaintRequest(prompt=body.prompt, image=body.image, mask=body.mask,
                              provider=provider, translate=s.kiosk_translate,
                              expand_prompt=s.kiosk_expand, style=s.kiosk_style,
                              guidance_scale=7.0 if body.guidance_scale is None
                              else body.guidance_scale, inpaint_area="masked")

    def accept(self, body: KioskInpaintRequest, loop: asyncio.AbstractEventLoop,
               client: dict | None, repaired: bool = False) -> KioskAnswer:
        """``repaired``: the body was the backend's hand-written JSON, read back
        (:mod:`app.compat.kiosk_body`); the record says so."""
        request = self.inpaint_request(body)
        notes = (REPAIRED_NOTE,) if repaired else ()
        try:
            accepted = self.generation.accept_inpaint(request, loop, client, "inpainting",
                                                      legacy=True, notes=notes)
        except NothingToChange as nothing:
            return self._unchanged(request, client, nothing, notes)
        return KioskAnswer(record_id=accepted.record_id, accepted=accepted)

    def _unchanged(self, request: InpaintRequest, client: dict | None,
                   nothing: NothingToChange, notes: tuple[str, ...]) -> KioskAnswer:
        image = nothing.image
        png = image.raw if image.format == "PNG" else encode_plain_png(image.image)
        record_id = str(uuid.uuid4())
        uploads = {"input_image_sha256": self.blobs.put(image.raw, image.content_type)}
        if nothing.mask is not None:
            uploads["mask_sha256"] = self.blobs.put(nothing.mask.raw, nothing.mask.content_type)
        # a PNG upload is its own answer: stored once, as input and as output
        out_sha = uploads["input_image_sha256"] if png is image.raw \
            else self.blobs.put(png, "image/png")
        output = OutputImage(sha256=out_sha, seed=None, width=image.image.width,
                             height=image.image.height)
        self.records.create(NewRecord(
            id=record_id, job_id=str(uuid.uuid4()), endpoint="inpainting",
            provider=request.provider or "local", model=request.model, prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            params={"guidance_scale": request.guidance_scale,
                    "notes": [*notes, UNCHANGED_NOTE]},
            client=client, **uploads))
        self.records.finish(record_id, status="succeeded", outputs=[output])
        return KioskAnswer(record_id=record_id, png=png)
