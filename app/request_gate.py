"""The gate every request with a body passes before any route sees it (pure ASGI).

In this order, each step answering with the one error envelope when it refuses:

1. **Who is calling**, before a byte of the body is read: the API key is checked exactly
   as :func:`app.security.auth.authenticate` checks it (401 ``unauthorized``), and the
   caller is left on ``request.state.principal`` for the routes' scope checks. A caller
   without a key cannot make the server read, let alone parse, anything.
2. **How much may come**: image routes (``IMAGE_BODY_PATHS``: ``/inpaint``, ``/img2img``, ...) take
   up to ``BILDWERK_MAX_BODY_BYTES``, every other route ``BILDWERK_MAX_JSON_BODY_BYTES``
   (413 ``payload_too_large``, from ``Content-Length`` or counted while streaming).
3. **How long it may take**: the whole body must arrive within ``BILDWERK_BODY_TIMEOUT_S``
   (408 ``request_timeout``), so trickling connections are let go.
4. **Its shape**: a JSON body is walked by :func:`app.json_shape.check_json_shape` (depth,
   entries per list/object, values in all; 422 ``invalid_input`` naming the field), on a
   worker thread, before ``json.loads`` or pydantic builds a single object.

The body read here is handed on unchanged (but for the kiosk's hand-written JSON, see
:mod:`app.compat.kiosk_body`); later reads of the connection (a client
disconnecting during a long request) pass through.
"""

from __future__ import annotations

import asyncio
import time

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.compat.kiosk_body import repair_kiosk_body
from app.config import Settings
from app.errors import (
    BildwerkError,
    InvalidJson,
    PayloadTooLarge,
    RequestTimeout,
    dialect_of,
    domain_response,
)
from app.json_shape import JsonShape, check_json_shape

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
IMAGE_BODY_PATHS = frozenset({
    "/inpaint", "/img2img", "/img2seq", "/upscale", "/inpainting/", "/inpainting",
    # the compatibility APIs' routes that carry images (app/compat); AUTOMATIC1111's
    # txt2img too: its clients put ControlNet/ADetailer images into alwayson_scripts
    # (ignored here, but they must not make the body too large to be read)
    "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image",
    "/sdapi/v1/png-info",
    "/v1/images/edits", "/v1/images/variations"})


KIOSK_PATHS = frozenset({"/inpainting/", "/inpainting"})


class _ClientGone(Exception):
    """The client disconnected while sending its body: nobody to answer."""


class RequestGate:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.shape = JsonShape(max_depth=settings.max_json_depth,
                               max_items=settings.max_json_items,
                               max_values=settings.max_json_values)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            await self._authenticate(scope)
            cap = self.cap_for(scope["path"])
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                raise _too_large(cap, scope["path"])
            body = await self._read(receive, cap, scope["path"])
            if body and _is_json(scope):
                body = await to_thread.run_sync(self._checked_json, scope, body)
        except BildwerkError as exc:
            await domain_response(exc, dialect_of(scope))(scope, receive, send)
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    def _checked_json(self, scope: Scope, body: bytes) -> bytes:
        """The body once its JSON shape is checked; the kiosk's hand-written body with a
        quote or line break in the wish is read back into valid JSON (and noted on
        ``request.state.kiosk_body_repaired``)."""
        try:
            check_json_shape(body, self.shape)
            return body
        except InvalidJson:
            repaired = repair_kiosk_body(body) if scope["path"] in KIOSK_PATHS else None
            if repaired is None:
                raise
        check_json_shape(repaired, self.shape)
        scope.setdefault("state", {})["kiosk_body_repaired"] = True
        return repaired

    def cap_for(self, path: str) -> int:
        if path in IMAGE_BODY_PATHS:
            return self.settings.max_body_bytes
        return min(self.settings.max_json_body_bytes, self.settings.max_body_bytes)

    async def _authenticate(self, scope: Scope) -> None:
        from app.security.auth import resolve_principal

        state = getattr(scope.get("app"), "state", None)
        keys = getattr(state, "keys", None)
        if keys is None:  # not started (no lifespan): the routes' own checks apply
            return
        client = scope.get("client")
        host = client[0] if client else None
        secret = _secret(scope)
        principal = await to_thread.run_sync(resolve_principal, self.settings, keys, host,
                                             secret)
        scope.setdefault("state", {})["principal"] = principal

    async def _read(self, receive: Receive, cap: int, path: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.settings.body_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within {self.settings.body_timeout_s:g} "
                    "s (BILDWERK_BODY_TIMEOUT_S)") from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise _too_large(cap, path)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(cap: int, path: str) -> PayloadTooLarge:
    setting = ("BILDWERK_MAX_BODY_BYTES" if path in IMAGE_BODY_PATHS
               else "BILDWERK_MAX_JSON_BODY_BYTES")
    return PayloadTooLarge(f"request body exceeds {cap} bytes ({setting})")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _is_json(scope: Scope) -> bool:
    content_type = (_header(scope, b"content-type") or "").lower()
    return not content_type or content_type.startswith("application/json") \
        or "+json" in content_type.split(";")[0]


def _secret(scope: Scope) -> str | None:
    """The API key as ``Authorization: Bearer``, HTTP Basic's password (any user name, as
    AUTOMATIC1111 clients send it) or ``X-API-Key`` carry it."""
    from app.security.auth import basic_password

    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        password = basic_password(authorization, _header(scope, b"sec-fetch-site"))
        if password:
            return password
    api_key = _header(scope, b"x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None
