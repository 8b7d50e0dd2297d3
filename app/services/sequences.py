"""POST /img2seq: check the request into a plan (:mod:`app.services.planning`), admit it as
a recorded job (:mod:`app.services.admission`). The frames are made on a worker:
:mod:`app.services.run_sequence`."""

from __future__ import annotations

import asyncio

from app.schemas.sequences import Img2SeqRequest
from app.services.admission import Accepted, Admission
from app.services.planning import Planner


class SequenceService:
    def __init__(self, planner: Planner, admission: Admission) -> None:
        self.planner = planner
        self.admission = admission

    def accept_img2seq(self, req: Img2SeqRequest, loop: asyncio.AbstractEventLoop,
                       client: dict | None = None) -> Accepted:
        return self.admission.admit("img2seq", req, client,
                                    lambda: self.planner.img2seq(req, client), loop)
