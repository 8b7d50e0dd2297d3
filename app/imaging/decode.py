"""Turn client image input (data-URL, raw base64, blob sha256, or bytes) into a PIL image.

Limits are checked before any pixel is decoded: Pillow reads the header lazily, so a
decompression bomb is refused on its declared size, never expanded (``decode_image``
checks the size between ``Image.open``, which reads only the header, and ``load``; Pillow's
own bomb guard, made an error here, backs it up). URLs are refused, never fetched.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.errors import InvalidImage, PayloadTooLarge

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.I)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_WHITESPACE = re.compile(r"\s+")
ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"}


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_side: int
    min_side: int = 8


@dataclass
class DecodedImage:
    image: Image.Image
    raw: bytes
    format: str

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")


def image_bytes(value: str | bytes, param: str, blob_reader: Callable[[str], bytes]) -> bytes:
    """Resolve a field's value to encoded image bytes."""
    if isinstance(value, bytes):
        return value
    text = value.strip()
    if not text:
        raise InvalidImage(f"{param} is empty", param=param)
    if _SHA256.fullmatch(text):
        try:
            return blob_reader(text.lower())
        except Exception as exc:
            raise InvalidImage(f"{param}: no stored blob {text}", param=param) from exc
    if _URL.match(text):
        raise InvalidImage(
            f"{param}: image URLs are not accepted (nothing is fetched); send the image "
            "itself as a data-URL, base64 or a multipart file, or the sha256 of a stored blob",
            param=param)
    match = _DATA_URL.match(text)
    if match is None and text[:5].lower() == "data:":
        raise InvalidImage(f"{param}: only base64 data-URLs are accepted "
                           "(data:image/png;base64,...)", param=param)
    payload = _WHITESPACE.sub("", text[match.end():] if match else text)
    payload += "=" * (-len(payload) % 4)  # tolerate stripped padding
    for altchars in (None, b"-_"):  # the standard alphabet, then the URL-safe one
        try:
            return base64.b64decode(payload, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise InvalidImage(
        f"{param} is neither a data-URL, base64 nor a stored blob sha256", param=param)


def decode_image(data: bytes, param: str, limits: ImageLimits) -> DecodedImage:
    """Decode ``data`` into a loaded PIL image, enforcing ``limits`` before decoding."""
    if not data:
        raise InvalidImage(f"{param} is empty", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or ""
            width, height = img.size
            if fmt not in ACCEPTED_FORMATS:
                raise InvalidImage(f"{param}: unsupported image format {fmt!r}", param=param)
            _check_size(width, height, param, limits)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{param}: image is too large to decode", param=param) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"{param}: not a recognisable image", param=param) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{param}: the image data is damaged ({exc})", param=param) from exc
    return DecodedImage(image=to_8bit(img), raw=data, format=fmt)


def to_8bit(img: Image.Image) -> Image.Image:
    """Scale high bit-depth greyscale (16-bit PNG, 32-bit int) to 8 bits instead of letting
    Pillow clip it at 255 on conversion."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        return Image.fromarray(np.clip(arr >> 8, 0, 255).astype(np.uint8), mode="L")
    return img


def _check_size(width: int, height: int, param: str, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise PayloadTooLarge(
            f"{param}: {width}x{height} exceeds the limit of {limits.max_side}px per side "
            f"and {limits.max_pixels} pixels",
            param=param,
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(
            f"{param}: {width}x{height} is smaller than {limits.min_side}px per side",
            param=param,
        )
