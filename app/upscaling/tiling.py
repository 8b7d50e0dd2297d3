"""Run an upscaling model over an image tile by tile, so memory stays bounded.

Each tile is a *window* of at most ``tile_size`` × ``tile_size`` input pixels that the model
sees, and a *core* inside it whose output is kept. Between neighbouring tiles a window
reaches ``overlap`` pixels past its core on each side, so every kept output pixel was
computed with at least ``overlap`` input pixels of real context around it (at the image
border the image ends there anyway, as it does for the untiled model). The cores cover the
image exactly once, so stitching is pasting: no seams, no blending. When ``overlap`` is at
least the network's receptive radius the result equals the untiled one; for deep networks
(ESRGAN's receptive field is larger than any practical overlap) 16-32 px already remove
visible seams, because distant pixels contribute almost nothing.

Windows at the right and bottom edges are shifted inwards so that every window has the
full tile size whenever the image is that large: one shape for every model call, and more
context rather than less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from app.errors import GenerationFailed, InvalidInput

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (end exclusive), in input pixels


@dataclass(frozen=True)
class Tile:
    """One model call: ``window`` is what the model sees, ``core`` what is kept of it."""

    window: Box
    core: Box


def check_tiling(tile_size: int, overlap: int) -> None:
    """Refuse a tile size that leaves no room for a core (InvalidInput naming it)."""
    if tile_size < 0:
        raise InvalidInput("tile_size must be >= 0 (0 = no tiling)", param="tile_size")
    if overlap < 0:
        raise InvalidInput("tile_overlap must be >= 0", param="tile_overlap")
    if tile_size and tile_size <= 2 * overlap:
        raise InvalidInput(
            f"tile_size ({tile_size}) must be larger than twice tile_overlap ({overlap}), "
            "or 0 for no tiling", param="tile_size")


def tile_grid(width: int, height: int, tile_size: int, overlap: int,
              align: int = 1) -> list[Tile]:
    """The tiles that cover a ``width`` × ``height`` image, row by row; one tile (the
    whole image) when ``tile_size`` is 0 or the image fits into one tile.

    ``align`` (the model's ``size_requirements.multiple_of``) puts every window start on
    a multiple of it: models that pixel-unshuffle or work in fixed windows (Real-ESRGAN
    ×2, SwinIR, HAT) compute different things at different phases, so a tile must see
    the grid the whole image would. The last window may then be up to ``align - 1``
    pixels larger than ``tile_size``.
    """
    check_tiling(tile_size, overlap)
    columns = _spans(width, tile_size, overlap, align)
    rows = _spans(height, tile_size, overlap, align)
    return [Tile((wx0, wy0, wx1, wy1), (cx0, cy0, cx1, cy1))
            for (wy0, wy1, cy0, cy1) in rows
            for (wx0, wx1, cx0, cx1) in columns]


def _spans(length: int, tile_size: int, overlap: int, align: int = 1) -> list[Box]:
    """Along one axis: (window start, window end, core start, core end) per tile.

    The first core reaches ``tile_size - overlap`` (its window starts at the border and
    needs no context there), inner cores are ``tile_size - 2 * overlap`` long, and the
    last core ends at ``length`` with its window shifted inwards.
    """
    if tile_size == 0 or length <= tile_size:
        return [(0, length, 0, length)]
    align = max(1, align)
    overlap = -(-overlap // align) * align  # up to a multiple of align
    tile_size = max(tile_size // align * align, 2 * overlap + align)
    if length <= tile_size:
        return [(0, length, 0, length)]
    stride = tile_size - 2 * overlap
    count = -(-(length - 2 * overlap) // stride)  # ceil; >= 2 since length > tile_size
    bounds = [0, *(overlap + i * stride for i in range(1, count)), length]
    spans = []
    for i, (core_start, core_end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        window_start = max(0, min(core_start - overlap, length - tile_size))
        window_start -= window_start % align
        window_end = length if i == count - 1 else window_start + tile_size
        spans.append((window_start, window_end, core_start, core_end))
    return spans


class TileProgress:
    """Counts finished tiles over every pass and reports them to ``on_tile``, which may
    raise (e.g. ``JobCancelled``) to stop the work after the tile it was told about."""

    def __init__(self, total: int, on_tile: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.done = 0
        self._on_tile = on_tile

    def step(self) -> None:
        self.done += 1
        if self._on_tile is not None:
            self._on_tile(self.done, self.total)


def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor,
              scale: int, tiles: list[Tile], *, device: torch.device, dtype: torch.dtype,
              progress: TileProgress) -> torch.Tensor:
    """Upscale ``pixels`` (uint8, 3 × H × W, on the CPU) tile by tile.

    Args:
        model (`Callable`):
            Takes a float image (1 × 3 × h × w in [0, 1], on ``device`` in ``dtype``) and
            returns it ``scale`` times larger.
        pixels (`torch.Tensor`):
            The input image, uint8 CHW on the CPU.
        tiles (`list[Tile]`):
            From :func:`tile_grid`; their cores must cover the image.

    Returns:
        The upscaled image, uint8 3 × (H·scale) × (W·scale) on the CPU. Only one tile's
        floats are ever on ``device``.
    """
    channels, height, width = pixels.shape
    out = torch.empty((channels, height * scale, width * scale), dtype=torch.uint8)
    for tile in tiles:
        wx0, wy0, wx1, wy1 = tile.window
        cx0, cy0, cx1, cy1 = tile.core
        window = pixels[:, wy0:wy1, wx0:wx1].unsqueeze(0).to(device)
        result = model(window.to(dtype).div_(255))
        expected = ((wy1 - wy0) * scale, (wx1 - wx0) * scale)
        if tuple(result.shape[-2:]) != expected:
            raise GenerationFailed(
                f"the upscaling model returned {tuple(result.shape[-2:])} pixels for a "
                f"{wy1 - wy0}x{wx1 - wx0} tile, expected {expected} (scale {scale})")
        kept = result[0, :, (cy0 - wy0) * scale:(cy1 - wy0) * scale,
                      (cx0 - wx0) * scale:(cx1 - wx0) * scale]
        out[:, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] = _to_uint8(kept).cpu()
        del window, result, kept
        progress.step()
    return out


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → uint8, rounded (in fp32, so fp16 outputs round the same way)."""
    return image.float().mul_(255).round_().clamp_(0, 255).to(torch.uint8)
