"""Domain exceptions and the one error envelope.

Every error a client sees has the shape
``{"error": {"code": str, "message": str, "param": str | None}}``.

Exception tree::

    BildwerkError                 500 internal_error (never raised for bad input)
    ├── InvalidInput              422 invalid_input        the caller sent something unusable
    │   ├── InvalidImage          422 invalid_image        undecodable/unsupported image data
    │   └── MaskMismatch          422 mask_size_mismatch   mask and image differ in size
    ├── PayloadTooLarge           413 payload_too_large    body or image beyond the limits
    ├── RequestTimeout            408 request_timeout      the body took too long to arrive
    ├── UnsupportedMediaType      415 unsupported_media_type
    ├── Unauthorized              401 unauthorized         no, an invalid or a revoked API key
    ├── Forbidden                 403 forbidden            the key lacks the route's scope
    ├── NotFound                  404 not_found            job, record, blob or model unknown
    ├── Conflict                  409 conflict             e.g. cancelling a finished job
    ├── QueueFull                 429 queue_full           carries Retry-After
    ├── TooManyJobs               429 too_many_jobs        a key's queued+running jobs at the
    │                                                      limit; carries Retry-After
    ├── RateLimited               429 rate_limited         over BILDWERK_RATE_LIMIT; Retry-After
    ├── ShuttingDown              503 shutting_down        the server is draining; Retry-After
    ├── ProviderUnavailable       422 provider_unavailable provider not configured/usable
    ├── ProviderError             502 provider_error       a remote provider failed
    │   ├── ProviderTimeout       504 provider_timeout     no answer in time
    │   └── ProviderRefused       422 provider_refused     the provider rejected the request
    ├── ModelLoadFailed           500 model_load_failed    a checkpoint could not be loaded
    ├── JobCancelled              499-ish, internal: a job stopped at the caller's request
    │   └── JobInterrupted        503 interrupted          stopped because the server shut down
    ├── JobTimeLimit              504 job_time_limit       the job ran past BILDWERK_JOB_TIMEOUT_S
    ├── GenerationFailed          500 generation_failed    the pipeline raised
    │   └── OutOfMemory           500 out_of_memory        the device ran out of memory
    ├── ChainFailed               as its last attempt      every provider of a chain failed;
    │                                                      carries the attempts
    └── DatabaseUnusable          never an HTTP answer: startup (or `bildwerk db`) refuses
        ├── DatabaseDamaged       the SQLite file fails PRAGMA quick_check
        └── DatabaseMissing       no database (missing, empty, no schema) beside the blobs
                                  of an earlier install; `bildwerk db init --force` overrides
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

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
        return envelope(self.code, self.message, self.param)


class InvalidInput(BildwerkError):
    status_code = 422
    code = "invalid_input"


class InvalidJson(BildwerkError):
    """The request body is not JSON at all (400): the message says where it breaks."""

    status_code = 400
    code = "invalid_json"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class MaskMismatch(InvalidInput):
    code = "mask_size_mismatch"


class EmptyMask(InvalidInput):
    """The mask marks no pixel to change (the kiosk's legacy route answers the image
    unchanged instead)."""


class PayloadTooLarge(BildwerkError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(BildwerkError):
    """The request body did not arrive within ``BILDWERK_BODY_TIMEOUT_S``."""

    status_code = 408
    code = "request_timeout"


class UnsupportedMediaType(BildwerkError):
    status_code = 415
    code = "unsupported_media_type"


class Unauthorized(BildwerkError):
    """No API key, or one that is unknown or revoked. Answered with ``WWW-Authenticate``."""

    status_code = 401
    code = "unauthorized"


class Forbidden(BildwerkError):
    """A valid API key without the scope the route needs."""

    status_code = 403
    code = "forbidden"


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


class TooManyJobs(BildwerkError):
    """The caller (API key, else client host) already has the most jobs queued or running
    that ``BILDWERK_MAX_QUEUED_PER_KEY`` allows."""

    status_code = 429
    code = "too_many_jobs"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(BildwerkError):
    """More requests than ``BILDWERK_RATE_LIMIT`` allows; ``retry_after_s`` is when the
    window frees a place."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(BildwerkError):
    """The server is shutting down and takes no new work."""

    status_code = 503
    code = "shutting_down"

    def __init__(self, message: str = "the server is shutting down; retry shortly (another "
                 "instance may take the request)", *, retry_after_s: int = 5) -> None:
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


