"""Upscalers: the built-in resamplers (``Lanczos``, ``Nearest``) and model upscalers
(ESRGAN, Real-ESRGAN, SwinIR, HAT, … through spandrel), named as AUTOMATIC1111 names them.

A service uses it in three steps::

    catalog = UpscalerCatalog(models_dir / "upscalers")     # at startup; refresh() rescans
    models = UpscalerModels(runtime, capacity=1)            # loaded models, LRU

    entry = catalog.resolve(name)                           # request check: NotFound
    check_upscale_size(image.size, entry, scale=2)          # request check: 413 / 422
    result = upscale(image, entry, models=models, scale=2,  # on the worker
                     on_tile=progress_callback)

Modules: ``catalog`` (what exists, by name), ``loading`` (spandrel, the model cache),
``tiling`` (bounded memory, seam-free stitching), ``operation`` (``upscale``: sizes,
passes, alpha, limits), ``spandrel_import`` (spandrel without torchvision). See
docs/upscaling.md.
"""

from app.upscaling.catalog import (
    BUILTIN_UPSCALERS,
    MODEL_SUFFIXES,
    UpscalerCatalog,
    UpscalerEntry,
    scale_from_name,
)
from app.upscaling.loading import (
    DEFAULT_CACHE_SIZE,
    LoadedUpscaler,
    UpscalerModels,
    load_upscaler,
)
from app.upscaling.operation import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PASSES,
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    check_upscale_size,
    plan_passes,
    target_size,
    upscale,
)
from app.upscaling.spandrel_import import TorchvisionMissing, import_spandrel
from app.upscaling.tiling import Tile, tile_grid

__all__ = [
    "BUILTIN_UPSCALERS",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_MAX_PASSES",
    "DEFAULT_TILE_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "MODEL_SUFFIXES",
    "LoadedUpscaler",
    "Tile",
    "TorchvisionMissing",
    "UpscalerCatalog",
    "UpscalerEntry",
    "UpscalerModels",
    "check_upscale_size",
    "import_spandrel",
    "load_upscaler",
    "plan_passes",
    "scale_from_name",
    "target_size",
    "tile_grid",
    "upscale",
]
