"""Request limits checked before any work starts.

- :class:`ControlCharGuard`: a URL with a control character is a 422 before any route.
  (Body size, time and shape are the request gate's: :mod:`app.request_gate`.)
- :func:`check_prompt_lengths`: prompt, negative prompt, prompt_schedule entries, the
  /prompt-expand idea and script against ``BILDWERK_MAX_PROMPT_CHARS`` (422 naming the
  field). Called by ``InputChecks.request`` and ``PromptService.expand``.
- :func:`caller_key`: who a request counts against (API key, else client host), for the
  per-key job limit and the rate limit (:mod:`app.ratelimit`).
- :func:`install_cors`: the CORS allowlist (``BILDWERK_CORS_ORIGINS``).

Image size limits live with the decoder (:mod:`app.imaging.decode`), step/frame/batch
limits in ``app.services.checks`` and ``app.services.planning``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.errors import InvalidInput, dialect_of

SCRIPT_FACTOR = 10  # a /prompt-expand script holds many scenes
# The kiosk page (and any browser client) sends these; the rest are CORS-safelisted.
CORS_ALLOW_HEADERS = ["Content-Type", "Authorization", "X-API-Key", "Prefer", "Accept",
                      "Last-Event-ID"]
CORS_EXPOSE_HEADERS = ["Location", "Retry-After", "X-Bildwerk-Record-Id", "X-Bildwerk-Job-Id",
                       "X-Bildwerk-Seed", "Preference-Applied"]


def check_prompt_lengths(req: Any, max_chars: int) -> None:
    """Refuse a request whose texts exceed ``max_chars`` (the script ``SCRIPT_FACTOR`` x):
    422 ``invalid_input`` with ``param`` naming the field (``prompt_schedule.<frame>``)."""
    texts: list[tuple[str, str | None, int]] = [
        (name, getattr(req, name, None), max_chars)
        for name in ("prompt", "negative_prompt", "idea")]
    texts.append(("script", getattr(req, "script", None), max_chars * SCRIPT_FACTOR))
    schedule = getattr(req, "prompt_schedule", None) or {}
    texts += [(f"prompt_schedule.{frame}", text, max_chars) for frame, text in schedule.items()]
    for param, text, limit in texts:
        if isinstance(text, str) and len(text) > limit:
            raise InvalidInput(f"{param} has {len(text)} characters; at most {limit} are "
                               "allowed (BILDWERK_MAX_PROMPT_CHARS)", param=param)


def caller_key(key_id: str | None, host: str | None) -> str | None:
    """The caller a request counts against: its API key, else its client host."""
    if key_id:
        return f"key:{key_id}"
    return f"host:{host}" if host else None


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Answer browsers from the allowlisted origins only; without origins, send no CORS
    headers at all. Add it last, so that it wraps every other middleware (a 413 from
    :class:`BodySizeLimit` still carries the headers the page needs to read it)."""
    if not settings.cors_origins:
        return
    app.add_middleware(
        CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"], allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS, max_age=600)


class ControlCharGuard:
    """Refuse a path or query string that holds a NUL or another control character (422),
    before any route or database sees it: PostgreSQL cannot store NUL in text, and no id,
    name or filter of this API contains one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("path", "") + unquote(scope.get("query_string", b"").decode(
                "latin-1"))
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
                response = dialect_of(scope)(
                    422, "invalid_input", "the URL holds a control character (e.g. %00)",
                    None, None)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
