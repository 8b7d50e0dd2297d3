"""Read a generated scene back: background colour, foreground colour and shape.

The background is the median colour of the border pixels; the foreground is every pixel
far from it. Colours are classified by the nearest palette colour, the shape by how much
of its bounding box the foreground fills (circle ~0.785, square ~1.0, triangle ~0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.micro.shapes import PALETTE

FOREGROUND_DISTANCE = 70.0  # RGB distance from the background colour
MIN_FOREGROUND = 0.03  # fraction of the picture; less is "no shape"
_NAMES = list(PALETTE)
_COLOURS = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)


@dataclass
class Reading:
    background: str
    colour: str | None
    shape: str | None
    fill: float | None
    foreground_fraction: float
    background_rgb: tuple[int, int, int]
    colour_rgb: tuple[int, int, int] | None


def nearest_colour(rgb) -> str:
    d = ((_COLOURS - np.asarray(rgb, dtype=np.float32)) ** 2).sum(axis=1)
    return _NAMES[int(d.argmin())]


def shape_of(fill: float) -> str:
    if fill >= 0.89:
        return "square"
    if fill >= 0.64:
        return "circle"
    return "triangle"


def foreground_mask(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, background RGB) of an HxWx3 uint8 array."""
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]).astype(np.float32)
    background = np.median(border, axis=0)
    dist = np.sqrt(((array.astype(np.float32) - background) ** 2).sum(axis=-1))
    return dist > FOREGROUND_DISTANCE, background


def read_scene(image: Image.Image) -> Reading:
    array = np.asarray(image.convert("RGB"))
    mask, background = foreground_mask(array)
    fraction = float(mask.mean())
    bg = tuple(int(v) for v in background)
    if fraction < MIN_FOREGROUND:
        return Reading(nearest_colour(background), None, None, None, fraction, bg, None)
    pixels = array[mask].astype(np.float32)
    colour = np.median(pixels, axis=0)
    ys, xs = np.nonzero(mask)
    # robust bounding box: ignore a few stray pixels
    y0, y1 = np.percentile(ys, [1, 99])
    x0, x1 = np.percentile(xs, [1, 99])
    box = (y1 - y0 + 1) * (x1 - x0 + 1)
    inside = mask[int(y0):int(y1) + 1, int(x0):int(x1) + 1].sum()
    fill = float(min(1.0, inside / box))
    return Reading(nearest_colour(background), nearest_colour(colour), shape_of(fill),
                   round(fill, 3), round(fraction, 3), bg, tuple(int(v) for v in colour))
