"""Fitting an input image to the processing size, the three ways AUTOMATIC1111 offers
(``resize_mode`` 0, 1, 2): stretch it, cover and crop the overflow, or contain it and fill
the borders with its stretched edges."""

from __future__ import annotations

from typing import Literal

from PIL import Image

ResizeMode = Literal["resize", "crop", "fill"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("resize", "crop", "fill")


def fit_image(image: Image.Image, size: tuple[int, int], mode: ResizeMode = "resize"
              ) -> Image.Image:
    """``image`` (RGB) at exactly ``size``."""
    image = image.convert("RGB")
    width, height = size
    if image.size == size:
        return image.copy()
    if mode == "resize":
        return image.resize(size, Image.Resampling.LANCZOS)
    ratio = (max if mode == "crop" else min)(width / image.width, height / image.height)
    scaled = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                          Image.Resampling.LANCZOS)
    if mode == "crop":
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    return _fill_borders(scaled, size)


def _fill_borders(scaled: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``scaled`` centred on a canvas of ``size``; the empty bands repeat its outermost
    row or column of pixels (stretched), so the model sees no hard black edge."""
    width, height = size
    canvas = Image.new("RGB", size)
    left, top = (width - scaled.width) // 2, (height - scaled.height) // 2
    canvas.paste(scaled, (left, top))
    if top > 0:
        canvas.paste(scaled.crop((0, 0, scaled.width, 1)).resize((scaled.width, top)),
                     (left, 0))
    bottom = height - top - scaled.height
    if bottom > 0:
        edge = scaled.crop((0, scaled.height - 1, scaled.width, scaled.height))
        canvas.paste(edge.resize((scaled.width, bottom)), (left, top + scaled.height))
    if left > 0:
        canvas.paste(scaled.crop((0, 0, 1, scaled.height)).resize((left, scaled.height)),
                     (0, top))
    right = width - left - scaled.width
    if right > 0:
        edge = scaled.crop((scaled.width - 1, 0, scaled.width, scaled.height))
        canvas.paste(edge.resize((right, scaled.height)), (left + scaled.width, top))
    return canvas
