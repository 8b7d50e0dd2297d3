"""Domain exceptions and the one error envelope.

Every error a client sees has the shape
``{"error": {"code": str, "message": str, "param": str | None}}``.

Exception tree::

    BildwerkError                 500 internal_error (never raised for bad input)
    ├── InvalidInput              422 invalid_input        the caller sent something unusable
    │   ├── InvalidImage          422 invalid_image        undecodable/unsupported image data
    │   └── MaskMismatch          422 mask_size_mismatch   mask and image differ in size
    ├── PayloadTooLarge           413 payload_too_large    body or image beyond the limits
    ├── UnsupportedMediaType      415 unsupported_media_type
    ├── NotFound                  404 not_found            job, record, blob or model unknown
    ├── Conflict                  409 conflict             e.g. cancelling a finished job
    ├── QueueFull                 429 queue_full           carries Retry-After
    ├── ProviderUnavailable       422 provider_unavailable provider not configured/usable
    ├── ProviderError             502 provider_error       a remote provider failed
    │   ├── ProviderTimeout       504 provider_timeout     no answer in time
    │   └── ProviderRefused       422 provider_refused     the provider rejected the request
    ├── ModelLoadFailed           500 model_load_failed    a checkpoint could not be loaded
    ├── JobCancelled              499-ish, internal: a job stopped at the caller's request
    └── GenerationFailed          500 generation_failed    the pipeline raised
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("bildwerk.errors")


class BildwerkError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def envelope(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "param": self.param}}


class InvalidInput(BildwerkError):
    status_code = 422
    code = "invalid_input"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class MaskMismatch(InvalidInput):
    code = "mask_size_mismatch"


class PayloadTooLarge(BildwerkError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(BildwerkError):
    status_code = 415
    code = "unsupported_media_type"


class NotFound(BildwerkError):
    status_code = 404
    code = "not_found"


class Conflict(BildwerkError):
    status_code = 409
    code = "conflict"


class QueueFull(BildwerkError):
    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(BildwerkError):
    status_code = 422
    code = "provider_unavailable"


class ProviderError(BildwerkError):
    """A remote provider failed (5xx, a malformed answer, unreachable)."""

    status_code = 502
    code = "provider_error"


class ProviderTimeout(ProviderError):
    status_code = 504
    code = "provider_timeout"


class ProviderRefused(ProviderError):
    """The provider rejected the request (4xx, content policy): retrying will not help."""

    status_code = 422
    code = "provider_refused"


class ModelLoadFailed(BildwerkError):
    status_code = 500
    code = "model_load_failed"


class GenerationFailed(BildwerkError):
    status_code = 500
    code = "generation_failed"


class JobCancelled(BildwerkError):
    """A job stopped at the caller's request. ``partial`` holds what it finished (e.g. the
    frames of a sequence) so that it can be recorded and returned."""

    status_code = 409
    code = "cancelled"

    def __init__(self, message: str = "job was cancelled", *, partial=None) -> None:
        super().__init__(message)
        self.partial = partial


class ClientGone(BildwerkError):
    """The client disconnected while a synchronous request waited; nobody reads this."""

    status_code = 499
    code = "client_closed_request"


class JobTimeout(BildwerkError):
    status_code = 504
    code = "job_timeout"


def error_response(status: int, code: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_param(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one envelope. Bad input never becomes a 500."""

    @app.exception_handler(BildwerkError)
    async def _domain(_: Request, exc: BildwerkError) -> JSONResponse:
        headers = None
        if isinstance(exc, QueueFull):
            headers = {"Retry-After": str(exc.retry_after_s)}
        if exc.status_code >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return error_response(exc.status_code, exc.code, exc.message, exc.param, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_param(exc)
        return error_response(422, "invalid_input", message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 415: "unsupported_media_type"
                }.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None,
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
