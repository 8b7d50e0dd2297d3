"""OpenAI's edit area in Bildwerk's mask convention.

OpenAI marks the area to edit with **fully transparent pixels (alpha 0)**: in the mask if
one is sent, otherwise in the image itself. Bildwerk's masks (``app/imaging/masks.py``)
change where alpha > 0, or, without transparency, where luminance > 127, which is nearly
the opposite. So the area is converted explicitly into a black-and-white ``L`` mask (255 =
edit) that means the same under every reading of our convention.

Inside the area the image is made opaque before it goes to the inpaint service: our
inpaint keeps the input's alpha channel as it is, so pixels that were transparent would
stay invisible after the edit. Outside the area the image is sent as it came, alpha
included, and comes back unchanged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.errors import InvalidInput, MaskMismatch
from app.imaging.decode import ImageLimits, decode_image


@dataclass(frozen=True)
class EditArea:
    image: bytes  # the image to edit, as sent or with the area made opaque (PNG)
    mask: bytes | None  # PNG, L, 255 = edit; None: nothing marked (edit the whole image)


def alpha_of(image: Image.Image) -> np.ndarray | None:
    """The alpha channel as an array, or None for an image without one."""
    if "transparency" in image.info or image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA"):
        return None
    return np.asarray(image.getchannel("A"))


def edit_area(image_data: bytes, mask_data: bytes | None, limits: ImageLimits) -> EditArea:
    """The area to edit (OpenAI's convention) as our mask, and the image to send."""
    image = decode_image(image_data, "image", limits).image
    if mask_data is None:
        alpha = alpha_of(image)
        area = alpha == 0 if alpha is not None else None
        if area is None or not area.any():
            return EditArea(image_data, None)
    else:
        mask = decode_image(mask_data, "mask", limits).image
        if mask.size != image.size:
            raise MaskMismatch(
                f"mask is {mask.width}x{mask.height} but the image is "
                f"{image.width}x{image.height}; they must have the same size", param="mask")
        alpha = alpha_of(mask)
        if alpha is None:
            raise InvalidInput("mask has no alpha channel; the area to edit is where the mask "
                               "is fully transparent (alpha 0)", param="mask")
        area = alpha == 0
        if not area.any():
            raise InvalidInput("mask has no fully transparent pixel (alpha 0), so it marks "
                               "nothing to edit", param="mask")
    return EditArea(_opaque_inside(image, image_data, area), _png(_mask_image(area)))


def _mask_image(area: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(area, 255, 0).astype(np.uint8), mode="L")


def _opaque_inside(image: Image.Image, data: bytes, area: np.ndarray) -> bytes:
    alpha = alpha_of(image)
    if alpha is None or (alpha[area] == 255).all():
        return data  # nothing transparent to repaint: the image as sent
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(area, 255, alpha).astype(np.uint8), mode="L"))
    return _png(rgba)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
