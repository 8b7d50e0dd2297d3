"""The inpaint region shared by local and remote inpaint: which box is processed, and that
pasting back changes nothing outside the blurred mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.imaging.inpaint_region import InpaintRegion
from tests.utils.images import box_mask, pixels, scene

SIZE = (300, 200)


@pytest.mark.parametrize("box, padding, size", [
    ((120, 80, 150, 100), 10, (64, 64)),  # square processing, wide mask
    ((120, 40, 140, 160), 8, (1024, 768)),  # landscape processing, tall mask
    ((0, 0, 20, 20), 16, (512, 256)),  # in a corner: shifted inside, not cut
    ((280, 150, 299, 199), 4, (256, 512)),  # at the far edge
])
def test_masked_box_holds_the_padded_mask_at_the_processing_aspect(box, padding, size):
    mask = box_mask(SIZE, box)
    region = InpaintRegion.from_mask(scene(*SIZE), mask, size, blur=0, padding=padding,
                                     area="masked")
    b = region.box
    assert 0 <= b.left and 0 <= b.top and b.right <= SIZE[0] and b.bottom <= SIZE[1]
    assert b.left <= max(box[0] - padding, 0) and b.top <= max(box[1] - padding, 0)
    assert b.right >= min(box[2] + 1 + padding, SIZE[0])
    assert b.bottom >= min(box[3] + 1 + padding, SIZE[1])
    assert abs(b.width - b.height * size[0] / size[1]) <= 1  # the aspect, up to rounding
    assert region.crop().size == region.crop_applied_mask().size == size
    assert region.crop_binary_mask().size == size


def test_full_area_processes_the_whole_image():
    region = InpaintRegion.from_mask(scene(*SIZE), box_mask(SIZE, (10, 10, 20, 20)), (64, 64),
                                     blur=4, padding=32, area="full")
    assert region.box.as_tuple() == (0, 0, *SIZE)


@pytest.mark.parametrize("area", ["masked", "full"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_paste_changes_nothing_outside_the_blurred_mask(area, mode):
    image = scene(*SIZE, seed=5).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(SIZE))
    region = InpaintRegion.from_mask(image, box_mask(SIZE, (100, 60, 160, 110)), (96, 64),
                                     blur=6, padding=12, area=area)
    out = region.paste(Image.new("RGB", (96, 64), (255, 0, 255)))
    applied = np.asarray(region.applied_mask)
    assert out.size == SIZE and out.mode == mode
    assert np.array_equal(pixels(out)[applied == 0], pixels(image)[applied == 0])
    assert (pixels(out)[applied == 255] == (255, 0, 255)).all()
    if mode == "RGBA":
        assert out.getchannel("A").tobytes() == image.getchannel("A").tobytes()
