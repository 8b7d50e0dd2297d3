"""POST /upscale and GET /upscalers: check the request into a plan, admit it as a
recorded job on the device queue. The work runs in :mod:`app.services.run_upscale`."""

from __future__ import annotations

import asyncio
import hashlib

from app.services.admission import Accepted, Admission
from app.services.checks import InputChecks, owner_of
from app.services.plans import JobPlan, Upload, UpscaleWork
from app.upscaling.catalog import UpscalerCatalog
from app.upscaling.loading import UpscalerModels
from app.upscaling.operation import check_upscale_size
from app.webhooks.validation import check_webhook

BUILTIN_DEFAULT_SCALE = 2.0  # Lanczos/Nearest without scale or size


class UpscaleService:
    def __init__(self, checks: InputChecks, catalog: UpscalerCatalog,
                 models: UpscalerModels, admission: Admission) -> None:
        self.check = checks
        self.catalog = catalog
        self.models = models
        self.admission = admission
        self.settings = checks.settings

    def upscalers(self) -> list[dict]:
        """Every upscaler a request may name (the folder is scanned again each time)."""
        self.catalog.refresh()
        loaded = self.models.loaded_scales()
        return [{"name": e.name, "kind": e.kind, "scale": loaded.get(e.name, e.scale),
                 "path": e.path.name if e.path else None, "size_bytes": e.size_bytes,
                 "loaded": e.name in loaded} for e in self.catalog.entries()]

    def plan(self, req, client: dict | None, endpoint: str = "upscale") -> JobPlan:
        self.check.owners.check(owner_of(client))  # may the caller queue another job
        webhook = check_webhook(getattr(req, "webhook", None), client,
                                self.settings.webhook_allowed_hosts)
        entry = self.catalog.resolve(req.upscaler)
        image = self.check.image(req.image, "image", client)
        scale = req.scale
        if scale is None and req.size is None and entry.kind == "builtin":
            scale = BUILTIN_DEFAULT_SCALE
        target = check_upscale_size(image.image.size, entry, scale=scale, size=req.size,
                                    max_output_pixels=self.settings.upscale_max_output_pixels)
        sha = hashlib.sha256(image.raw).hexdigest()
        params = {"upscaler": entry.name, "kind": entry.kind, "scale": scale,
                  "width": req.size[0] if req.size else None,
                  "height": req.size[1] if req.size else None,
                  "input_width": image.image.width, "input_height": image.image.height,
                  "target": list(target) if target else None,
                  "tile_size": self.settings.upscale_tile_size}
        work = UpscaleWork(upscaler=entry, image=image.image, scale=scale, size=req.size,
                           input_sha256=sha)
        return JobPlan(
            endpoint=endpoint, work=work, seeds=(), owner=owner_of(client), webhook=webhook,
            uploads=(Upload("input_image_sha256", image.raw, image.content_type),),
            record={"endpoint": endpoint, "provider": "local", "model": entry.name,
                    "prompt": "", "negative_prompt": None, "params": params,
                    "client": client})

    def accept(self, req, loop: asyncio.AbstractEventLoop,
               client: dict | None = None, endpoint: str = "upscale") -> Accepted:
        return self.admission.admit(endpoint, req, client,
                                    lambda: self.plan(req, client, endpoint), loop)
