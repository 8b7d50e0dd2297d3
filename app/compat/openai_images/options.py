"""OpenAI's ``size``, ``quality`` and ``output_format`` in Bildwerk's terms.

- ``size``: ``WIDTHxHEIGHT`` in pixels, each a multiple of 8 from 64 to 4096 (OpenAI's own
  sizes such as ``1024x1024`` or ``1792x1024`` are just sizes), or ``auto``: the model's
  native size (the input's size for variations and for edits without a mask). The
  server's limits (``BILDWERK_MAX_WIDTH``, ``BILDWERK_MAX_PIXELS``) still apply.
- ``quality``: a number of denoising steps (:data:`QUALITY_STEPS`); Bildwerk's own
  ``steps`` (through the SDK's ``extra_body``) overrides it.
- ``output_format``: the stored images are PNG; ``jpeg`` and ``webp`` are encoded from
  them for the answer, ``output_compression`` (0-100, default 100) being the encoder's
  quality: 100 is the best picture and the largest file.
"""

from __future__ import annotations

import io
import re
from typing import Literal

from PIL import Image

from app.errors import InvalidInput

Quality = Literal["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"]
OutputFormat = Literal["png", "jpeg", "webp"]

# quality -> denoising steps. "standard"/"hd" are DALL·E's names, "auto" is our default.
QUALITY_STEPS: dict[str, int] = {
    "low": 12, "medium": 25, "standard": 25, "auto": 25,
    "high": 40, "hd": 40, "xhigh": 60, "max": 80,
}
# The quality an answer names (OpenAI's answers know low/medium/high/xhigh/max only).
_ANSWERED = {"standard": "medium", "auto": "medium", "hd": "high"}
DEFAULT_QUALITY = "auto"

MIN_SIDE, MAX_SIDE = 64, 4096
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
SIZE_PATTERN = r"^(auto|[0-9]{1,5}x[0-9]{1,5})$"


def parse_size(size: str | None) -> tuple[int, int] | None:
    """``(width, height)``, or None for ``auto`` (or no size): the route's default."""
    if size is None or size.strip().lower() in ("", "auto"):
        return None
    match = _SIZE.fullmatch(size.strip().lower())
    if match is None:
        raise InvalidInput(f"size {size!r} is not WIDTHxHEIGHT (e.g. 512x512) or auto",
                           param="size")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidInput(f"size {size}: width and height must lie between {MIN_SIDE} and "
                           f"{MAX_SIDE} pixels", param="size")
    if width % 8 or height % 8:
        raise InvalidInput(f"size {size}: width and height must be multiples of 8",
                           param="size")
    return width, height


def steps_for(quality: str | None, steps: int | None) -> int:
    """Bildwerk's ``steps`` when given, else the quality's."""
    if steps is not None:
        return steps
    return QUALITY_STEPS[quality or DEFAULT_QUALITY]


def answered_quality(quality: str | None) -> str:
    quality = quality or DEFAULT_QUALITY
    return _ANSWERED.get(quality, quality)


def encode(png: bytes, output_format: str, compression: int | None) -> bytes:
    """The stored PNG as ``output_format``; PNG bytes are returned as stored (with their
    parameters chunks)."""
    if output_format == "png":
        return png
    quality = 100 if compression is None else compression
    image = Image.open(io.BytesIO(png))
    buffer = io.BytesIO()
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB"
        image.convert(mode).save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


def has_transparency(png: bytes) -> bool:
    image = Image.open(io.BytesIO(png))
    if image.mode not in ("RGBA", "LA") and "transparency" not in image.info:
        return False
    return image.convert("RGBA").getchannel("A").getextrema()[0] < 255
