"""Bildwerk's native API over Python's standard library (urllib) only.

Blender's bundled Python has no httpx or requests, so this module uses urllib, and it
imports nothing from Blender: it runs and is tested outside Blender too.

Every failure is a :class:`BildwerkError` whose text is one line a user can act on
("Cannot reach Bildwerk at http://127.0.0.1:8000: connection refused (is the server
running?)"). A 429 or 503 with ``Retry-After`` is waited out and retried.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

USER_AGENT = "bildwerk-blender/0.1"
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted", "rejected")
MAX_MESSAGE = 300


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` as a single line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class BildwerkError(Exception):
    """A failure with a one-line message for the user (``str(error)``)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(one_line(message))
        self.status, self.code, self.param = status, code, param

    @property
    def message(self) -> str:
        return str(self)


class Cancelled(BildwerkError):
    """The user cancelled; what finished before is kept by the caller."""


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: treat as unknown


class BildwerkClient:
    """A small client for one Bildwerk server.

    ``timeout`` bounds connecting and each read; ``retries`` is how often a 429/503 with
    ``Retry-After`` is retried (waiting at most ``max_retry_wait`` seconds each time);
    ``should_stop`` (optional) ends those waits early when the user cancels.
    """

    def __init__(self, base_url: str, api_key: str = "", *, timeout: float = 30.0,
                 retries: int = 3, max_retry_wait: float = 60.0,
                 should_stop: Callable[[], bool] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        url = (base_url or "").strip().rstrip("/")
        if not url:
            raise BildwerkError("No Bildwerk server URL set: enter one in the add-on "
                                "preferences")
        if "://" not in url:
            url = "http://" + url
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BildwerkError(f"Not a server URL: {base_url!r} (expected e.g. "
                                "http://127.0.0.1:8000)")
        self.base_url, self.api_key = url, (api_key or "").strip()
        self.timeout, self.retries, self.max_retry_wait = timeout, retries, max_retry_wait
        self.should_stop = should_stop or (lambda: False)
        self.sleep = sleep

    # -- plumbing -------------------------------------------------------------------------
    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def _headers(self, extra: dict | None = None) -> dict:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def open(self, method: str, path: str, body: dict | None = None,
             headers: dict | None = None, timeout: float | None = None):
        """Send one request, retrying 429/503 with ``Retry-After``; return the open
        response (status < 400) or raise :class:`BildwerkError`."""
        data = None if body is None else json.dumps(body).encode()
        extra = dict(headers or {})
        if data is not None:
            extra["Content-Type"] = "application/json"
        attempt = 0
        while True:
            request = urllib.request.Request(self.url(path), data=data, method=method,
                                             headers=self._headers(extra))
            try:
                return urllib.request.urlopen(request, timeout=timeout or self.timeout)
            except urllib.error.HTTPError as exc:
                wait = _retry_after(exc.headers)
                if exc.code in (429, 503) and wait is not None and attempt < self.retries:
                    exc.close()
                    attempt += 1
                    self._wait(min(wait, self.max_retry_wait))
                    continue
                raise self._http_error(exc, attempt) from None
            except urllib.error.URLError as exc:
                raise self._network_error(exc.reason) from None
            except TimeoutError as exc:
                raise self._network_error(exc) from None
            except (ConnectionError, OSError) as exc:
                raise self._network_error(exc) from None

    def _wait(self, seconds: float) -> None:
        remaining = seconds
        while remaining > 0:  # in short naps, so that a cancel is noticed
            if self.should_stop():
                raise Cancelled("Cancelled while waiting for the busy server")
            nap = min(0.2, remaining)
            self.sleep(nap)
            remaining -= nap

    def _network_error(self, reason: object) -> BildwerkError:
        text = str(reason)
        if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in text:
            return BildwerkError(f"Bildwerk at {self.base_url} did not answer within "
                                 f"{self.timeout:g} s (raise the timeout in the add-on "
                                 "preferences, or check the server)")
        if isinstance(reason, ConnectionRefusedError) or "refused" in text.lower():
            return BildwerkError(f"Cannot reach Bildwerk at {self.base_url}: connection "
                                 "refused (is the server running?)")
        if isinstance(reason, socket.gaierror) or "Name or service" in text \
                or "nodename nor servname" in text:
            host = urllib.parse.urlparse(self.base_url).hostname
            return BildwerkError(f"Cannot reach Bildwerk at {self.base_url}: unknown host "
                                 f"{host!r}")
        if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
            return BildwerkError(f"Cannot reach Bildwerk at {self.base_url}: TLS error "
                                 f"({text})")
        return BildwerkError(f"Cannot reach Bildwerk at {self.base_url}: {text}")

    def _http_error(self, exc: urllib.error.HTTPError, retried: int) -> BildwerkError:
        status = exc.code
        try:
            raw = exc.read()
        except Exception:  # a broken body is no reason for a traceback
            raw = b""
        finally:
            exc.close()
        code = param = None
        message = ""
        try:
            envelope = json.loads(raw.decode("utf-8", "replace"))
            error = envelope.get("error") if isinstance(envelope, dict) else None
            if isinstance(error, dict):
                code, param = error.get("code"), error.get("param")
                message = str(error.get("message") or "")
            elif isinstance(envelope, dict) and "detail" in envelope:
                message = str(envelope["detail"])
        except ValueError:
            message = raw.decode("utf-8", "replace")[:200]
        message = message or exc.reason or "no message"
        where = f"{status} {code}" if code else f"HTTP {status}"
        if status == 401:
            text = (f"Bildwerk refused the API key ({where}): set a valid key in the add-on "
                    "preferences")
        elif status == 403:
            text = f"The API key may not do this ({where}): {message}"
        elif status in (429, 503):
            tries = f" after {retried} retries" if retried else ""
            text = f"Bildwerk is busy ({where}){tries}: {message}"
        elif status == 404 and code in (None, "not_found") and "route" in message.lower():
            text = (f"This Bildwerk server has no {exc.url.split('?')[0]} ({where}); is the "
                    "URL right and the server up to date?")
        else:
            field = f" [{param}]" if param and param not in message else ""
            text = f"Bildwerk rejected the request ({where}){field}: {message}"
        return BildwerkError(text, status=status, code=code, param=param)

    # -- JSON -----------------------------------------------------------------------------
    def request_json(self, method: str, path: str, body: dict | None = None,
                     headers: dict | None = None, timeout: float | None = None):
        response = self.open(method, path, body, headers, timeout)
        with response:
            raw = response.read()
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            raise BildwerkError(f"{self.url(path)} did not answer JSON: is this a Bildwerk "
                                "server?") from None

    def get_json(self, path: str, **params):
        query = {k: v for k, v in params.items() if v is not None}
        if query:
            path += "?" + urllib.parse.urlencode(query, doseq=True)
        return self.request_json("GET", path)

    def post_json(self, path: str, body: dict, *, timeout: float | None = None):
        return self.request_json("POST", path, body, timeout=timeout)

    def download(self, url: str) -> bytes:
        """The bytes behind a result's URL (e.g. ``/blobs/<sha256>``)."""
        response = self.open("GET", url, headers={"Accept": "*/*"})
        with response:
            return response.read()

    # -- catalogue ------------------------------------------------------------------------
    def health(self) -> dict:
        return self.get_json("/health")

    def server_info(self) -> dict:
        """Version and routes from ``/openapi.json`` (public)."""
        spec = self.get_json("/openapi.json") or {}
        return {"version": (spec.get("info") or {}).get("version", "?"),
                "title": (spec.get("info") or {}).get("title", "?"),
                "paths": sorted((spec.get("paths") or {}).keys())}

    def models(self) -> list[dict]:
        return self.get_json("/models") or []

    def loras(self) -> list[dict]:
        return self.get_json("/loras") or []

    def vaes(self) -> list[dict]:
        return self.get_json("/vaes") or []

    def schedulers(self) -> list[dict]:
        return self.get_json("/schedulers") or []

    def styles(self) -> list[dict]:
        return self.get_json("/styles") or []

    def upscalers(self) -> list[dict]:
        return self.get_json("/upscalers") or []

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, path: str, body: dict) -> dict:
        """Start a job (``Prefer: respond-async``) and return its status (``job_id``...)."""
        job = self.request_json("POST", path, body, headers={"Prefer": "respond-async"})
        if not isinstance(job, dict) or "job_id" not in job:
            raise BildwerkError(f"{self.url(path)} did not start a job: is the server a "
                                "Bildwerk?")
        return job

    def job(self, job_id: str) -> dict:
        return self.get_json(f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict | None:
        """Ask the server to stop a job; a job that already finished is not an error."""
        try:
            return self.request_json("DELETE", f"/jobs/{job_id}")
        except BildwerkError as exc:
            if exc.status in (404, 409):
                return None
            raise

    def events(self, job_id: str, read_timeout: float = 60.0) -> Iterator[tuple[str, dict]]:
        """The job's Server-Sent Events as ``(event, data)``, up to its final event."""
        response = self.open("GET", f"/jobs/{job_id}/events",
                             headers={"Accept": "text/event-stream"}, timeout=read_timeout)
        with response:
            event, data = "message", []
            while True:
                try:
                    raw = response.readline()
                except (TimeoutError, OSError) as exc:
                    raise self._network_error(exc) from None
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        try:
                            payload = json.loads("\n".join(data))
                        except ValueError:
                            payload = {"text": "\n".join(data)}
                        yield event, payload if isinstance(payload, dict) else {"value": payload}
                        if event in TERMINAL:
                            return
                    event, data = "message", []
                elif line.startswith(":"):
                    continue  # a comment (keep-alive ping)
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))

    def follow(self, job_id: str, on_event: Callable[[str, dict], None] | None = None,
               poll_interval: float = 0.5) -> dict:
        """Follow a job to its end and return the final status (``status``, ``result``,
        ``error``). SSE first; if the stream breaks, poll ``GET /jobs/{id}``."""
        on_event = on_event or (lambda event, data: None)
        try:
            for event, data in self.events(job_id, read_timeout=max(self.timeout, 45.0)):
                on_event(event, data)
                if event in TERMINAL:
                    return data
        except BildwerkError as exc:
            if exc.status is not None and exc.status not in (404, 405, 502, 503, 504):
                raise  # 401/403: polling would fail the same way
        while True:  # the stream ended early, or the server has no SSE: poll
            status = self.job(job_id)
            on_event("progress", status)
            if status.get("status") in TERMINAL:
                return status
            self.sleep(poll_interval)

    def run_job(self, path: str, body: dict,
                on_event: Callable[[str, dict], None] | None = None,
                on_submit: Callable[[dict], None] | None = None) -> dict:
        """Submit a job and follow it. Returns the final status: ``succeeded``, or
        ``cancelled`` (with a partial result, if any). Raises for ``failed``."""
        job = self.submit(path, body)
        if on_submit is not None:
            on_submit(job)
        final = self.follow(job["job_id"], on_event)
        status = final.get("status")
        if status in ("succeeded", "cancelled"):
            return final
        error = final.get("error") or {}
        raise BildwerkError(
            f"The job {status or 'ended'}: {error.get('message') or 'no reason given'}"
            + (f" ({error['code']})" if error.get("code") else ""),
            code=error.get("code"), param=error.get("param"))

    def feedback(self, record_id: str, rating: int | None = None,
                 flags: list[str] | None = None, comment: str | None = None) -> dict:
        body: dict = {}
        if rating is not None:
            body["rating"] = rating
        if flags:
            body["flags"] = flags
        if comment:
            body["comment"] = comment
        return self.post_json(f"/records/{record_id}/feedback", body)
