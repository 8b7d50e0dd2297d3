"""Bildwerk's results -> OpenAI's answers (``ImagesResponse`` and the streaming events)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from app.compat.openai_images.options import answered_quality, encode, has_transparency
from app.persistence.blobs import BlobStore
from app.schemas.generation import GenerationResult


@dataclass(frozen=True)
class AnswerFormat:
    """How the caller wants its images: from the request's OpenAI parameters."""

    response_format: str = "b64_json"
    output_format: str = "png"
    compression: int | None = None
    quality: str = "medium"  # as answered (low/medium/high/xhigh/max)
    safety_identifier: str | None = None
    transparent_possible: bool = False  # edits keep the input's alpha outside the area

    @classmethod
    def of(cls, req, *, edit: bool = False) -> AnswerFormat:
        return cls(response_format=req.response_format or "b64_json",
                   output_format=req.output_format or "png",
                   compression=req.output_compression,
                   quality=answered_quality(getattr(req, "quality", None)),
                   safety_identifier=getattr(req, "safety_identifier", None) or req.user,
                   transparent_possible=edit)

    def encoded(self, png: bytes) -> str:
        return base64.b64encode(encode(png, self.output_format, self.compression)).decode()


def size_of(result: GenerationResult) -> str:
    first = result.images[0]
    return f"{first.width}x{first.height}"


def revised_prompt(result: GenerationResult) -> str | None:
    typed = (result.prompting or {}).get("typed")
    return result.prompt if typed is not None and result.prompt != typed else None


def background(png: bytes, fmt: AnswerFormat) -> str:
    """``transparent`` for an edit whose input kept transparent pixels outside the area
    (and a format that keeps them); every generated image is opaque."""
    if fmt.transparent_possible and fmt.output_format != "jpeg" and has_transparency(png):
        return "transparent"
    return "opaque"


def images_response(result: GenerationResult, blobs: BlobStore, fmt: AnswerFormat,
                    base_url: str) -> dict:
    """The ``ImagesResponse`` body. ``base_url`` is the request's (``…/``), so ``url`` is
    absolute."""
    revised = revised_prompt(result)
    data = []
    for image in result.images:
        if fmt.response_format == "url":
            item = {"url": f"{base_url.rstrip('/')}/blobs/{image.sha256}"}
        else:
            item = {"b64_json": fmt.encoded(blobs.read(image.sha256))}
        if revised is not None:
            item["revised_prompt"] = revised
        data.append(item)
    first = blobs.read(result.images[0].sha256) if fmt.transparent_possible else b""
    return {"created": int(time.time()), "data": data,
            "background": background(first, fmt) if first else "opaque",
            "output_format": "png" if fmt.response_format == "url" else fmt.output_format,
            "quality": fmt.quality, "size": size_of(result),
            "safety_identifier": fmt.safety_identifier}


ZERO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
              "output_tokens": 0, "total_tokens": 0}


def partial_event(kind: str, png: bytes, index: int, size: str, fmt: AnswerFormat) -> dict:
    """``image_generation.partial_image`` / ``image_edit.partial_image``."""
    return {"type": f"{kind}.partial_image", "b64_json": fmt.encoded(png),
            "partial_image_index": index, "created_at": int(time.time()), "size": size,
            "quality": fmt.quality, "background": "opaque",
            "output_format": fmt.output_format}


def completed_event(kind: str, result: GenerationResult, index: int, blobs: BlobStore,
                    fmt: AnswerFormat) -> dict:
    """``image_generation.completed`` / ``image_edit.completed`` for image ``index``."""
    image = result.images[index]
    png = blobs.read(image.sha256)
    event = {"type": f"{kind}.completed", "b64_json": fmt.encoded(png),
             "created_at": int(time.time()), "size": f"{image.width}x{image.height}",
             "quality": fmt.quality, "background": background(png, fmt),
             "output_format": fmt.output_format, "usage": ZERO_USAGE}
    if fmt.safety_identifier:
        event["safety_identifier"] = fmt.safety_identifier
    return event
