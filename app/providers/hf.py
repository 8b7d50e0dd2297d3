"""Hugging Face Inference (provider ``hf-inference``) through ``huggingface_hub.InferenceClient``.

- txt2img: ``InferenceClient.text_to_image``; img2img: ``InferenceClient.image_to_image``.
  One image per HTTP call; ``num_images > 1`` loops, image ``i`` using ``seed + i``.
- Requests go to ``{base_url}/models/{model}``; ``base_url`` defaults to the library's own
  hf-inference root (``https://router.huggingface.co/hf-inference``), so the URL is exactly
  the one the library builds for a model id, without its extra Hub look-up of the model.
- Cold start: 503 (``{"error": ..., "estimated_time": s}`` or not) is retried with exponential
  backoff, at most ``retries`` times and never past ``timeout_s`` (per image), then
  :class:`ProviderTimeout`. Other 5xx and connection failures: the same bounded retries, then
  :class:`ProviderError`. 4xx: :class:`ProviderRefused` at once with the server's message,
  sanitised. A network timeout: :class:`ProviderTimeout`. Not an image: :class:`ProviderError`.
- An all-black answer (a safety filter) is flagged ``"black_image"``; with ``retry_black`` it
  is asked again with another seed (``seed + 1``, ... for a single image), at most
  ``black_retries`` times, and the seed actually used is recorded.
- The token is only ever handed to the client; it never appears in messages, reprs or logs.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import time
from collections.abc import Callable

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
    is_black,
)

log = logging.getLogger("bildwerk.providers.hf")

SEED_MODULUS = 2**32  # seeds are uint32, like the local pipelines' (MAX_SEED = 2**32 - 1)
MAX_MESSAGE_CHARS = 300
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")
_BEARER = re.compile(r"(?i)bearer\s+\S+")


def default_base_url() -> str:
    from huggingface_hub import constants

    return constants.INFERENCE_PROXY_TEMPLATE.format(provider="hf-inference")


class _Retry(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, kind: str, detail: str, wait_hint: float | None = None) -> None:
        super().__init__(detail)
        self.kind = kind  # "cold" (503) | "server" (other 5xx, connection failures)
        self.detail = detail
        self.wait_hint = wait_hint


class HuggingFaceProvider(Provider):
    name = "hf"

    def __init__(self, token: str | None, model: str, base_url: str | None = None,
                 timeout_s: float = 120.0, retries: int = 4, backoff_s: float = 1.0,
                 retry_black: bool = False, black_retries: int = 2) -> None:
        self._token = token or None
        self.model = model
        self._base_url = (base_url or default_base_url()).rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s = max(0.0, float(backoff_s))
        self.retry_black = retry_black
        self.black_retries = max(0, int(black_retries))

    def __repr__(self) -> str:  # never show the token
        return (f"HuggingFaceProvider(model={self.model!r}, base_url={self._base_url!r}, "
                f"token={'set' if self._token else 'unset'})")

    # -- Provider interface ---------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(tasks=("txt2img", "img2img"), models=(self.model,), sizes=None,
                            max_batch=1)

    def availability(self) -> Availability:
        if not self._token:
            return Availability(False, "HF_TOKEN not set")
        from huggingface_hub import constants

        if constants.is_offline_mode():
            # huggingface_hub's shared HTTP session refuses every request in offline mode.
            return Availability(False, "HF_HUB_OFFLINE is set: Hugging Face requests are disabled")
        return Availability(True)

    def generate(self, request: RemoteRequest) -> RemoteResult:
        if not self._token:
            raise ProviderRefused("the Hugging Face provider is not usable: HF_TOKEN not set")
        if request.task not in ("txt2img", "img2img"):
            raise ProviderRefused(f"the Hugging Face provider does not support {request.task}",
                                  param="task")
        if request.task == "img2img" and request.image is None:
            raise ProviderRefused("img2img needs an input image", param="image")
        model = request.model or self.model
        if not _MODEL_ID.match(model):
            raise ProviderRefused(f"not a Hugging Face model id: {model!r}", param="model")
        url = f"{self._base_url}/models/{model}"
        image_bytes = _png_bytes(request.image) if request.image is not None else None

        images: list[RemoteImage] = []
        attempts = 0
        count = max(1, request.num_images)
        for index in range(count):
            seed = None if request.seed is None else (request.seed + index) % SEED_MODULUS
            black_tries = 0
            while True:
                image, made = self._call_with_retries(
                    self._once(url, request, image_bytes, seed))
                attempts += made
                black = is_black(image)
                if black and self.retry_black and black_tries < self.black_retries:
                    black_tries += 1
                    log.info("hf: black image (safety filter?) for seed %s; retry %d/%d",
                             seed, black_tries, self.black_retries)
                    # Another seed that no other image of this batch uses: seed + 1 for a
                    # single image; a random (recorded) one when the caller gave none.
                    seed = (random.randrange(SEED_MODULUS) if seed is None
                            else (seed + count) % SEED_MODULUS)
                    continue
                images.append(RemoteImage(image=image, seed=seed,
                                          flags=["black_image"] if black else []))
                break
        return RemoteResult(images=images, model=model, usage=None, attempts=attempts)

    # -- internals ------------------------------------------------------------------------

    def _call_with_retries(self, call: Callable[[float], Image.Image]) -> tuple[Image.Image, int]:
        """Run ``call(per_attempt_timeout)`` with bounded retries; (image, attempts made)."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderTimeout(f"Hugging Face gave no answer within {self.timeout_s:g} s "
                                      f"({attempt} attempts)")
            attempt += 1
            try:
                return call(remaining), attempt
            except _Retry as retry:
                if attempt > self.retries:
                    raise self._give_up(retry, attempt) from None
                delay = self.backoff_s * 2 ** (attempt - 1)
                if retry.wait_hint is not None:
                    delay = max(delay, retry.wait_hint)
                if time.monotonic() + delay >= deadline:
                    # The next attempt could not start before the deadline.
                    if retry.kind == "cold":
                        raise ProviderTimeout(
                            f"the model is still loading on Hugging Face ({retry.detail}); "
                            f"gave up after {attempt} attempts within {self.timeout_s:g} s"
                        ) from None
                    raise self._give_up(retry, attempt) from None
                log.info("hf: attempt %d failed (%s); retrying in %.2f s",
                         attempt, retry.detail, delay)
                time.sleep(delay)

    def _give_up(self, retry: _Retry, attempts: int) -> ProviderError:
        if retry.kind == "cold":
            return ProviderTimeout(f"the model is still loading on Hugging Face ({retry.detail}); "
                                   f"gave up after {attempts} attempts")
        return ProviderError(f"Hugging Face failed ({retry.detail}) after {attempts} attempts")

    def _once(self, url: str, request: RemoteRequest, image_bytes: bytes | None,
              seed: int | None) -> Callable[[float], Image.Image]:
        def attempt(timeout: float) -> Image.Image:
            from huggingface_hub import InferenceClient

            client = InferenceClient(provider="hf-inference", token=self._token, timeout=timeout)
            with client:
                return self._post(client, url, request, image_bytes, seed)

        return attempt

    def _post(self, client, url: str, request: RemoteRequest, image_bytes: bytes | None,
              seed: int | None) -> Image.Image:
        import httpx2
        from huggingface_hub.errors import (
            HfHubHTTPError,
            InferenceTimeoutError,
            OfflineModeIsEnabled,
        )

        try:
            if request.task == "img2img":
                extra: dict = {"strength": request.strength}
                if seed is not None:
                    extra["seed"] = seed
                result = client.image_to_image(
                    image_bytes, request.prompt, model=url,
                    negative_prompt=request.negative_prompt or None,
                    num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                    target_size={"width": request.width, "height": request.height}, **extra)
            else:
                result = client.text_to_image(
                    request.prompt, model=url, negative_prompt=request.negative_prompt or None,
                    width=request.width, height=request.height,
                    num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                    seed=seed)
            result.load()
            return result
        except InferenceTimeoutError:
            raise ProviderTimeout(f"Hugging Face did not answer within {self.timeout_s:g} s") \
                from None
        except HfHubHTTPError as exc:
            raise self._http_error(exc) from None
        except OfflineModeIsEnabled:
            raise ProviderError("HF_HUB_OFFLINE is set: Hugging Face requests are disabled") \
                from None
        except httpx2.TransportError as exc:  # refused, reset, protocol errors
            raise _Retry("server", f"connection failed: {type(exc).__name__}") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # PIL's UnidentifiedImageError is an OSError: the answer was not an image.
            raise ProviderError("Hugging Face returned something that is not an image "
                                f"({type(exc).__name__})") from None

    def _http_error(self, exc) -> Exception:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None) or 0
        message = self._sanitise(getattr(exc, "server_message", None) or "")
        if status == 503:
            estimated = _estimated_time(response)
            detail = "HTTP 503" + (f": {message}" if message else "") + (
                f", estimated {estimated:g} s" if estimated is not None else "")
            return _Retry("cold", detail, wait_hint=estimated)
        if 500 <= status < 600:
            return _Retry("server", f"HTTP {status}" + (f": {message}" if message else ""))
        if 400 <= status < 500:
            return ProviderRefused(f"Hugging Face refused the request (HTTP {status})"
                                   + (f": {message}" if message else ""))
        return ProviderError(f"Hugging Face answered HTTP {status}")

    def _sanitise(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "***")
        text = _BEARER.sub("Bearer ***", text)
        text = _TOKEN_LIKE.sub("***", text)
        text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS - 1] + "…"
        return text


def _estimated_time(response) -> float | None:
    """The cold-start hint of a 503 body ``{"error": ..., "estimated_time": 20.0}``."""
    try:
        data = json.loads(response.content)
        value = float(data["estimated_time"])
    except Exception:
        return None
    return value if value >= 0 else None


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
