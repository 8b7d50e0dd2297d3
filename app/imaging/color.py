"""Colour coherence: match an image's per-channel histogram to a reference image, so a
loopback sequence does not drift in colour from its first frame."""

from __future__ import annotations

import numpy as np
from PIL import Image


def match_histogram(image: Image.Image, reference: Image.Image) -> Image.Image:
    src = np.asarray(image.convert("RGB"))
    ref = np.asarray(reference.convert("RGB"))
    out = np.empty_like(src)
    for c in range(3):
        out[..., c] = _match_channel(src[..., c], ref[..., c])
    return Image.fromarray(out, "RGB")


def _match_channel(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    src_counts = np.bincount(src.ravel(), minlength=256).astype(np.float64)
    ref_counts = np.bincount(ref.ravel(), minlength=256).astype(np.float64)
    src_cdf = np.cumsum(src_counts) / src_counts.sum()
    ref_cdf = np.cumsum(ref_counts) / ref_counts.sum()
    # For each source level, the reference level at the same cumulative share.
    lut = np.interp(src_cdf, ref_cdf, np.arange(256))
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)[src]
