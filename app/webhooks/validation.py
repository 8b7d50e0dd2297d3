"""Where a webhook may point: ``http``/``https`` URLs whose host resolves only to public
addresses. A private (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10), loopback,
link-local (169.254/16 with the cloud metadata services, fe80::/10), multicast, reserved
or unspecified address is refused, unless the URL's host is listed, as written, in
``BILDWERK_WEBHOOK_ALLOWED_HOSTS``. A host name is resolved and every address it resolves
to must pass.

The check runs at request time (:func:`check_webhook`, 422 naming ``webhook.url``) and
again before every delivery attempt (:func:`resolve_checked`), which hands back the
checked addresses: the sender connects to one of those, not to a name that could resolve
elsewhere a second time (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpx

from app.errors import InvalidInput
from app.webhooks.target import DEFAULT_EVENTS, WebhookTarget

PARAM = "webhook.url"


class RefusedAddress(InvalidInput):
    """The webhook's URL points (or resolves) to an address it may not reach."""


def parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidInput(f"webhook.url is not a URL: {exc}", param=PARAM) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput("webhook.url must be an http:// or https:// URL with a host",
                           param=PARAM)
    return parsed


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _normal(host: str) -> str:
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether BILDWERK_WEBHOOK_ALLOWED_HOSTS lists ``host`` (as the URL writes it)."""
    return _normal(host) in {_normal(h) for h in allowed_hosts if h.strip()}


def refused(address: str) -> bool:
    """Whether a webhook may not reach ``address`` (an IP address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
        elif ip in _NAT64:  # 64:ff9b::a.b.c.d reaches a.b.c.d
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return not ip.is_global or ip.is_multicast


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _literal(host: str) -> str | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).compressed
    except ValueError:
        return None


def _check(host: str, addresses: list[str]) -> list[str]:
    if not addresses:
        raise RefusedAddress(f"webhook.url: {host} resolves to no address", param=PARAM)
    bad = [a for a in addresses if refused(a)]
    if bad:
        what = host if _literal(host) else f"{host} (resolves to {', '.join(bad)})"
        raise RefusedAddress(
            f"webhook.url points to a private, loopback or link-local address: {what}; "
            "an administrator may allow the host with BILDWERK_WEBHOOK_ALLOWED_HOSTS",
            param=PARAM)
    return addresses


def _addresses(infos) -> list[str]:
    return list(dict.fromkeys(info[4][0] for info in infos))


def resolve_sync(url: httpx.URL) -> list[str]:
    host = url.host
    if (literal := _literal(host)) is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port_of(url), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedAddress(f"webhook.url: cannot resolve {host}: {exc}",
                             param=PARAM) from None
    return _addresses(infos)


async def resolve_async(url: httpx.URL) -> list[str]:
    host = url.host
    if (literal := _literal(host)) is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port_of(url), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedAddress(f"cannot resolve {host}: {exc}", param=PARAM) from None
    return _addresses(infos)


def check_webhook(spec, client: dict | None, allowed_hosts: Iterable[str]
                  ) -> WebhookTarget | None:
    """A request's ``webhook`` (:class:`~app.schemas.webhooks.WebhookSpec` or None) into a
    :class:`WebhookTarget`; 422 naming ``webhook.url`` when it may not be reached."""
    if spec is None:
        return None
    url = parse(spec.url)
    if not allowed(url.host, allowed_hosts):
        _check(url.host, resolve_sync(url))
    events = tuple(dict.fromkeys(spec.events)) if spec.events else DEFAULT_EVENTS
    return WebhookTarget(url=str(url), events=events, key_id=(client or {}).get("key_id"))


async def resolve_checked(url: httpx.URL, allowed_hosts: Iterable[str]) -> list[str] | None:
    """Before an attempt: the addresses to connect to, all checked; None for an allowed
    host (connect as the URL says). Raises :class:`RefusedAddress`."""
    if allowed(url.host, allowed_hosts):
        return None
    return _check(url.host, await resolve_async(url))
