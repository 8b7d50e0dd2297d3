"""Run a batch against a Bildwerk server: a few jobs at a time, over HTTP.

Each item is one ``POST /txt2img`` with ``Prefer: respond-async``; the job is then
followed with ``GET /jobs/{id}`` (short requests, so a job of any length never meets a
client timeout) and its images are fetched from ``GET /blobs/{sha256}`` and checked
against their sha256.

Errors:

- :class:`ItemFailed`: the server refused or failed this item (422, 413, a failed job,
  429/503 beyond the retries, ...). It carries the server's envelope
  ``{"code", "message", "param"}``; the batch goes on and the item is retried next run.
- :class:`Fatal`: nothing can succeed (server unreachable, 401, 403); the batch stops.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from tqdm import tqdm

from app.batch.inputs import BatchItem
from app.batch.report import BatchReport

KEY_HINT = ("Set BILDWERK_API_KEY (or --api-key) to a key with the generate scope, e.g. "
            "from `bildwerk keys create NAME --scope generate --scope read` on the server")
_FINISHED = ("succeeded", "failed", "cancelled", "interrupted", "rejected")


class BatchError(Exception):
    """Base of the batch client's errors."""


class ItemFailed(BatchError):
    """The server refused or failed one item: ``error`` is its envelope's inner object."""

    def __init__(self, error: dict, status: int | None = None, job: dict | None = None):
        self.error = {"code": str(error.get("code") or "error"),
                      "message": str(error.get("message") or ""),
                      "param": error.get("param")}
        self.status = status
        self.job = job or {}
        super().__init__(self.describe())

    def describe(self) -> str:
        status = f"{self.status} " if self.status else ""
        param = f" ({self.error['param']})" if self.error.get("param") else ""
        return f"{status}{self.error['code']}{param}: {self.error['message']}"


class Fatal(BatchError):
    """No item can succeed: the server is unreachable, or the key is missing or lacks a
    scope. The message says what to do."""