class OutOfMemory(GenerationFailed):
    """The device (or the machine) ran out of memory during a job; its memory is freed."""

    code = "out_of_memory"


class ChainFailed(BildwerkError):
    """Every provider of a chain failed. Answers as the last failure did (its status, code
    and message) and carries ``attempts``: each provider tried and how it went."""

    def __init__(self, last: BildwerkError, attempts: list[dict]) -> None:
        super().__init__(last.message, param=last.param)
        self.status_code = last.status_code
        self.code = last.code
        self.last = last
        self.attempts = attempts


class JobCancelled(BildwerkError):
    """A job stopped at the caller's request. ``partial`` holds what it finished (e.g. the
    frames of a sequence) so that it can be recorded and returned."""

    status_code = 409
    code = "cancelled"

    def __init__(self, message: str = "job was cancelled", *, partial=None) -> None:
        super().__init__(message)
        self.partial = partial


class JobInterrupted(JobCancelled):
    """A job stopped because the server shut down (its record ends ``interrupted``)."""

    status_code = 503
    code = "interrupted"

    def __init__(self, message: str = "the server shut down before this job finished; "
                 "submit it again", *, partial=None) -> None:
        super().__init__(message, partial=partial)


class ClientGone(BildwerkError):
    """The client disconnected while a synchronous request waited; nobody reads this."""

    status_code = 499
    code = "client_closed_request"


class JobTimeout(BildwerkError):
    """A synchronous request stopped waiting; its job goes on."""

    status_code = 504
    code = "job_timeout"


class JobTimeLimit(BildwerkError):
    """A job ran longer than ``BILDWERK_JOB_TIMEOUT_S`` and was stopped (it ends ``failed``)."""

    status_code = 504
    code = "job_time_limit"


class DatabaseUnusable(BildwerkError):
    """The configured database must not be used: raised at startup (uvicorn then exits
    non-zero with the message logged) and by ``bildwerk db`` commands, never answered."""

    code = "database_unusable"


class DatabaseDamaged(DatabaseUnusable):
    """The SQLite file fails ``PRAGMA quick_check`` (or is no database at all)."""

    code = "database_damaged"


class DatabaseMissing(DatabaseUnusable):
    """The database is missing, empty or has no schema while the blob store holds files of
    an earlier install: starting would silently begin a new install (no keys, no records)."""

    code = "database_missing"


