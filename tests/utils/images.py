"""Real test images and masks, encoded the way clients send them."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw


def scene(width: int = 100, height: int = 76, seed: int = 0) -> Image.Image:
    """A deterministic map-like picture with texture, so unchanged pixels are meaningful."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, height * 2 // 3, width, height], fill=(40, 70, 160))
    return img


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """White (255) inside ``box`` on black: the luminance convention."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def kiosk_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """Transparent everywhere, painted (opaque red) inside ``box``: the kiosk convention."""
    mask = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(mask).rectangle(box, fill=(255, 0, 0, 255))
    return mask


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))
