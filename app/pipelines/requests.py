"""Typed inputs to the local pipelines, independent of HTTP schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image


@dataclass
class Txt2ImgInput:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: list[int]
    scheduler: str
    loras: list[tuple[str, float]] = field(default_factory=list)
    vae: str | None = None
    clip_skip: int = 1  # AUTOMATIC1111 convention: 1 = last layer


@dataclass
class InpaintInput(Txt2ImgInput):
    image: Image.Image = field(default=None)  # type: ignore[assignment]
    mask: Image.Image = field(default=None)  # type: ignore[assignment]  # binary L mask
    strength: float = 1.0
    mask_blur: int = 4
    padding: int = 32
    inpaint_area: Literal["masked", "full"] = "masked"
    invert_mask: bool = False  # already applied to ``mask``; kept for the record


@dataclass
class Img2ImgInput(Txt2ImgInput):
    image: Image.Image = field(default=None)  # type: ignore[assignment]  # already fitted
    strength: float = 0.75
    resize_mode: Literal["resize", "crop", "fill"] = "resize"  # applied; kept for the record


@dataclass
class GenerationOutput:
    images: list[Image.Image]
    seeds: list[int]
    width: int
    height: int
    mask_applied: Image.Image | None = None
    flags: list[list[str]] = field(default_factory=list)  # per image, e.g. ["black_image"]