def invalid_input_from(exc, rename: dict[str, str] | None = None,
                       top_level: bool = False) -> InvalidInput:
    """The 422 for a pydantic ``ValidationError``: its first error, naming the field (the
    dotted path, or with ``top_level`` its first part), renamed by ``rename`` where a
    compatibility API calls the field otherwise."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    parts = [str(p) for p in first.get("loc", ())]
    loc = (parts[0] if parts else None) if top_level else (".".join(parts) or None)
    param = (rename or {}).get(loc, loc) if loc else None
    message = first.get("msg", "invalid value")
    return InvalidInput(f"{param}: {message}" if param else message, param=param)


def envelope(code: str, message: str, param: str | None = None) -> dict:
    """The one error envelope every answer of this API uses."""
    return {"error": {"code": code, "message": message, "param": param}}


def error_response(status: int, code: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = envelope(code, message, param)
    return JSONResponse(body, status_code=status, headers=headers)


ErrorRenderer = Callable[[int, str, str, "str | None", "dict[str, str] | None"], JSONResponse]


class ErrorDialects:
    """Which shape an error answer takes, by path prefix. Everywhere it is our envelope
    (:func:`error_response`); the compatibility APIs (``/sdapi/v1``, ``/v1``) promise their
    clients the original server's shape, so those prefixes get their own renderer. The
    renderer gets what every error has: status, code, message, param and headers."""

    def __init__(self) -> None:
        self._by_prefix: list[tuple[str, ErrorRenderer]] = []

    def add(self, prefix: str, render: ErrorRenderer) -> None:
        self._by_prefix.append((prefix, render))
        self._by_prefix.sort(key=lambda item: -len(item[0]))  # the longest prefix wins

    def for_path(self, path: str) -> ErrorRenderer:
        for prefix, render in self._by_prefix:
            if path.startswith(prefix):
                return render
        return error_response


def dialect_of(request_or_scope) -> ErrorRenderer:
    """The renderer for a request (or an ASGI scope, for middleware)."""
    if isinstance(request_or_scope, Request):
        app, path = request_or_scope.app, request_or_scope.url.path
    else:
        app, path = request_or_scope.get("app"), request_or_scope.get("path", "")
    dialects = getattr(getattr(app, "state", None), "error_dialects", None)
    return dialects.for_path(path) if dialects else error_response


def domain_response(exc: BildwerkError,
                    render: ErrorRenderer = error_response) -> JSONResponse:
    """The answer to a domain error: its envelope and status, ``Retry-After`` on 429/503,
    ``WWW-Authenticate`` on 401. Used by the exception handler and by the request gate."""
    headers = None
    if getattr(exc, "retry_after_s", None) is not None:  # 429s and 503s
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    if exc.status_code >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return render(exc.status_code, exc.code, exc.message, exc.param, headers)


def json_error_message(doc: object, error: dict | None = None) -> str:
    """"body is not valid JSON: Expecting value at line 1, column 17" for a body that does
    not parse (``doc``: its text; ``error``: pydantic's json_invalid error, when that is
    what found it)."""
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
    if not isinstance(text, str):
        return "body is not valid JSON"
    if not text.strip():
        return "body is empty: send a JSON object"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:  # stops at the first error: where it is
        reason = exc.msg.removesuffix(" at")  # "Invalid control character at"
        return f"body is not valid JSON: {reason} at line {exc.lineno}, column {exc.colno}"
    except (RecursionError, ValueError):
        pass
    reason = (error or {}).get("ctx", {}).get("error") if error else None
    return f"body is not valid JSON: {reason}" if reason else "body is not valid JSON"


def _validation_param(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> ErrorDialects:
    """Map every exception to the one envelope (or, under a compatibility API, to its
    dialect: add renderers to the returned :class:`ErrorDialects`). Bad input never becomes
    a 500."""
    dialects = app.state.error_dialects = ErrorDialects()

    @app.exception_handler(BildwerkError)
    async def _domain(request: Request, exc: BildwerkError) -> JSONResponse:
        return domain_response(exc, dialect_of(request))

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # e.g. a form field of 1,100 "[" that a JSON or form parser recursed into
        return dialect_of(request)(422, "invalid_input", "the input is nested too deeply",
                                   None, None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        whole_body = tuple(first.get("loc", ())) == ("body",)
        if first.get("type") == "json_invalid" or (
                first.get("type") == "missing" and whole_body and not exc.body):
            bad = InvalidJson(json_error_message(exc.body or "", first))
            return domain_response(bad, dialect_of(request))
        content_type = request.headers.get("content-type", "")
        if whole_body and first.get("type") == "model_attributes_type" and content_type \
                and "json" not in content_type and "form" not in content_type:
            return dialect_of(request)(
                415, "unsupported_media_type", f"unsupported content type {content_type!r}: "
                "send the body as JSON (Content-Type: application/json)", None, None)
        message, param = _validation_param(exc)
        record = getattr(request.app.state, "record_invalid_body", None)
        if record is not None:  # a refused generation request is recorded too
            await record(request, exc.body, InvalidInput(message, param=param))
        return dialect_of(request)(422, "invalid_input", message, param, None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 415: "unsupported_media_type"
                }.get(exc.status_code, "http_error")
        return dialect_of(request)(exc.status_code, code, str(exc.detail), None,
                                   getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return dialect_of(request)(500, "internal_error", "internal server error", None, None)

    return dialects
