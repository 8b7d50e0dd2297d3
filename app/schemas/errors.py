"""The error envelope as an OpenAPI schema, so the docs show what clients really get."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(..., examples=["invalid_input"])
    message: str = Field(..., examples=["width: must be a multiple of 8"])
    param: str | None = Field(None, examples=["width"])


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def error_responses(**by_status: str) -> dict:
    """``error_responses(_404="Unknown job")`` -> OpenAPI responses using the envelope."""
    return {int(status.lstrip("_")): {"model": ErrorEnvelope, "description": description}
            for status, description in by_status.items()}


# Every route can answer these.
COMMON_ERRORS = error_responses(_422="Invalid input.", _500="Server error.")
# Routes that read a body: one that cannot be parsed at all (not JSON, empty, a broken
# multipart body) is a 400 before validation (``invalid_json`` names line and column).
BAD_BODY = error_responses(_400="The body could not be parsed.")

_WWW_AUTHENTICATE = {"WWW-Authenticate": {
    "description": "`Bearer`: send the key as `Authorization: Bearer <key>` or `X-API-Key`.",
    "schema": {"type": "string"}}}
# Routes that need an API key (any scope) answer 401; routes that need a scope also 403.
UNAUTHORIZED = {401: {**error_responses(
    _401="No API key, or an unknown or revoked one.")[401], "headers": _WWW_AUTHENTICATE}}
FORBIDDEN = error_responses(_403="The API key lacks the scope this route needs.")
AUTH_ERRORS = {**UNAUTHORIZED, **FORBIDDEN}
