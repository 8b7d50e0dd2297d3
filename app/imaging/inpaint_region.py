"""The inpaint region: the one crop-and-paste recipe behind local and remote inpaint.

``InpaintRegion.from_mask`` blurs the binary mask outward (the *applied* mask) and picks
the box to process: with ``area="masked"`` the applied mask's bounding box grown by
``padding`` and widened to the processing aspect ratio, clamped to the image; with
``"full"`` the whole image. ``crop`` and the mask crops resize that box to the
processing size; ``paste`` resizes a generated image back into the box and blends it over
the input through the applied mask, so every pixel where it is 0 is the input's, bit for
bit, and the result has the input's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

from app.imaging.masks import blur_mask

Area = Literal["masked", "full"]


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True, eq=False)
class InpaintRegion:
    image: Image.Image  # the input, full size
    mask: Image.Image  # binary ``L``, full size, 255 = change
    applied_mask: Image.Image  # ``mask`` blurred outward: what is blended, and returned
    box: Box  # the part of the input that is processed
    size: tuple[int, int]  # the processing size (width, height)

    @classmethod
    def from_mask(cls, image: Image.Image, mask: Image.Image, size: tuple[int, int], *,
                  blur: int, padding: int, area: Area) -> InpaintRegion:
        applied = blur_mask(mask, blur)
        box = (_padded_box(applied, padding, size[0] / size[1]) if area == "masked"
               else Box(0, 0, *image.size))
        return cls(image, mask, applied, box, size)

    def crop(self) -> Image.Image:
        """The input's box, RGB, at the processing size."""
        return self._crop(self.image.convert("RGB"), Image.Resampling.LANCZOS)

    def crop_applied_mask(self) -> Image.Image:
        """The blurred mask's box at the processing size, edges kept soft (for diffusers,
        which blends by mask value)."""
        return self._crop(self.applied_mask, Image.Resampling.LANCZOS)

    def crop_binary_mask(self) -> Image.Image:
        """The binary mask's box at the processing size, still binary (for providers whose
        masks are on/off; the soft edge comes from :meth:`paste`)."""
        return self._crop(self.mask, Image.Resampling.NEAREST)

    def paste(self, generated: Image.Image) -> Image.Image:
        """``generated`` resized into the box and blended over the input through the
        applied mask. Where that mask is 0 the input survives bit for bit; alpha is never
        repainted."""
        patch = generated.convert("RGB")
        if patch.size != (self.box.width, self.box.height):
            patch = patch.resize((self.box.width, self.box.height), Image.Resampling.LANCZOS)
        canvas = self.image.convert("RGB")
        full = canvas.copy()
        full.paste(patch, (self.box.left, self.box.top))
        result = Image.composite(full, canvas, self.applied_mask)
        if self.image.mode in ("RGBA", "LA") or "transparency" in self.image.info:
            result.putalpha(self.image.convert("RGBA").getchannel("A"))
        return result

    def _crop(self, image: Image.Image, resample: Image.Resampling) -> Image.Image:
        return image.crop(self.box.as_tuple()).resize(self.size, resample)


def _padded_box(mask: Image.Image, padding: int, aspect: float) -> Box:
    """The mask's bounding box grown by ``padding`` and widened to ``aspect``
    (width / height), clamped to the image."""
    bbox = mask.getbbox()
    img_w, img_h = mask.size
    if bbox is None:
        return Box(0, 0, img_w, img_h)
    left, top, right, bottom = bbox
    left, top = max(left - padding, 0), max(top - padding, 0)
    right, bottom = min(right + padding, img_w), min(bottom + padding, img_h)
    w, h = right - left, bottom - top
    if w / h < aspect:
        w = min(round(h * aspect), img_w)
    else:
        h = min(round(w / aspect), img_h)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    left = int(min(max(round(cx - w / 2), 0), img_w - w))
    top = int(min(max(round(cy - h / 2), 0), img_h - h))
    return Box(left, top, left + w, top + h)
