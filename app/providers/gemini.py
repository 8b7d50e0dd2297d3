"""Google image generation (Gemini Developer API) through the ``google-genai`` SDK.

Two model families, chosen per request:

- **Imagen** (``imagen_model``, e.g. ``imagen-4.0-generate-001``): txt2img only, through
  ``POST /v1beta/models/{model}:predict``. google-genai 3.x refuses ``generate_images`` in
  Developer-API mode (it is Vertex-only there and marked deprecated), so the documented
  REST body is sent through the SDK client's own transport (same auth header, timeout and
  ``APIError`` classes)::

      {"instances": [{"prompt": ...}],
       "parameters": {"sampleCount": n, "aspectRatio": "16:9", "includeRaiReason": true}}

  The Developer API takes no ``negativePrompt`` and no ``seed`` for Imagen (the SDK's own
  Gemini-API converter rejected both), so those request fields are ignored; so are
  ``guidance_scale``, ``steps`` and ``strength``. Size maps to the nearest of
  1:1, 3:4, 4:3, 9:16, 16:9.
- **Gemini image models** (``image_model``, e.g. ``gemini-2.5-flash-image``): txt2img and
  img2img through ``client.models.generate_content`` (``:generateContent``), with
  ``response_modalities=["TEXT", "IMAGE"]`` (accepted by every Gemini image model; the
  text explains refusals). The aspect ratio goes in ``image_config``; ``seed`` is sent
  (``seed + i`` for the i-th image); a negative prompt is appended to the prompt as
  "Avoid: ..." since the API has no such field. One call per image (the image models
  take no ``candidate_count``). img2img sends the input as an inline PNG part before the
  prompt; ``strength`` has no equivalent and is ignored. Token usage is summed into
  ``RemoteResult.usage``.

A request's ``model`` picks the family by name (``imagen*`` → Imagen, anything else →
generate_content); without one, Imagen is used for txt2img when configured, the Gemini
image model otherwise and always for img2img. inpaint is not supported.

Errors: 4xx → :class:`ProviderRefused`; 408/429/5xx and connection failures are retried
``retries`` times (our own loop; the SDK's retries are switched off with
``HttpRetryOptions(attempts=1)``), then :class:`ProviderError`; timeouts likewise, then
:class:`ProviderTimeout`. An answer without an image (safety block, text only) is
:class:`ProviderRefused` with the reason; an unparseable answer is :class:`ProviderError`.
The API key is never put in a message or repr.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

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
    is_black,
)

log = logging.getLogger("bildwerk.providers.gemini")

IMAGEN_ASPECTS = ("1:1", "3:4", "4:3", "9:16", "16:9")
GEMINI_ASPECTS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
MAX_BATCH = 4  # Imagen's sampleCount limit; Gemini image models: one call per image
RETRYABLE_STATUS = frozenset({408, 429})  # plus every 5xx
MAX_MESSAGE = 300
# google-genai 3.x defaults the Developer API to "v1"; Google documents the Imagen
# :predict route and image output (responseModalities/imageConfig) on v1beta, so pin it.
API_VERSION = "v1beta"

T = TypeVar("T")


def _httpx_errors(name: str) -> tuple[type[BaseException], ...]:
    """``httpx.<name>`` plus the same class of ``httpx2``, the fork google-genai prefers
    when it is installed (its classes are not subclasses of httpx's)."""
    classes = [getattr(httpx, name)]
    try:
        import httpx2

        classes.append(getattr(httpx2, name))
    except (ImportError, AttributeError):
        pass
    return tuple(classes)


_TIMEOUTS = _httpx_errors("TimeoutException")
_TRANSPORT = _httpx_errors("TransportError")


def nearest_aspect(width: int, height: int, choices: tuple[str, ...] = IMAGEN_ASPECTS) -> str:
    """The supported aspect ratio closest (in log ratio) to width x height."""
    target = math.log(width / height)

    def distance(choice: str) -> float:
        w, h = (int(v) for v in choice.split(":"))
        return abs(math.log(w / h) - target)

    return min(choices, key=distance)


def _bare(model: str) -> str:
    return model.removeprefix("models/")


def is_imagen(model: str) -> bool:
    return _bare(model).lower().startswith("imagen")


class GeminiProvider(Provider):
    name = "gemini"

    def __init__(self, api_key: str | None, imagen_model: str, image_model: str,
                 base_url: str | None = None, timeout_s: float = 120.0, retries: int = 2,
                 *, backoff_s: float = 1.0) -> None:
        self._api_key = api_key or None
        self.imagen_model = _bare(imagen_model or "")
        self.image_model = _bare(image_model or "")
        self._base_url = base_url
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._client_obj = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return (f"GeminiProvider(base_url={self._base_url!r}, imagen_model="
                f"{self.imagen_model!r}, image_model={self.image_model!r})")

    # -- description ---------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        tasks: tuple = ("txt2img", "img2img") if self.image_model else ("txt2img",)
        models = tuple(m for m in (self.imagen_model, self.image_model) if m)
        return Capabilities(tasks=tasks, models=models, sizes=None, max_batch=MAX_BATCH)

    def availability(self) -> Availability:
        if not self._api_key:
            return Availability(False, "GEMINI_API_KEY not set")
        if not (self.imagen_model or self.image_model):
            return Availability(False, "no Gemini image model configured")
        return Availability(True)

    # -- running -------------------------------------------------------------------------
    def generate(self, request: RemoteRequest) -> RemoteResult:
        if not self._api_key:
            raise ProviderRefused("GEMINI_API_KEY not set", param="provider")
        if request.task == "inpaint":
            raise ProviderRefused("Gemini does not serve inpaint", param="task")
        if request.task not in ("txt2img", "img2img"):
            raise ProviderRefused(f"Gemini does not serve {request.task}", param="task")
        model = self._model_for(request)
        n = max(1, min(request.num_images, MAX_BATCH))
        if self._is_imagen(model):
            return self._imagen(model, request, n)
        return self._content(model, request, n)

    def _model_for(self, request: RemoteRequest) -> str:
        if request.model:
            model = _bare(request.model)
            if request.task == "img2img" and self._is_imagen(model):
                raise ProviderRefused(f"{model} cannot take an input image on the Gemini API; "
                                      f"use a Gemini image model", param="model")
            return model
        if request.task == "txt2img" and self.imagen_model:
            return self.imagen_model
        if self.image_model:
            return self.image_model
        raise ProviderRefused("no Gemini image model configured for "
                              f"{request.task}", param="model")

    def _is_imagen(self, model: str) -> bool:
        return is_imagen(model) or (bool(self.imagen_model) and model == self.imagen_model)

    def _client(self):
        with self._lock:
            if self._client_obj is None:
                from google.genai import types

                self._client_obj = developer_client(  # we retry ourselves
                    self._api_key, self._base_url, self.timeout_s,
                    types.HttpRetryOptions(attempts=1))
            return self._client_obj

    # Imagen ------------------------------------------------------------------------------
    def _imagen(self, model: str, request: RemoteRequest, n: int) -> RemoteResult:
        body = {"instances": [{"prompt": request.prompt}],
                "parameters": {"sampleCount": n,
                               "aspectRatio": nearest_aspect(request.width, request.height),
                               "includeRaiReason": True}}
        api = getattr(self._client(), "_api_client", None)
        if api is None or not hasattr(api, "request"):
            raise ProviderError("this google-genai version offers no transport for Imagen")
        response, attempts = self._with_retries(
            lambda: api.request("post", f"models/{model}:predict", body))
        try:
            payload = json.loads(response.body) if response.body else {}
        except ValueError:
            raise ProviderError("Gemini (Imagen) answered something that is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("predictions", []),
                                                           list):
            raise ProviderError("Gemini (Imagen) answered an unexpected payload")
        images, reasons = [], []
        for item in payload.get("predictions") or []:
            if not isinstance(item, dict):
                raise ProviderError("Gemini (Imagen) answered an unexpected prediction")
            data = item.get("bytesBase64Encoded")
            if data:
                images.append(self._remote(_b64(data)))
            elif item.get("raiFilteredReason"):
                reasons.append(str(item["raiFilteredReason"]))
        if not images:
            why = "; ".join(reasons) or "no image in the answer (likely the safety filter)"
            raise ProviderRefused(_clip(f"Gemini (Imagen) returned no image: {why}"))
        return RemoteResult(images=images, model=model, usage=None, attempts=attempts)

    # generate_content --------------------------------------------------------------------
    def _content(self, model: str, request: RemoteRequest, n: int) -> RemoteResult:
        from google.genai import types

        prompt = request.prompt
        if request.negative_prompt.strip():
            prompt = f"{prompt}\n\nAvoid: {request.negative_prompt.strip()}"
        contents: list[Any] = [prompt]
        if request.task == "img2img":
            if request.image is None:
                raise ProviderRefused("img2img needs an input image", param="image")
            contents = [types.Part.from_bytes(data=_png(request.image), mime_type="image/png"),
                        prompt]
        aspect = nearest_aspect(request.width, request.height, GEMINI_ASPECTS)
        client = self._client()
        images: list[RemoteImage] = []
        usage: dict[str, int] = {}
        attempts = 0
        for i in range(n):
            config = types.GenerateContentConfig(
                response_modalities=["TEXT", "IMAGE"],
                image_config=types.ImageConfig(aspect_ratio=aspect),
                seed=None if request.seed is None else request.seed + i)
            response, tries = self._with_retries(
                lambda config=config: client.models.generate_content(
                    model=model, contents=contents, config=config))
            attempts += tries
            _add_usage(usage, response)
            images.extend(self._content_images(response, request.seed, i))
        return RemoteResult(images=images, model=model, usage=usage or None, attempts=attempts)

    def _content_images(self, response, seed: int | None, index: int) -> list[RemoteImage]:
        try:
            candidates = list(response.candidates or [])
            texts, found = [], []
            for candidate in candidates:
                for part in (candidate.content.parts if candidate.content else None) or []:
                    blob = part.inline_data
                    if blob is not None and blob.data and (blob.mime_type or "image/").startswith(
                            "image/"):
                        found.append(blob.data)
                    elif part.text and not part.thought:
                        texts.append(part.text.strip())
        except (AttributeError, TypeError) as exc:
            raise ProviderError(f"Gemini answered an unexpected payload "
                                f"({type(exc).__name__})") from None
        if not found:
            raise ProviderRefused(_clip("Gemini returned no image: " + _no_image_reason(
                response, candidates, texts)))
        text = " ".join(t for t in texts if t) or None
        return [self._remote(data, seed=None if seed is None else seed + index,
                             revised_prompt=text) for data in found]

    # shared ------------------------------------------------------------------------------
    def _remote(self, data: bytes, seed: int | None = None,
                revised_prompt: str | None = None) -> RemoteImage:
        image = decode_png(data)
        flags = ["black_image"] if is_black(image) else []
        return RemoteImage(image=image, seed=seed, revised_prompt=revised_prompt, flags=flags)

    def _with_retries(self, call: Callable[[], T]) -> tuple[T, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call(), attempt
            except Exception as exc:  # noqa: BLE001 - everything maps to the provider tree
                mapped, retryable = self._mapped(exc)
                if not retryable or attempt > self.retries:
                    raise mapped from None
                delay = self.backoff_s * (2 ** (attempt - 1))
                log.info("gemini attempt %d failed (%s); retrying in %.2fs", attempt,
                         mapped.message, delay)
                if delay > 0:
                    time.sleep(delay)

    def _mapped(self, exc: Exception) -> tuple[ProviderError, bool]:
        """The provider error for ``exc`` and whether another attempt may help."""
        from google.genai import errors

        if isinstance(exc, ProviderError):
            return exc, False
        if isinstance(exc, _TIMEOUTS):
            return ProviderTimeout(f"Gemini did not answer within {self.timeout_s:g}s"), True
        if isinstance(exc, _TRANSPORT):
            return ProviderError(f"Gemini could not be reached ({type(exc).__name__})"), True
        if isinstance(exc, errors.APIError):
            code = int(exc.code or 0)
            detail = self._scrub(f"{code} {exc.status or ''}: {exc.message or ''}".strip())
            if code in RETRYABLE_STATUS or code >= 500:
                return ProviderError(_clip(f"Gemini failed ({detail})")), True
            if 400 <= code < 500:
                return ProviderRefused(_clip(f"Gemini refused the request ({detail})")), False
            return ProviderError(_clip(f"Gemini answered status {detail}")), False
        if isinstance(exc, ValueError):  # JSON decode / pydantic validation of the answer
            return ProviderError(f"Gemini answered something unusable "
                                 f"({type(exc).__name__})"), False
        return ProviderError(f"Gemini call failed ({type(exc).__name__})"), False

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def developer_client(api_key: str | None, base_url: str | None, timeout_s: float,
                     retry_options):
    """A google-genai client for the Gemini Developer API (not Vertex), pinned to
    :data:`API_VERSION`, with the timeout and ``HttpRetryOptions`` given."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=base_url, api_version=API_VERSION,
                                timeout=max(1, int(timeout_s * 1000)),
                                retry_options=retry_options)
    return genai.Client(api_key=api_key, vertexai=False, http_options=options)


def gemini_usage(meta) -> dict[str, int] | None:
    """A response's ``usage_metadata`` as token counts under our names (None: none given).
    The prompt expander reports usage the same way."""
    if meta is None:
        return None
    out = {}
    for ours, theirs in (("input_tokens", "prompt_token_count"),
                         ("output_tokens", "candidates_token_count"),
                         ("thoughts_tokens", "thoughts_token_count"),
                         ("total_tokens", "total_token_count")):
        value = getattr(meta, theirs, None)
        if isinstance(value, int):
            out[ours] = value
    return out or None


def _add_usage(total: dict[str, int], response) -> None:
    for name, value in (gemini_usage(getattr(response, "usage_metadata", None)) or {}).items():
        total[name] = total.get(name, 0) + value


def _no_image_reason(response, candidates: list, texts: list[str]) -> str:
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None) if feedback else None
    if block:
        message = getattr(feedback, "block_reason_message", None)
        return f"prompt blocked ({_enum(block)})" + (f": {message}" if message else "")
    if not candidates:
        return "no candidates in the answer"
    finish = getattr(candidates[0], "finish_reason", None)
    parts = []
    if finish and _enum(finish) != "STOP":
        parts.append(f"finish reason {_enum(finish)}")
    if texts:
        parts.append(f"the model said: {' '.join(texts)}")
    return "; ".join(parts) or "the answer had no image part"


def _enum(value) -> str:
    return str(getattr(value, "value", value))


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProviderError("Gemini returned malformed base64 image data") from None


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
