"""PNG encoding with the generation parameters embedded.

Two text chunks: ``parameters`` in AUTOMATIC1111's format (readable by its PNG-info tab
and most image browsers) and ``bildwerk`` holding the same facts as JSON. Only the
deterministic inputs go in, so the same request and seed give the same bytes.
"""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def a1111_parameters(meta: dict) -> str:
    lines = [meta.get("prompt", "")]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {meta['negative_prompt']}")
    fields = [
        ("Steps", meta.get("steps")),
        ("Sampler", meta.get("scheduler")),
        ("CFG scale", meta.get("guidance_scale")),
        ("Seed", meta.get("seed")),
        ("Size", f"{meta['width']}x{meta['height']}" if "width" in meta else None),
        ("Model", meta.get("model")),
        ("Denoising strength", meta.get("strength")),
        ("Mask blur", meta.get("mask_blur")),
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def encode_png(image: Image.Image, meta: dict) -> bytes:
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(meta))
    info.add_itxt("bildwerk", json.dumps(meta, sort_keys=True, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def encode_plain_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()
