"""Blender images into PNG data-URLs for the server: the Render Result, an image
datablock (also one painted in Texture Paint and never saved), or a file."""

from __future__ import annotations

import base64
import os
import struct
import tempfile
import zlib

import bpy

from .http_client import BildwerkError

# Formats the server decodes as they are; anything else is re-encoded from pixels.
PASSTHROUGH = {"PNG", "JPEG", "WEBP", "BMP"}


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def encode_png(width: int, height: int, rgba_top_down: bytes) -> bytes:
    """A plain RGBA PNG from 8-bit rows, top row first."""
    stride = width * 4
    raw = b"".join(b"\x00" + rgba_top_down[y * stride:(y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def _srgb(value: float) -> float:
    value = min(1.0, max(0.0, value))
    return value * 12.92 if value <= 0.0031308 else 1.055 * value ** (1 / 2.4) - 0.055


def pixels_png(image) -> bytes:
    """Encode an image's pixels (bottom row first in Blender) as PNG."""
    width, height = image.size
    if width == 0 or height == 0:
        raise BildwerkError(f"Image {image.name!r} has no pixels")
    linear = image.is_float and image.colorspace_settings.name not in ("Non-Color", "sRGB")
    try:
        import numpy as np

        px = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(px)
        if linear:
            rgb = np.clip(px.reshape(-1, 4)[:, :3], 0.0, 1.0)
            px.reshape(-1, 4)[:, :3] = np.where(
                rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
        data = (np.clip(px, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        rows = data.reshape(height, width * 4)[::-1].tobytes()
    except ImportError:  # a Blender without numpy: slower, same result
        values = list(image.pixels)
        out = bytearray(len(values))
        for i, v in enumerate(values):
            if linear and i % 4 != 3:
                v = _srgb(v)
            out[i] = int(min(1.0, max(0.0, v)) * 255.0 + 0.5)
        stride = width * 4
        rows = b"".join(bytes(out[y * stride:(y + 1) * stride])
                        for y in reversed(range(height)))
    return encode_png(width, height, rows)


def _save_render(image, scene=None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="bildwerk-") as tmp:
        path = os.path.join(tmp, "image.png")
        settings = (scene or bpy.context.scene).render.image_settings
        old = (settings.file_format, settings.color_mode, settings.color_depth)
        try:
            settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGBA", "8"
            image.save_render(path, scene=scene or bpy.context.scene)
        except RuntimeError:
            raise BildwerkError(f"{image.name!r} has no image yet: render first (F12)") from None
        finally:
            settings.file_format, settings.color_mode, settings.color_depth = old
        if not os.path.isfile(path):
            raise BildwerkError(f"{image.name!r} has no image yet: render first (F12)")
        with open(path, "rb") as fh:
            return fh.read()


def render_result_png(scene=None) -> bytes:
    """The last render, as shown (view transform applied)."""
    image = bpy.data.images.get("Render Result")
    if image is None:
        raise BildwerkError("No render yet: render an image first (F12)")
    return _save_render(image, scene)


def image_png(image) -> bytes:
    """An image datablock's pixels as the server should see them."""
    if image is None:
        raise BildwerkError("No image selected")
    if image.type == "RENDER_RESULT":
        return render_result_png()
    if image.type == "COMPOSITING":
        return _save_render(image)
    if not image.is_dirty and image.file_format in PASSTHROUGH and image.source == "FILE":
        if image.packed_file is not None:
            return bytes(image.packed_file.data)
        path = bpy.path.abspath(image.filepath)
        if path and os.path.isfile(path):
            with open(path, "rb") as fh:
                return fh.read()
    if not image.has_data:
        try:
            image.reload() if image.source == "FILE" else None
            image.pixels[0]  # loads the buffer
        except (RuntimeError, IndexError):
            raise BildwerkError(f"Image {image.name!r} has no pixels (missing file?)") from None
    return pixels_png(image)


def file_png(path: str) -> bytes:
    """A file's bytes (any format the server reads: PNG, JPEG, WebP...)."""
    real = bpy.path.abspath(path) if path else ""
    if not real or not os.path.isfile(real):
        raise BildwerkError(f"Image file not found: {path or '(none)'}")
    with open(real, "rb") as fh:
        return fh.read()
