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
