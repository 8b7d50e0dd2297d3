"""Turn client image input (data-URL, raw base64, blob sha256, or bytes) into a PIL image.

Limits are checked before any pixel is decoded: Pillow reads the header lazily, so a
decompression bomb is refused on its declared size, never expanded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from app.errors import InvalidImage, PayloadTooLarge

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.I)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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
            return blob_reader(text)
        except Exception as exc:
            raise InvalidImage(f"{param}: no stored blob {text}", param=param) from exc
    match = _DATA_URL.match(text)
    payload = text[match.end():] if match else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(
            f"{param} is neither a data-URL, base64 nor a stored blob sha256", param=param
        ) from exc


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{param}: not a decodable image ({exc})", param=param) from exc
    return DecodedImage(image=img, raw=data, format=fmt)


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
