"""OpenAI's error dialect for everything under ``/v1/``.

Registered in ``app/main.py`` with ``app.state.error_dialects.add("/v1/", render)``, so the
exception handlers and the request gate answer these paths with OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` and OpenAI's status codes:

- our 422 (invalid input) is OpenAI's **400** ``invalid_request_error``, and so is a
  ``size`` or ``n`` beyond the server's limits (our 413); a body beyond them stays 413;
- an unknown model is **404** ``model_not_found`` (:class:`ModelNotFound`);
- 401 is ``invalid_api_key``, 429 ``rate_limit_exceeded`` for the rate limit;
- 5xx are ``server_error``.

Retries: the OpenAI SDK retries 408, 409, 429 and every 5xx (twice by default) unless the
answer carries ``x-should-retry: false``. A failed generation (500 ``model_load_failed``,
``generation_failed``, ``out_of_memory``; 502/504 from a provider or the time limits) has
used the GPU already and would fail the same way again, so it says ``false``; so does 409
(the job was cancelled while the request waited). 429 (``queue_full``, ``too_many_jobs``,
``rate_limited``) and 503 (``shutting_down``, ``interrupted``) are answered before any work
or ask for the job to be sent again; they carry ``Retry-After``, which the SDK honours (a
wait of up to two minutes; a longer one it does not retry), so they are left to the SDK's
retry. See docs/compat-openai.md.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from app.errors import NotFound

# Our parameter names -> the OpenAI request's.
_PARAMS = {"width": "size", "height": "size", "num_images": "n"}
# Our codes -> OpenAI's, where OpenAI has one for the same thing.
_CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}
# Codes whose answer the SDK must not retry although their status would be retried.
_NO_RETRY_BELOW_500 = frozenset({"cancelled", "conflict"})  # 409


class ModelNotFound(NotFound):
    """A ``model`` that is not in the registry: OpenAI answers 404 ``model_not_found``."""

    code = "model_not_found"


def error_type(status: int, code: str) -> str:
    """OpenAI's ``type`` for an answer of ``status`` with our ``code``."""
    if status == 429:
        return "server_error" if code == "queue_full" else "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def should_retry(status: int, code: str) -> bool | None:
    """``False`` where the SDK's default retry would repeat GPU work; None: leave it to the
    SDK (it retries 408/429/503 honouring ``Retry-After``)."""
    if status == 503:
        return None
    if status >= 500 or status == 409 or code in _NO_RETRY_BELOW_500:
        return False
    return None


def openai_error(status: int, code: str, message: str, param: str | None) -> tuple[int, dict]:
    """The status and body OpenAI's API would answer for one of our errors."""
    if status == 422 or (status == 413 and param in _PARAMS):
        status = 400  # a size or n beyond the server's limits is a bad size, as on OpenAI
    body = {"error": {"message": message, "type": error_type(status, code),
                      "param": _PARAMS.get(param, param) if param else None,
                      "code": _CODES.get(code, code)}}
    return status, body


def openai_error_response(status: int, code: str, message: str, param: str | None = None,
                          headers: dict[str, str] | None = None) -> JSONResponse:
    """The :class:`~app.errors.ErrorDialects` renderer for ``/v1/``."""
    status, body = openai_error(status, code, message, param)
    headers = dict(headers or {})
    if should_retry(status, code) is False:
        headers["x-should-retry"] = "false"
    return JSONResponse(body, status_code=status, headers=headers)
