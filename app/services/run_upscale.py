"""An upscale on the worker: load the upscaler (cached), run it tile by tile with progress
and cancel after every tile, store the PNG."""

from __future__ import annotations

import time

from app.config import Settings
from app.imaging.png import encode_upscaled_png
from app.persistence.blobs import BlobStore
from app.persistence.records import OutputImage
from app.services.plans import UpscaleWork
from app.services.runner import Finished, RunContext
from app.upscaling.loading import UpscalerModels
from app.upscaling.operation import upscale


class UpscaleRun:
    def __init__(self, settings: Settings, models: UpscalerModels, blobs: BlobStore) -> None:
        self.settings = settings
        self.models = models
        self.blobs = blobs

    def run(self, ctx: RunContext, work: UpscaleWork) -> Finished:
        reporter = ctx.job.reporter()
        t0 = time.perf_counter()
        upscaler = work.upscaler
        if upscaler.kind == "model":
            reporter.stage_changed("loading_model")
            upscaler = self.models.get(work.upscaler)
            reporter.check_cancelled()
        t1 = ctx.lap("load_s", t0)
        reporter.stage_changed("upscaling")

        def on_tile(done: int, total: int) -> None:
            reporter.total = total
            reporter.report("upscaling", done, total)
            reporter.check_cancelled()

        s = self.settings
        image = upscale(work.image, upscaler, models=self.models, scale=work.scale,
                        size=work.size, tile_size=s.upscale_tile_size,
                        tile_overlap=s.upscale_tile_overlap,
                        max_output_pixels=s.upscale_max_output_pixels, on_tile=on_tile)
        t2 = ctx.lap("inference_s", t1)
        reporter.stage_changed("saving", reporter.total)
        name = work.upscaler.name
        meta = {"endpoint": "upscale", "upscaler": name, "scale": work.scale,
                "width": image.width, "height": image.height}
        sha = self.blobs.put(encode_upscaled_png(image, meta), "image/png")
        ctx.lap("save_s", t2)
        fields = {"job_id": ctx.job.id, "record_id": ctx.job.record_id, "endpoint": "upscale",
                  "provider": "local", "model": name,
                  "images": [{"sha256": sha, "url": f"/blobs/{sha}", "width": image.width,
                              "height": image.height, "content_type": "image/png"}],
                  "input": {"sha256": work.input_sha256,
                            "url": f"/blobs/{work.input_sha256}"},
                  "parameters": {"upscaler": name, "scale": work.scale,
                                 "width": image.width, "height": image.height,
                                 "input_width": work.image.width,
                                 "input_height": work.image.height}}
        return Finished(fields=fields, seeds=[], provider="local",
                        outputs=[OutputImage(sha256=sha, seed=None, width=image.width,
                                             height=image.height)])
