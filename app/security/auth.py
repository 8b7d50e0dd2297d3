"""Who is calling, and may they: the FastAPI dependencies behind every protected route.

``authenticate`` resolves the caller into a :class:`Principal` and stores it on
``request.state.principal`` (the rate limiter reads ``principal.key_id``, or the client
host when that is None); ``require(scope)`` adds the scope check. ``app/main.py`` attaches
them per router (and the routers per route where one mixes scopes):

==========  =====================================================================
any key     GET /models, /models/{id}, /loras, /vaes, /schedulers, /providers, /styles
generate    POST /txt2img, /inpaint, /img2seq, /inpainting/, /prompt-expand;
            GET /jobs/{id}, /jobs/{id}/events, DELETE /jobs/{id} (own jobs only)
read        GET /records, /records/{id} (own records only), /blobs/{sha} (own blobs;
            ``generate`` keys may fetch theirs too)
admin       POST /models/refresh, /models/merge, /models/{id}/load, /models/{id}/unload;
            implies every other scope and sees every key's records, jobs and blobs
public      /health, /ready, /docs, /docs-assets/*, /openapi.json
==========  =====================================================================

A key is sent as ``Authorization: Bearer``, ``X-API-Key`` or HTTP Basic's password (any
user name; AUTOMATIC1111 clients send it so). The ``/sdapi/v1`` routes set their scopes
per route (``app/compat/a1111/routes.py``).

Without a key: ``auth_mode=open`` lets everyone in as admin. ``auto`` lets loopback
clients in as admin while no key has ever been created (a revoked key still counts: once
keys are in use, revoking the last one must not reopen the server); after that, loopback
callers without a key get ``BILDWERK_LOOPBACK_SCOPES`` (default ``generate``, so the
museum kiosk's backend, which cannot send a key, goes on working), and see only the
keyless records, jobs and blobs. ``keys`` requires a key from everyone. Otherwise 401. A key
that is sent is always checked, in every mode.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from dataclasses import dataclass
from functools import cache
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBasic, HTTPBearer

from app.config import Settings
from app.errors import Forbidden, Unauthorized
from app.persistence.records import KEYLESS
from app.security.keys import SCOPES, ApiKey, ApiKeyRepository

log = logging.getLogger("bildwerk.auth")

LOOPBACK_NAMES = frozenset({"localhost", "testclient"})  # testclient: Starlette's TestClient
CREATE_HINT = ("create one with `bildwerk keys create NAME --scope generate --scope read`, "
               "or set BILDWERK_AUTH_MODE=open to let every client in")

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="`Authorization: Bearer bw_…` (an API key).")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                        description="`X-API-Key: bw_…` (the same API key).")


def basic_password(authorization: str | None, fetch_site: str | None = None) -> str | None:
    """The password of an ``Authorization: Basic`` header (any user name), which is how
    AUTOMATIC1111 clients send credentials (``webuiapi.set_auth``, ``--api-auth``): the API
    key. None for another scheme, a malformed header or an empty password.

    Also None when a browser says the request comes from another site
    (``Sec-Fetch-Site: cross-site``): a browser that was once given the key at a Basic
    prompt sends it with every request to this server, so a foreign page could otherwise
    make it interrupt jobs or rescan models with the user's key (a cross-site request
    forgery). Scripts and AUTOMATIC1111 clients send no such header."""
    if (fetch_site or "").strip().lower() == "cross-site":
        return None
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _, separator, password = decoded.partition(":")
    return (password.strip() or None) if separator else None


class _BasicKey(HTTPBasic):
    """HTTP Basic in the OpenAPI document (Swagger UI offers it); parsing never answers by
    itself: a request without usable Basic credentials goes on to the other schemes."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return basic_password(request.headers.get("authorization"),
                              request.headers.get("sec-fetch-site"))


_basic = _BasicKey(auto_error=False, scheme_name="basic",
                   description="HTTP Basic with any user name and the API key as the "
                   "password (AUTOMATIC1111 clients: `webuiapi.set_auth`).")


