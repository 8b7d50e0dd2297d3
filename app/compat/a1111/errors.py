"""Errors under ``/sdapi/``: the body AUTOMATIC1111's API middleware writes.

AUTOMATIC1111 answers every exception, ``HTTPException`` included, with
``{"error": <exception type>, "detail": <its detail or "">, "body": "", "errors": str(e)}``.
Here a caller's mistake (a status below 500) reads like its ``HTTPException``: ``detail``
carries the message, which is what clients show and test (AI-Render looks for
``{"detail": "Sampler not found"}`` and ``{"detail": "Not Found"}`` on a 404). A server
failure (500 and up) reads like any other exception: the type, an empty ``detail`` and the
message in ``errors``. The status codes, ``Retry-After`` and the rest are Bildwerk's.

A 401 asks for HTTP Basic (``WWW-Authenticate: Basic``), because that is how AUTOMATIC1111
clients send credentials (``webuiapi.set_auth``, ``--api-auth``): any user name, the API
key as the password. Registered for the ``/sdapi/`` prefix in ``app/main.py``.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

PREFIX = "/sdapi/"
BASIC_CHALLENGE = 'Basic realm="Bildwerk"'


class A1111Error(BaseModel):
    """The error body of every ``/sdapi/v1`` route (AUTOMATIC1111's API middleware)."""

    error: str = Field(..., description="The error's type: `HTTPException` for a request "
                       "the server refused, else the failure's name.",
                       examples=["HTTPException"])
    detail: str = Field(..., description="What was wrong with the request; empty for a "
                        "server failure.", examples=["Sampler not found"])
    body: str = Field("", description="Always empty.")
    errors: str = Field(..., description="The whole message.",
                        examples=["404: Sampler not found"])


def _type_name(code: str) -> str:
    return "".join(part.capitalize() for part in code.split("_")) or "Exception"


def render(status: int, code: str, message: str, param: str | None,
           headers: dict[str, str] | None) -> JSONResponse:
    """An :data:`app.errors.ErrorRenderer` for the ``/sdapi/`` prefix."""
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    if status < 500:
        body = {"error": "HTTPException", "detail": message, "body": "",
                "errors": f"{status}: {message}"}
    else:
        body = {"error": _type_name(code), "detail": "", "body": "", "errors": message}
    return JSONResponse(body, status_code=status, headers=headers or None)


def responses(**by_status: str) -> dict:
    """OpenAPI responses in this dialect: ``responses(_404="Sampler not found.")``."""
    out: dict = {}
    for status, description in by_status.items():
        code = int(status.lstrip("_"))
        out[code] = {"model": A1111Error, "description": description}
        if code == 401:
            out[code]["headers"] = {"WWW-Authenticate": {
                "description": "`Basic`: send the API key as the password of HTTP Basic "
                "(any user name), or as `Authorization: Bearer` / `X-API-Key`.",
                "schema": {"type": "string"}}}
        if code in (429, 503):
            out[code]["headers"] = {"Retry-After": {
                "description": "Seconds to wait.", "schema": {"type": "string"}}}
    return out
