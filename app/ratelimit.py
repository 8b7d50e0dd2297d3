"""The guard in front of every route that starts work (POST /txt2img, /inpaint, /img2seq,
/inpainting/, /prompt-expand): 503 ``shutting_down`` while the server drains, then 429
``rate_limited`` over ``BILDWERK_RATE_LIMIT``. Both carry ``Retry-After``.

The rate limit counts per caller: the API key (``request.state.principal.key_id``, set
by ``app.security.auth.authenticate``, which therefore runs first), else the client
host. It uses the ``limits`` library's moving window, in memory (one process) or in
Redis (``BILDWERK_RATE_LIMIT_STORAGE=redis://…``, shared by every instance). If the
storage cannot be reached the request is let through and the failure logged: an outage of
the counter must not stop the service.
"""

from __future__ import annotations

import logging
import math
import time

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.config import Settings
from app.errors import RateLimited, ShuttingDown
from app.request_limits import caller_key

log = logging.getLogger("bildwerk.limits")

GUARDED_METHODS = frozenset({"POST"})  # work; GETs on the same routers are catalogues
NAMESPACE = "bildwerk"  # prefix of the counters' keys (in Redis: shared by every instance)


class RateLimiter:
    """``spec`` like ``"60/minute"`` or ``"5/second;200/hour"`` (every rate applies)."""

    def __init__(self, spec: str, storage_uri: str = "memory://",
                 namespace: str | None = None) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        # A Redis that hangs must not hang requests: give up after a second (then the
        # request is let through, see WorkGuard).
        options = ({"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
                   if storage_uri.startswith("redis") else {})
        self.storage = storage_from_string(storage_uri, **options)
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.namespace = namespace or NAMESPACE

    def hit(self, key: str) -> int | None:
        """Count one request for ``key``; None if allowed, else seconds until it would be."""
        for item in self.items:
            if not self.strategy.test(item, self.namespace, key):
                return self._retry_after(item, key)
        for item in self.items:
            if not self.strategy.hit(item, self.namespace, key):  # lost a race meanwhile
                return self._retry_after(item, key)
        return None

    def _retry_after(self, item: RateLimitItem, key: str) -> int:
        reset = self.strategy.get_window_stats(item, self.namespace, key).reset_time
        return max(1, math.ceil(reset - time.time()))

    def reachable(self) -> bool:
        try:
            return bool(self.storage.check())
        except Exception:
            return False


class WorkGuard:
    """A FastAPI dependency (``Depends(WorkGuard(settings))``) for the work routers."""

    def __init__(self, settings: Settings, spec: str | None = None,
                 namespace: str | None = None) -> None:
        """``spec`` defaults to ``BILDWERK_RATE_LIMIT``; a guard with its own ``spec``
        (``BILDWERK_PROMPT_RATE_LIMIT`` for /prompt-expand) counts in its own
        ``namespace``."""
        self.retry_after_s = settings.retry_after_s
        self.spec = settings.rate_limit if spec is None else spec
        self.limiter = (RateLimiter(self.spec, settings.rate_limit_storage, namespace)
                        if self.spec else None)

    def __call__(self, request: Request) -> None:
        if request.method not in GUARDED_METHODS:
            return
        lifecycle = getattr(request.app.state, "lifecycle", None)
        if lifecycle is not None and lifecycle.draining:
            raise ShuttingDown(retry_after_s=self.retry_after_s)
        if self.limiter is None:
            return
        key = request_caller(request)
        if key is None:
            return
        try:
            wait = self.limiter.hit(key)
        except Exception as exc:  # the counter's storage is down: let the request in
            log.error("rate limiter storage failed (%s); request not limited", exc)
            return
        if wait is not None:
            raise RateLimited(f"rate limit of {self.spec} exceeded; retry in {wait} s",
                              retry_after_s=wait)


def request_caller(request: Request) -> str | None:
    """The caller a request counts against (see :func:`app.request_limits.caller_key`)."""
    principal = getattr(request.state, "principal", None)
    host = request.client.host if request.client else None
    return caller_key(getattr(principal, "key_id", None), host)