def _envelope(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    text = response.text.strip().replace("\n", " ")[:300]
    return {"code": f"http_{response.status_code}",
            "message": text or response.reason_phrase, "param": None}


def _retry_after(response: httpx.Response, attempt: int) -> float:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return min(float(value), 60.0)
    if value:
        when = email.utils.parsedate_to_datetime(value)
        if when is not None:
            return max(0.0, min(when.timestamp() - time.time(), 60.0))
    return min(2.0 ** attempt, 30.0)


class BatchClient:
    """The HTTP side: one ``httpx.AsyncClient`` for the whole batch.

    Args:
        url (`str`): the server's root, e.g. ``http://127.0.0.1:8000``.
        api_key (`str`, *optional*): sent as ``Authorization: Bearer``.
        retries (`int`, *optional*, defaults to 8): how often a 429/503 or a refused
            connection is retried (waiting ``Retry-After``, else backing off) before the
            item fails.
        timeout (`float`, *optional*, defaults to 60): seconds per HTTP request (a job is
            followed with many short requests, so this never bounds a job).
        transport (`httpx.AsyncBaseTransport`, *optional*): for tests.
        exact (`bool`, *optional*, defaults to True): ask the server to run each job alone
            (``"batch": false``), so an item and its seed give the same bytes on every
            run, a resumed one included; False lets it batch compatible jobs (faster under
            load, images equal within rounding). Not part of an item's request (its key).
    """

    def __init__(self, url: str, api_key: str | None = None, *, retries: int = 8,
                 timeout: float = 60.0, poll_max_s: float = 1.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 exact: bool = True) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.exact = exact
        self.poll_max_s = poll_max_s
        headers = {"User-Agent": "bildwerk-generate"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, transport=transport,
                                      timeout=httpx.Timeout(timeout, connect=10.0))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def check(self) -> None:
        """Fail early, with a clear message, when nothing answers at ``url``."""
        try:
            response = await self.http.get("/health")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 500 and response.status_code != 503:
            raise Fatal(f"{self.url}/health answered {response.status_code}: is this a "
                        "Bildwerk server?")

    def _unreachable(self, exc: Exception) -> Fatal:
        return Fatal(f"cannot reach the Bildwerk server at {self.url} "
                     f"({type(exc).__name__}: {exc or 'no answer'}). Is it running? Set "
                     "--url or BILDWERK_URL to its address.")

    async def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request; waits out 429/503 and refused connections up to ``retries`` times.
        A POST is retried only when it certainly did not reach the server."""
        attempt = 0
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                safe = method == "GET" or isinstance(exc, httpx.ConnectError
                                                     | httpx.ConnectTimeout)
                if not safe or attempt >= self.retries:
                    raise self._unreachable(exc) from exc
                await asyncio.sleep(min(2.0 ** attempt * 0.5, 10.0))
                attempt += 1
                continue
            if response.status_code in (429, 503) and attempt < self.retries:
                await asyncio.sleep(_retry_after(response, attempt))
                attempt += 1
                continue
            if response.status_code == 401:
                raise Fatal(f"401 from {self.url}: {_envelope(response)['message']}. "
                            f"{KEY_HINT}.")
            if response.status_code == 403:
                raise Fatal(f"403 from {self.url}: {_envelope(response)['message']}.")
            if response.status_code >= 400:
                raise ItemFailed(_envelope(response), response.status_code)
            return response

    async def generate(self, request: dict) -> dict:
        """Run one txt2img job to its end; its result (``GenerationResult`` as JSON)."""
        body = {**request, "batch": False} if self.exact else request
        accepted = (await self._request("POST", "/txt2img", json=body,
                                        headers={"Prefer": "respond-async"})).json()
        job_id = accepted["job_id"]
        try:
            status = await self._follow(job_id, accepted)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(job_id))
            raise
        if status["status"] != "succeeded" or not status.get("result"):
            error = status.get("error") or {"code": status["status"],
                                            "message": f"the job ended {status['status']}"}
            raise ItemFailed(error, None, status)
        return status["result"]

    async def _follow(self, job_id: str, status: dict) -> dict:
        delay = 0.05
        while status.get("status") not in _FINISHED:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.poll_max_s)
            status = (await self._request("GET", f"/jobs/{job_id}")).json()
        return status

    async def _cancel(self, job_id: str) -> None:
        """Best effort: an interrupted batch should not leave its jobs running."""
        try:
            await asyncio.wait_for(self.http.delete(f"/jobs/{job_id}"), 2.0)
        except (httpx.HTTPError, TimeoutError):
            pass

    async def blob(self, sha256: str, url: str | None = None) -> bytes:
        """The stored bytes of an image, checked against their sha256."""
        data = (await self._request("GET", url or f"/blobs/{sha256}")).content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ItemFailed({"code": "blob_mismatch", "message": f"the bytes of blob "
                              f"{sha256} do not match its sha256", "param": None})
        return data


@dataclass
class BatchSummary:
    items: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    images: int = 0
    failures: list[tuple[BatchItem, ItemFailed]] = field(default_factory=list)


async def run_batch(items: Sequence[BatchItem], report: BatchReport, client: BatchClient, *,
                    concurrency: int = 2, progress: bool = True,
                    say: Callable[[str], None] | None = None) -> BatchSummary:
    """Make every item ``report`` does not list as done, ``concurrency`` at a time.

    After each finished item its images are in the folder and ``info.json``/``info.md``
    are rewritten (atomically), so a batch stopped at any moment resumes cleanly.

    Raises:
        Fatal: the server cannot be reached or refuses the key; items in flight are
            cancelled on the server, finished ones stay recorded.
    """
    summary = BatchSummary(items=len(items))
    todo = [item for item in items if not report.is_done(item)]
    summary.skipped = len(items) - len(todo)
    if not todo:
        return summary
    await client.check()
    limit = asyncio.Semaphore(max(1, concurrency))
    bar = tqdm(total=sum(item.num_images for item in todo), unit="img", desc="generate",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    tell = say or (lambda line: bar.write(line, file=sys.stderr))

    async def one(item: BatchItem) -> None:
        async with limit:
            try:
                result = await client.generate(item.request)
                images = [(image, await client.blob(image["sha256"], image.get("url")))
                          for image in result.get("images") or []]
            except ItemFailed as exc:
                report.failed(item, exc.error, status=exc.status, job=exc.job)
                summary.failed += 1
                summary.failures.append((item, exc))
                tell(f"item {item.index} ({item.source}) failed: {exc.describe()}")
                bar.set_postfix(failed=summary.failed)
                return
            report.succeeded(item, result, images)
            summary.succeeded += 1
            summary.images += len(images)
            bar.update(len(images))

    try:
        async with asyncio.TaskGroup() as group:
            for item in todo:
                group.create_task(one(item))
    except BaseExceptionGroup as group:  # the first Fatal, else the first error, as itself
        leaves = _leaves(group)
        raise next((e for e in leaves if isinstance(e, Fatal)), leaves[0]) from None
    finally:
        bar.close()
    return summary


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
