"""OpenAI images (DALL·E 2, DALL·E 3, gpt-image-1) through the ``openai`` SDK.

- txt2img: ``images.generate``. inpaint: ``images.edit`` with OpenAI's mask convention
  (transparent = edit); the caller crops the masked region and pastes the result back,
  so pixels outside the mask never change.
- Each model's size rules: the request is mapped to the allowed size nearest in aspect.
- Base64 answers are asked for; URL answers are fetched with a bounded download.
- Retries are the SDK's own, bounded by ``retries``; errors map to the provider tree.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import httpx
from PIL import Image

from app.providers.base import (
    Availability,
    Capabilities,
    Provider,
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    RemoteImage,
    RemoteRequest,
    RemoteResult,
    decode_png,
)

MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ModelRules:
    sizes: tuple[tuple[int, int], ...]
    max_batch: int
    edits: bool
    b64_param: bool  # dall-e models take response_format; gpt-image-1 always answers b64


RULES: dict[str, ModelRules] = {
    "dall-e-2": ModelRules(((256, 256), (512, 512), (1024, 1024)), 10, True, True),
    "dall-e-3": ModelRules(((1024, 1024), (1792, 1024), (1024, 1792)), 1, False, True),
    "gpt-image-1": ModelRules(((1024, 1024), (1536, 1024), (1024, 1536)), 10, True, False),
}


def nearest_size(model: str, width: int, height: int) -> tuple[int, int]:
    """The model's allowed size closest in aspect ratio (then in area) to width x height."""
    aspect = width / height
    return min(RULES[model].sizes,
               key=lambda s: (abs(s[0] / s[1] - aspect), abs(s[0] * s[1] - width * height)))


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, api_key: str | None, base_url: str | None = None,
                 default_model: str = "dall-e-2", timeout_s: float = 120.0,
                 retries: int = 2) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self.default_model = default_model
        self.timeout_s = timeout_s
        self.retries = retries

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIProvider(base_url={self._base_url!r}, model={self.default_model!r})"

    def capabilities(self) -> Capabilities:
        return Capabilities(tasks=("txt2img", "inpaint"), models=tuple(RULES),
                            sizes=RULES[self.default_model].sizes,
                            max_batch=RULES[self.default_model].max_batch)

    def availability(self) -> Availability:
        if not self._api_key:
            return Availability(False, "OPENAI_API_KEY not set")
        return Availability(True)

    def size_for(self, model: str | None, width: int, height: int) -> tuple[int, int]:
        return nearest_size(model or self.default_model, width, height)

    # -- running -------------------------------------------------------------------------
    def generate(self, request: RemoteRequest) -> RemoteResult:
        model = request.model or self.default_model
        rules = RULES.get(model)
        if rules is None:
            raise ProviderRefused(f"unknown OpenAI image model {model!r}; choose one of "
                                  f"{', '.join(RULES)}", param="model")
        if request.task == "inpaint" and not rules.edits:
            raise ProviderRefused(f"{model} cannot edit images; use dall-e-2 or gpt-image-1",
                                  param="model")
        if request.task not in ("txt2img", "inpaint"):
            raise ProviderRefused(f"OpenAI does not serve {request.task}", param="provider")
        size = nearest_size(model, request.width, request.height)
        args: dict = {"model": model, "prompt": request.prompt,
                      "n": min(request.num_images, rules.max_batch),
                      "size": f"{size[0]}x{size[1]}"}
        if rules.b64_param:
            args["response_format"] = "b64_json"
        client = self._client()
        try:
            if request.task == "txt2img":
                response = client.images.generate(**args)
            else:
                image, mask = _edit_inputs(request.image, request.mask, size)
                response = client.images.edit(image=("image.png", image, "image/png"),
                                              mask=("mask.png", mask, "image/png"), **args)
        except Exception as exc:
            raise _mapped(exc) from None
        finally:
            client.close()
        images = [RemoteImage(self._image(item), revised_prompt=getattr(item, "revised_prompt",
                                                                        None))
                  for item in response.data or []]
        if not images:
            raise ProviderError("OpenAI answered without an image")
        usage = response.usage.model_dump() if getattr(response, "usage", None) else None
        return RemoteResult(images=images, model=model, usage=usage)

    def _client(self):
        import openai

        return openai.OpenAI(api_key=self._api_key, base_url=self._base_url,
                             timeout=self.timeout_s, max_retries=self.retries)

    def _image(self, item) -> Image.Image:
        if getattr(item, "b64_json", None):
            try:
                return decode_png(base64.b64decode(item.b64_json))
            except ValueError as exc:
                raise ProviderError("OpenAI returned malformed base64") from exc
        if getattr(item, "url", None):
            return decode_png(_bounded_download(item.url, self.timeout_s))
        raise ProviderError("OpenAI answered without image data")


def _edit_inputs(image: Image.Image | None, mask: Image.Image | None,
                 size: tuple[int, int]) -> tuple[bytes, bytes]:
    """The image and OpenAI's mask (RGBA, transparent where the picture may change)."""
    if image is None or mask is None:
        raise ProviderRefused("inpaint needs an image and a mask", param="image")
    rgba = image.convert("RGB").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    keep = mask.convert("L").resize(size, Image.Resampling.NEAREST).point(
        lambda v: 0 if v > 127 else 255)
    openai_mask = rgba.copy()
    openai_mask.putalpha(keep)
    rgba.putalpha(keep)  # dall-e-2 also reads the image's own transparency
    return _png(rgba), _png(openai_mask)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _bounded_download(url: str, timeout_s: float) -> bytes:
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            response.raise_for_status()
            chunks, total = [], 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise ProviderError("the image URL OpenAI returned is too large")
                chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise ProviderTimeout("downloading the image OpenAI returned timed out") from exc
    except httpx.HTTPError as exc:
        raise ProviderError(f"downloading the image OpenAI returned failed: "
                            f"{type(exc).__name__}") from exc
    return b"".join(chunks)


def _mapped(exc: Exception) -> Exception:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout("OpenAI did not answer in time")
    if isinstance(exc, openai.APIStatusError):
        message = _error_message(exc)
        if 400 <= exc.status_code < 500:
            return ProviderRefused(f"OpenAI refused the request ({exc.status_code}): {message}")
        return ProviderError(f"OpenAI failed ({exc.status_code}): {message}")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("OpenAI could not be reached")
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(f"OpenAI answered something unusable ({type(exc).__name__})")


def _error_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
    return type(exc).__name__
