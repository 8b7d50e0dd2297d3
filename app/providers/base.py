"""The provider interface every image source implements: remote services (OpenAI,
Hugging Face Inference, Gemini) here, and local diffusers through the same shape.

A provider says what it can do (:class:`Capabilities`), whether it is usable right now
and why not (:class:`Availability`, never revealing a secret), and runs txt2img /
inpaint / img2img requests synchronously; the service runs it on a worker thread. (The
local provider only describes itself: local work runs as jobs through the HTTP routes,
and its ``generate`` refuses.)

Errors are ``ProviderError`` (502), ``ProviderTimeout`` (504) and ``ProviderRefused``
(422), defined with every other domain exception in :mod:`app.errors` and re-exported
here for provider modules.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from PIL import Image

from app.errors import ProviderError, ProviderRefused, ProviderTimeout
from app.tasks import Task

__all__ = ["ProviderError", "ProviderRefused", "ProviderTimeout"]  # re-exported



@dataclass(frozen=True)
class Capabilities:
    tasks: tuple[Task, ...]
    models: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...] | None = None  # None: any multiple of 8
    max_batch: int = 1

    def as_dict(self) -> dict:
        return {"txt2img": "txt2img" in self.tasks, "inpaint": "inpaint" in self.tasks,
                "img2img": "img2img" in self.tasks, "models": list(self.models),
                "sizes": [f"{w}x{h}" for w, h in self.sizes] if self.sizes else None,
                "max_batch": self.max_batch}


@dataclass(frozen=True)
class Availability:
    usable: bool
    reason: str | None = None  # e.g. "OPENAI_API_KEY not set" — never the key itself


@dataclass
class RemoteRequest:
    task: Task
    prompt: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_images: int = 1
    seed: int | None = None
    model: str | None = None
    image: Image.Image | None = None  # inpaint / img2img: the (cropped) input
    mask: Image.Image | None = None  # inpaint: L mode, 255 = change
    strength: float = 1.0
    guidance_scale: float | None = None
    steps: int | None = None


@dataclass
class RemoteImage:
    image: Image.Image
    seed: int | None = None
    revised_prompt: str | None = None
    flags: list[str] = field(default_factory=list)  # e.g. "black_image"


@dataclass
class RemoteResult:
    images: list[RemoteImage]
    model: str
    usage: dict | None = None  # tokens/cost when the provider reports them
    attempts: int = 1


class Provider(ABC):
    """One image source. Implementations keep no per-request state on ``self``."""

    name: str

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def availability(self) -> Availability: ...

    @abstractmethod
    def generate(self, request: RemoteRequest) -> RemoteResult:
        """Run ``request`` (its ``task`` is one of the capabilities' tasks)."""


def decode_png(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ProviderError(f"the provider returned an undecodable image ({exc})") from exc
    return image


def is_black(image: Image.Image, threshold: int = 3) -> bool:
    """A safety filter's answer: every pixel (nearly) black."""
    extrema = image.convert("L").getextrema()
    return extrema[1] <= threshold
