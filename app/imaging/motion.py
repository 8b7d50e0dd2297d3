"""2D camera motion between loopback steps: zoom, pan and rotate about the centre.

Pixels that would come from outside the frame are filled by mirroring the edges, so a
zoom-out or pan never paints flat borders that img2img would then preserve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class MotionStep:
    zoom: float = 1.0  # >1 moves in
    pan_x: float = 0.0  # pixels, + moves the content right
    pan_y: float = 0.0  # pixels, + moves the content down
    rotate: float = 0.0  # degrees, counter-clockwise

    @property
    def is_identity(self) -> bool:
        return self.zoom == 1.0 and self.pan_x == 0 and self.pan_y == 0 and self.rotate == 0


def apply_motion(image: Image.Image, step: MotionStep) -> Image.Image:
    """``image`` moved by ``step``, same size. Edges are mirrored, never left empty."""
    if step.is_identity:
        return image
    w, h = image.size
    margin = max(w, h)
    padded = Image.fromarray(np.pad(np.asarray(image.convert("RGB")),
                                    ((margin, margin), (margin, margin), (0, 0)),
                                    mode="symmetric"))
    # PIL maps each output pixel (x, y) to an input pixel (a·x + b·y + c, d·x + e·y + f).
    # Inverse of "zoom, rotate about the centre, then pan":
    #   u, v = x - w/2 - pan_x, y - h/2 - pan_y
    #   input = R(-angle) · (u, v) / zoom + centre   (+ margin, in padded coordinates)
    angle = math.radians(-step.rotate)  # image y points down: negate for counter-clockwise
    cos, sin = math.cos(angle) / step.zoom, math.sin(angle) / step.zoom
    ux, uy = w / 2 + step.pan_x, h / 2 + step.pan_y
    coeffs = (cos, sin, w / 2 + margin - cos * ux - sin * uy,
              -sin, cos, h / 2 + margin + sin * ux - cos * uy)
    return padded.transform((w, h), Image.Transform.AFFINE, coeffs,
                            resample=Image.Resampling.BICUBIC)