@dataclass(frozen=True)
class Principal:
    """The caller. ``key_id`` is None for a caller let in without a key (loopback while no
    key exists, or open mode), who acts as admin."""

    key_id: str | None
    name: str | None
    scopes: frozenset[str]
    admin: bool
    loopback: bool

    @classmethod
    def of_key(cls, key: ApiKey, loopback: bool) -> Principal:
        admin = "admin" in key.scopes
        return cls(key_id=key.id, name=key.name,
                   scopes=frozenset(SCOPES) if admin else frozenset(key.scopes),
                   admin=admin, loopback=loopback)

    @classmethod
    def keyless(cls, loopback: bool) -> Principal:
        return cls(key_id=None, name=None, scopes=frozenset(SCOPES), admin=True,
                   loopback=loopback)

    @classmethod
    def loopback_trusted(cls, scopes: frozenset[str]) -> Principal:
        """A loopback caller without a key, once keys exist: ``BILDWERK_LOOPBACK_SCOPES``."""
        if "admin" in scopes:
            return cls.keyless(loopback=True)
        return cls(key_id=None, name=None, scopes=scopes, admin=False, loopback=True)

    def allows(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    @property
    def owner(self) -> str | None:
        """Whose records, jobs and blobs alone this caller sees: a key id, ``KEYLESS`` (the
        records made without a key), or None: all."""
        if self.admin:
            return None
        return self.key_id or KEYLESS


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def resolve_principal(settings: Settings, keys: ApiKeyRepository, host: str | None,
                      secret: str | None) -> Principal:
    """The caller behind ``secret`` (an API key, or None) from ``host``; 401 when there is
    no valid key and the auth mode lets nobody in without one."""
    loopback = is_loopback(host)
    if secret:
        key = keys.authenticate(secret.strip())
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        keys.touch(key.id)
        return Principal.of_key(key, loopback)
    if settings.auth_mode == "open" or (
            settings.auth_mode == "auto" and loopback and not keys.has_keys()):
        return Principal.keyless(loopback)
    if settings.auth_mode == "auto" and loopback and settings.loopback_scopes:
        return Principal.loopback_trusted(frozenset(settings.loopback_scopes))
    hint = (" (while no key exists, only loopback clients may call without one)"
            if settings.auth_mode == "auto" else "")
    raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`, "
                       f"`X-API-Key: <key>` or HTTP Basic with the key as password{hint}")


def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
    basic: Annotated[str | None, Depends(_basic)],
) -> Principal:
    """Resolve the caller, or answer 401. Runs once per request (FastAPI caches it); for a
    request with a body the gate (:mod:`app.request_gate`) already did, before reading it."""
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    state = request.app.state
    host = request.client.host if request.client else None
    secret = (bearer.credentials if bearer else None) or basic or api_key
    principal = resolve_principal(state.settings, state.keys, host, secret)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


@cache
def require(*scopes: str):
    """A dependency that lets in callers whose key has one of ``scopes`` (admin has all)."""
    if not scopes or set(scopes) - set(SCOPES):
        raise ValueError(f"unknown scopes {scopes!r}")
    needed = " or ".join(f"'{s}'" for s in scopes)

    def dependency(principal: PrincipalDep) -> Principal:
        if not any(principal.allows(s) for s in scopes):
            if principal.key_id is None:  # a loopback caller without a key
                have = ", ".join(sorted(principal.scopes)) or "no scope"
                raise Forbidden(f"without an API key a loopback caller has {have} "
                                f"(BILDWERK_LOOPBACK_SCOPES); send a key with the {needed} "
                                "scope", param="scope")
            raise Forbidden(f"this API key lacks the {needed} scope", param="scope")
        return principal

    dependency.__name__ = "require_" + "_or_".join(scopes)
    return dependency


def announce(settings: Settings, keys: ApiKeyRepository) -> None:
    """The startup log line that says who may call."""
    if settings.auth_mode == "open":
        log.warning("!!! BILDWERK_AUTH_MODE=open: ANY client that can reach this server may "
                    "use every route, model administration included, WITHOUT an API key !!!")
        return
    active = keys.has_active_keys()
    if settings.auth_mode == "auto" and not keys.has_keys():
        log.warning("no API keys exist: only loopback clients (127.0.0.1, ::1) may call "
                    "without one, every other client gets 401; %s. (Behind a reverse proxy "
                    "on this host make sure it forwards the client address, or set "
                    "BILDWERK_AUTH_MODE=keys.)", CREATE_HINT)
    elif not active:
        log.warning("BILDWERK_AUTH_MODE=%s and no active API key exists: every protected "
                    "route answers 401 until one is created with `bildwerk keys create NAME "
                    "--scope generate`", settings.auth_mode)
    else:
        log.info("API keys required (auth mode %s)", settings.auth_mode)
    if settings.auth_mode == "auto" and keys.has_keys() and settings.loopback_scopes:
        log.warning("loopback clients without a key get the scopes %s "
                    "(BILDWERK_LOOPBACK_SCOPES; behind a reverse proxy on this host every "
                    "client looks like loopback: set it to none there)",
                    ", ".join(settings.loopback_scopes))
