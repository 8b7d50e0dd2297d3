"""POST /txt2img, /img2img, /inpaint (and the kiosk's /inpainting/): check the request into a plan
(:mod:`app.services.planning`), admit it as a recorded job (:mod:`app.services.admission`).
The work runs on a worker: :mod:`app.services.run_generation`."""

from __future__ import annotations

import asyncio

from app.schemas.generation import Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from app.services.admission import Accepted, Admission
from app.services.planning import Planner


class GenerationService:
    """``previews``: how many step previews the job makes while denoising (``job.preview``
    holds the latest, subscribers get ``preview`` events): the compatibility APIs'
    progress images and partial images."""

    def __init__(self, planner: Planner, admission: Admission) -> None:
        self.planner = planner
        self.admission = admission

    def accept_txt2img(self, req: Txt2ImgRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None, previews: int = 0) -> Accepted:
        return self.admission.admit("txt2img", req, client,
                                    lambda: self.planner.txt2img(req, client), loop, previews)

    def accept_inpaint(self, req: InpaintRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None, endpoint: str = "inpaint",
                       previews: int = 0, legacy: bool = False,
                       notes: tuple[str, ...] = ()) -> Accepted:
        """``legacy``: the kiosk's /inpainting/ (a mask of another size is resized; an
        empty one raises :class:`~app.services.planning.NothingToChange`); ``notes`` go on
        the record's ``params.notes``."""
        return self.admission.admit(
            endpoint, req, client,
            lambda: self.planner.inpaint(req, client, endpoint, legacy=legacy, notes=notes),
            loop, previews)

    def accept_img2img(self, req: Img2ImgRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None, endpoint: str = "img2img",
                       previews: int = 0) -> Accepted:
        return self.admission.admit(endpoint, req, client,
                                    lambda: self.planner.img2img(req, client, endpoint),
                                    loop, previews)
