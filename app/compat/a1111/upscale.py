"""POST /sdapi/v1/extra-single-image into our :class:`~app.schemas.upscale.UpscaleRequest`.

``resize_mode`` 0 upscales by ``upscaling_resize``. ``resize_mode`` 1 aims at
``upscaling_resize_w`` × ``upscaling_resize_h``: with ``upscaling_crop`` (the default) the
image is first cut to the target's aspect ratio around its centre, then upscaled to exactly
that size (AUTOMATIC1111 upscales, then crops the centre: the same picture); without it,
the image keeps its aspect ratio and is upscaled by the larger of the two ratios, as in
AUTOMATIC1111. Face restoration (GFPGAN, CodeFormer) and the second upscaler are not
available and their fields are ignored."""

from __future__ import annotations

import base64
import io

from PIL import Image

from app.compat.a1111.schemas import ExtrasSingleImageBody
from app.compat.a1111.translate import build
from app.schemas.upscale import UpscaleRequest


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def centre_crop_to_aspect(image: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred part of ``image`` with the aspect ratio ``width:height``."""
    iw, ih = image.size
    if iw * height == ih * width:
        return image
    if iw * height > ih * width:  # too wide
        new_w = max(1, round(ih * width / height))
        left = (iw - new_w) // 2
        return image.crop((left, 0, left + new_w, ih))
    new_h = max(1, round(iw * height / width))
    top = (ih - new_h) // 2
    return image.crop((0, top, iw, top + new_h))


def upscale_request(body: ExtrasSingleImageBody,
                    image: Image.Image) -> tuple[UpscaleRequest, str]:
    """Our request for ``body`` (whose decoded image is ``image``), and AUTOMATIC1111's
    note of what it does (``html_info``)."""
    name = body.upscaler_1
    if body.resize_mode == 0:
        scale = body.upscaling_resize
        return (build(UpscaleRequest, {"image": body.image, "upscaler": name,
                                        "scale": scale}),
                f"Postprocess upscale by: {scale:g}, Postprocess upscaler: {name}")
    width, height = body.upscaling_resize_w, body.upscaling_resize_h
    if not body.upscaling_crop:
        scale = max(width / image.width, height / image.height)
        return (build(UpscaleRequest, {"image": body.image, "upscaler": name,
                                        "scale": scale}),
                f"Postprocess upscale by: {scale:g}, Postprocess upscaler: {name}")
    cropped = centre_crop_to_aspect(image, width, height)
    value = body.image if cropped is image else _data_url(cropped)
    return (build(UpscaleRequest, {"image": value, "upscaler": name, "width": width,
                                    "height": height}),
            f"Postprocess upscale to: {width}x{height}, Postprocess crop to fit: True, "
            f"Postprocess upscaler: {name}")
