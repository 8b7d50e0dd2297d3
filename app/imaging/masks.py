"""The mask convention (DESIGN.md) and mask blurring.

- A mask with an alpha channel that has any transparent pixel: change where alpha > 0
  (the kiosk convention: painted, non-transparent pixels).
- Otherwise: change where luminance > 127 (white = change, as in AUTOMATIC1111).
- ``invert`` flips the result.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from app.errors import EmptyMask, MaskMismatch


def binary_mask(mask: Image.Image, image_size: tuple[int, int], invert: bool = False,
                param: str = "mask") -> Image.Image:
    """Return an ``L`` image with 255 where the picture may change and 0 elsewhere."""
    if mask.size != image_size:
        raise MaskMismatch(
            f"{param} is {mask.size[0]}x{mask.size[1]} but the image is "
            f"{image_size[0]}x{image_size[1]}; masks are not resized silently",
            param=param,
        )
    change = _alpha_area(mask)
    if change is None:
        change = np.asarray(mask.convert("L")) > 127
    if invert:
        change = ~change
    if not change.any():
        raise EmptyMask(f"{param} marks no pixel to change", param=param)
    return Image.fromarray(np.where(change, 255, 0).astype(np.uint8), mode="L")


def _alpha_area(mask: Image.Image) -> np.ndarray | None:
    if "transparency" in mask.info or mask.mode in ("PA", "P"):
        # Palette and tRNS-keyed transparency only show up as alpha after conversion.
        mask = mask.convert("RGBA")
    if mask.mode not in ("RGBA", "LA"):
        return None
    alpha = np.asarray(mask.getchannel("A"))
    if (alpha == 255).all():
        return None
    return alpha > 0


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Soften the mask edge. The blurred mask only grows outward by about ``radius``."""
    if radius <= 0:
        return mask
    blurred = mask.filter(ImageFilter.GaussianBlur(radius))
    # Never shrink the painted area: keep the original mask at full strength inside.
    return Image.fromarray(np.maximum(np.asarray(blurred), np.asarray(mask)), mode="L")
