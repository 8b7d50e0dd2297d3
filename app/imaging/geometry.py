"""Crop-and-paste geometry for ``inpaint_area=masked``."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


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


def masked_region(mask: Image.Image, padding: int, target_aspect: float) -> Box:
    """The mask's bounding box grown by ``padding`` and widened to ``target_aspect``
    (width / height), clamped to the image."""
    bbox = mask.getbbox()
    img_w, img_h = mask.size
    if bbox is None:
        return Box(0, 0, img_w, img_h)
    left, top, right, bottom = bbox
    left, top = max(left - padding, 0), max(top - padding, 0)
    right, bottom = min(right + padding, img_w), min(bottom + padding, img_h)
    return _fit_aspect(Box(left, top, right, bottom), target_aspect, img_w, img_h)


def _fit_aspect(box: Box, aspect: float, img_w: int, img_h: int) -> Box:
    w, h = box.width, box.height
    if w / h < aspect:
        w = min(round(h * aspect), img_w)
    else:
        h = min(round(w / aspect), img_h)
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    left = int(min(max(round(cx - w / 2), 0), img_w - w))
    top = int(min(max(round(cy - h / 2), 0), img_h - h))
    return Box(left, top, left + w, top + h)


def round_to_multiple(value: int, multiple: int = 8, minimum: int = 64) -> int:
    return max(minimum, (value // multiple) * multiple)


def paste_back(original: Image.Image, generated: Image.Image, box: Box,
               soft_mask: Image.Image) -> Image.Image:
    """Resize ``generated`` into ``box`` and blend it over ``original`` through
    ``soft_mask`` (full image size). Where ``soft_mask`` is 0 the original survives
    bit for bit."""
    patch = generated.convert("RGB")
    if patch.size != (box.width, box.height):
        patch = patch.resize((box.width, box.height), Image.Resampling.LANCZOS)
    canvas = original.convert("RGB")
    full = canvas.copy()
    full.paste(patch, (box.left, box.top))
    result = Image.composite(full, canvas, soft_mask)
    if original.mode in ("RGBA", "LA") or "transparency" in original.info:
        result.putalpha(original.convert("RGBA").getchannel("A"))  # alpha is never repainted
    return result
