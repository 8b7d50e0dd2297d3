"""Tiling: tiles cover the image once with context, start where the model's grid does,
and stitch without seams."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidInput
from app.upscaling import tile_grid, upscale
from tests.utils.images import scene

COMPACT_X4 = "RealESRGAN_x4-tiny-compact"  # receptive radius 4 px: cheap and exact
COMPACT_X2 = "tiny-compact-x2"


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_tiles_cover_the_image_once_with_context_and_alignment():
    for align in (1, 4, 8):
        for width in (1, 17, 48, 49, 100, 257):
            tiles = tile_grid(width, 33, 32, 6, align)
            covered = np.zeros((33, width), dtype=int)
            for tile in tiles:
                (wx0, wy0, wx1, wy1), (cx0, cy0, cx1, cy1) = tile.window, tile.core
                covered[cy0:cy1, cx0:cx1] += 1
                assert wx0 <= cx0 < cx1 <= wx1 and wy0 <= cy0 < cy1 <= wy1
                assert cx0 == 0 or cx0 - wx0 >= 6
                assert cx1 == width or wx1 - cx1 >= 6
                assert len(tiles) == 1 or wx0 % align == 0 or wx1 - wx0 == width
                assert wx1 - wx0 <= 32 + align - 1
            assert (covered == 1).all()
    assert len(tile_grid(100, 60, 0, 16)) == 1  # 0 = no tiling


def test_a_tile_size_without_room_for_a_core_is_refused(catalog, models):
    with pytest.raises(InvalidInput, match="tile_size") as caught:
        upscale(scene(16, 16), catalog.resolve(COMPACT_X2), models=models, tile_size=32,
                tile_overlap=16)
    assert caught.value.param == "tile_size"


@pytest.mark.parametrize(("name", "size", "tile", "overlap"), [
    (COMPACT_X4, (48, 32), 24, 6),             # 6 tiles; receptive radius 4 px
    ("2x-TinyESRGAN-old", (64, 12), 48, 20),   # 3 tiles; receptive radius ~19 px
    ("TinyRealESRGAN_x2", (102, 20), 87, 39),  # 3 tiles, unshuffled: aligned to 4 px
])
def test_tiled_output_equals_untiled_when_the_overlap_covers_the_receptive_field(
        catalog, models, name, size, tile, overlap):
    image = scene(*size, seed=3)
    entry = catalog.resolve(name)
    whole = _pixels(upscale(image, entry, models=models, tile_size=0))
    calls: list[tuple[int, int]] = []
    tiled = _pixels(upscale(image, entry, models=models, tile_size=tile, tile_overlap=overlap,
                            on_tile=lambda done, total: calls.append((done, total))))
    assert len(calls) >= 3  # it really was tiled
    assert np.abs(tiled - whole).max() <= 1  # float rounding at most
    # the same tiles without context show seams: the comparison above can fail
    seamed = _pixels(upscale(image, entry, models=models, tile_size=tile - 2 * overlap,
                             tile_overlap=0))
    assert np.abs(seamed - whole).max() > 10
