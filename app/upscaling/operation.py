"""The upscale operation: a built-in resampler or a model, to a scale or an exact size.

A built-in upscaler is one Pillow resize. A model upscaler follows AUTOMATIC1111: run the
model (at most ``max_passes`` times) until the image is at least as large as the target,
then resize to the exact target with Lanczos, so a ×4 model asked for ×3 runs once and is
resized down, and asked for ×8 runs twice. Unlike AUTOMATIC1111 the target is not rounded
down to a multiple of 8, and a request for the image's own size runs no model pass.

Transparency survives: the colour goes through the model as RGB, the alpha channel is
resized separately with Lanczos and put back. Greyscale stays greyscale (``L``/``LA``),
palette images come back as RGB or RGBA.

Sizes are checked before any work: the result must stay within ``max_output_pixels``
(:class:`PayloadTooLarge`), and so must every image the model passes make on the way
(within ``max_work_pixels``, by default four times the output limit: a ×4 model asked
for ×2 makes an image of four times the output's area before the final resize).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from app.errors import InvalidInput, PayloadTooLarge
from app.imaging.decode import to_8bit
from app.upscaling.catalog import UpscalerEntry
from app.upscaling.loading import LoadedUpscaler, UpscalerModels
from app.upscaling.tiling import TileProgress, check_tiling, run_tiled, tile_grid

DEFAULT_TILE_SIZE = 192  # input pixels per tile side, as AUTOMATIC1111's ESRGAN tile
DEFAULT_TILE_OVERLAP = 16  # context pixels each tile sees past the part that is kept
DEFAULT_MAX_OUTPUT_PIXELS = 4096 * 4096
DEFAULT_MAX_PASSES = 3  # AUTOMATIC1111 runs a model at most three times
WORK_PIXELS_FACTOR = 4  # default max_work_pixels = this × max_output_pixels

Size = tuple[int, int]
OnTile = Callable[[int, int], None]
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def upscale(image: Image.Image, upscaler: UpscalerEntry | LoadedUpscaler, *,
            models: UpscalerModels | None = None, scale: float | None = None,
            size: Size | None = None, tile_size: int = DEFAULT_TILE_SIZE,
            tile_overlap: int = DEFAULT_TILE_OVERLAP,
            max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
            max_work_pixels: int | None = None, max_passes: int = DEFAULT_MAX_PASSES,
            on_tile: OnTile | None = None) -> Image.Image:
    """Upscale ``image`` with ``upscaler``.

    Args:
        image (`PIL.Image.Image`):
            The source, any mode (alpha and greyscale are kept, see the module docstring).
        upscaler (`UpscalerEntry` or `LoadedUpscaler`):
            From ``UpscalerCatalog.resolve``; a model entry is loaded through ``models``.
        models (`UpscalerModels`, *optional*):
            The cache that loads model upscalers; required for a model entry.
        scale (`float`, *optional*):
            Factor for both sides (result side = round(side × scale)). Give ``scale`` or
            ``size``; with neither a model upscales by its own scale.
        size (`tuple[int, int]`, *optional*):
            Exact result size (width, height).
        tile_size (`int`, *optional*, defaults to 192):
            Largest tile side, in input pixels, a model sees at once; 0 = no tiling.
        tile_overlap (`int`, *optional*, defaults to 16):
            Context pixels around each tile's kept part (see ``tiling``).
        max_output_pixels (`int`, *optional*, defaults to 4096²):
            Largest result area; beyond it :class:`PayloadTooLarge` before any work.
        max_work_pixels (`int`, *optional*):
            Largest area a model pass may make on the way; default 4 × ``max_output_pixels``.
        max_passes (`int`, *optional*, defaults to 3):
            Most model passes before the final Lanczos resize.
        on_tile (`Callable[[int, int], None]`, *optional*):
            Called as ``on_tile(done, total)`` after every tile (once for a built-in);
            raising from it (``JobCancelled``) stops the work at once.

    Returns:
        The upscaled image, exactly the target size.
    """
    # 1. check the request: tiling, the target size, the output limit
    check_tiling(tile_size, tile_overlap)
    if scale is not None or size is not None or upscaler.scale is not None:
        target = target_size(image.size, scale=scale, size=size,
                             native_scale=upscaler.scale)
        _check_output(target, max_output_pixels, size)

    # 2. a built-in is one resize
    entry = upscaler.entry if isinstance(upscaler, LoadedUpscaler) else upscaler
    if entry.kind == "builtin":
        target = target_size(image.size, scale=scale, size=size)
        result = _resizable(image).resize(target, entry.resample)
        TileProgress(1, on_tile).step()
        return result

    # 3. a model: load it, plan its passes, refuse too large intermediate images
    loaded = upscaler if isinstance(upscaler, LoadedUpscaler) else _load(upscaler, models)
    target = target_size(image.size, scale=scale, size=size, native_scale=loaded.scale)
    _check_output(target, max_output_pixels, size)
    passes = plan_passes(image.size, target, loaded.scale, max_passes)
    _check_work(passes, max_work_pixels or WORK_PIXELS_FACTOR * max_output_pixels)

    # 4. run the passes on the colour, then resize colour and alpha to the target
    colour, alpha, grey = _split(image)
    tile_side = 0 if loaded.tiles_internally else tile_size
    pass_inputs = [image.size, *passes][:len(passes)]
    grids = [tile_grid(w, h, tile_side, tile_overlap, loaded.align) for (w, h) in pass_inputs]
    progress = TileProgress(sum(len(grid) for grid in grids), on_tile)
    with loaded.run_lock, torch.inference_mode():
        for grid in grids:
            colour = _model_pass(loaded, colour, grid, progress)
    if colour.size != target:
        colour = colour.resize(target, Image.Resampling.LANCZOS)
    if alpha is not None:
        alpha = alpha.resize(target, Image.Resampling.LANCZOS)
    return _merge(colour, alpha, grey)


def target_size(source: Size, *, scale: float | None = None, size: Size | None = None,
                native_scale: int | None = None) -> Size:
    """The result size for ``scale`` or ``size`` (or, with neither, ``native_scale``);
    :class:`InvalidInput` naming the argument when they make no size."""
    if scale is not None and size is not None:
        raise InvalidInput("give scale or size, not both", param="scale")
    if size is not None:
        width, height = (int(v) for v in size)
        if width < 1 or height < 1:
            raise InvalidInput(f"size must be positive, got {width}x{height}", param="size")
        return width, height
    if scale is None:
        if native_scale is None:
            raise InvalidInput("give scale or size for this upscaler", param="scale")
        scale = native_scale
    if not math.isfinite(scale) or scale <= 0:
        raise InvalidInput(f"scale must be a positive number, got {scale}", param="scale")
    width, height = source
    return max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5))


def plan_passes(source: Size, target: Size, model_scale: int, max_passes: int) -> list[Size]:
    """The size after each model pass: passes run while the image is smaller than the
    target on either side, at most ``max_passes`` (AUTOMATIC1111's rule)."""
    width, height = source
    passes: list[Size] = []
    while len(passes) < max_passes and (width < target[0] or height < target[1]):
        width, height = width * model_scale, height * model_scale
        passes.append((width, height))
    return passes


def check_upscale_size(source: Size, upscaler: UpscalerEntry, *, scale: float | None = None,
                       size: Size | None = None,
                       max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS) -> Size | None:
    """Request-time check without loading anything: the target size, or ``None`` when
    it is only known once the model is loaded (no scale, no size, a name without one).
    Raises what :func:`upscale` would raise for the size."""
    if scale is None and size is None and upscaler.scale is None:
        if upscaler.kind == "builtin":
            raise InvalidInput("give scale or size for this upscaler", param="scale")
        return None
    target = target_size(source, scale=scale, size=size, native_scale=upscaler.scale)
    _check_output(target, max_output_pixels, size)
    return target


def _load(entry: UpscalerEntry, models: UpscalerModels | None) -> LoadedUpscaler:
    if models is None:
        raise ValueError(f"{entry.name} is a model upscaler: pass models=UpscalerModels(...)")
    return models.get(entry)


def _check_output(target: Size, max_output_pixels: int, size: Size | None) -> None:
    if target[0] * target[1] > max_output_pixels:
        raise PayloadTooLarge(
            f"the upscaled image would be {target[0]}x{target[1]} "
            f"({target[0] * target[1]} pixels), more than the limit of {max_output_pixels}",
            param="size" if size is not None else "scale")


def _check_work(passes: list[Size], max_work_pixels: int) -> None:
    for width, height in passes:
        if width * height > max_work_pixels:
            raise PayloadTooLarge(
                f"the model would make a {width}x{height} image on the way to the target "
                f"(it runs until the image is at least the target size), more than the "
                f"limit of {max_work_pixels} pixels; ask for a smaller scale or use a "
                "model with a scale closer to the one asked for", param="scale")


def _model_pass(loaded: LoadedUpscaler, colour: Image.Image, grid, progress) -> Image.Image:
    pixels = torch.from_numpy(np.asarray(colour, dtype=np.uint8).copy())
    out = run_tiled(loaded.descriptor, pixels.permute(2, 0, 1).contiguous(), loaded.scale,
                    grid, device=loaded.device, dtype=loaded.dtype, progress=progress)
    return Image.fromarray(out.permute(1, 2, 0).contiguous().numpy(), "RGB")


def _resizable(image: Image.Image) -> Image.Image:
    """A mode Pillow resizes with every filter: high bit-depth greyscale becomes 8-bit,
    palette images RGB(A) (Pillow would silently use nearest for them), bilevel L."""
    image = to_8bit(image)
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("1", "PA"):
        return image.convert("L" if image.mode == "1" else "RGBA")
    return image


def _split(image: Image.Image) -> tuple[Image.Image, Image.Image | None, bool]:
    """(RGB colour, alpha or None, whether the source was greyscale)."""
    image = _resizable(image)
    grey = image.mode in _GREY_MODES
    alpha = image.getchannel("A") if image.mode in _ALPHA_MODES else None
    if image.mode in ("RGBa", "La"):  # premultiplied: unpremultiply before the model
        image = image.convert("RGBA" if image.mode == "RGBa" else "LA")
    return image.convert("RGB"), alpha, grey


def _merge(colour: Image.Image, alpha: Image.Image | None, grey: bool) -> Image.Image:
    if grey:
        colour = colour.convert("L")
        return Image.merge("LA", (colour, alpha)) if alpha is not None else colour
    if alpha is not None:
        return Image.merge("RGBA", (*colour.split(), alpha))
    return colour
