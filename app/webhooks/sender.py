"""Delivering a job's webhook events.

:meth:`WebhookSender.watch` subscribes to the job's events, as an SSE stream does
(``Job.subscribe``), and runs one asyncio task per watched job on the job's event loop
(the server's). Nothing runs on the worker thread: the job only puts its events on the
subscription queue, so a slow or dead receiver never delays a generation, and a
webhook's failure never fails the job.

Per job, events are delivered in order, one at a time:

- each attempt resolves the URL's host again and checks every address (DNS rebinding),
  then connects to a checked address (``Host`` header and TLS server name from the URL);
- it is signed by the Standard Webhooks spec with the caller's secret (headers
  ``webhook-id``, the same on every attempt of one event, ``webhook-timestamp`` and
  ``webhook-signature``, new on every attempt);
- a 2xx answer is a success; anything else (another status, a timeout of
  ``BILDWERK_WEBHOOK_TIMEOUT_S``, a refused connection) is retried after
  ``BILDWERK_WEBHOOK_BACKOFF_S``, doubling each time, up to
  ``BILDWERK_WEBHOOK_MAX_ATTEMPTS`` attempts in all. ``410 Gone`` stops at once, and
  redirects are not followed (they count as failures);
- ``progress`` events are sent at most once a second, the newest only, with a single
  attempt: a late progress report is worth nothing;
- every attempt is written to the delivery log.

Deliveries live in memory: at shutdown the sender waits ``BILDWERK_SHUTDOWN_GRACE_S`` for
pending ones (no new retries are scheduled meanwhile), then drops the rest; the log shows
how far each got.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks import Webhook

from app.config import Settings
from app.jobs.job import Job
from app.webhooks import payload
from app.webhooks.log import DeliveryAttempt, DeliveryLog
from app.webhooks.secrets import WebhookSecrets
from app.webhooks.target import WebhookTarget
from app.webhooks.validation import RefusedAddress, parse, resolve_checked

log = logging.getLogger("bildwerk.webhooks")

PROGRESS_EVERY_S = 1.0
USER_AGENT = "Bildwerk-Webhooks/1"


def _final_data(job: Job) -> dict:
    """What the job's final event carried (for a job that finished before we listened)."""
    data = job.snapshot()
    if job.result is not None:
        data["result"] = job.result
    if job.error is not None:
        data["error"] = {"code": job.error.code, "message": job.error.message,
                         "param": job.error.param}
    return data


class WebhookSender:
    def __init__(self, settings: Settings, secrets: WebhookSecrets,
                 deliveries: DeliveryLog) -> None:
        self.settings = settings
        self.secrets = secrets
        self.log = deliveries
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self._ssl: ssl.SSLContext | None = None

    # -- watching jobs (callable from any thread) ---------------------------------------
    def watch(self, job: Job, target: WebhookTarget) -> None:
        """Deliver ``job``'s events to ``target`` from now on."""
        if self._closing:
            log.warning("job %s: the server is shutting down; no webhook deliveries", job.id)
            return
        try:
            job.loop.call_soon_threadsafe(self._subscribe, job, target)
        except RuntimeError:  # the loop is closed: nobody could deliver anything
            log.warning("job %s: no event loop for its webhook deliveries", job.id)
        except Exception:  # the job is queued: its webhook must not fail the request
            log.exception("job %s: could not watch it for webhooks", job.id)

    def _subscribe(self, job: Job, target: WebhookTarget) -> None:
        """On the job's loop. Events emitted before this ran went to no queue of ours;
        what they said is read off the job's state instead (duplicates are skipped)."""
        queue = job.subscribe()
        if job.started_at is not None:
            queue.put_nowait(("status", {**job.snapshot(), "status": "running",
                                         "stage": "starting"}))
        if job.finished:
            queue.put_nowait((job.status, _final_data(job)))
        task = job.loop.create_task(self._run(job, target, queue),
                                    name=f"bildwerk-webhooks-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job, target: WebhookTarget, queue: asyncio.Queue) -> None:
        started, last_progress = False, float("-inf")
        try:
            async with self._client() as http:
                while True:
                    job_event, data = await queue.get()
                    event = payload.webhook_event(job_event, data)
                    if event is None:
                        continue
                    if event == "started":
                        if started:
                            continue
                        started = True
                    if event == "progress":
                        now = time.monotonic()
                        if not queue.empty() or now - last_progress < PROGRESS_EVERY_S:
                            continue  # newer news is queued, or it is too soon
                        last_progress = now
                    if event in target.events:
                        await self._deliver(http, job, target, event, data)
                    if job_event in payload.FINAL:
                        return
        except asyncio.CancelledError:
            raise
        except Exception:  # never the job's problem
            log.exception("job %s: webhook deliveries stopped", job.id)
        finally:
            job.unsubscribe(queue)

    # -- delivering ---------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        if self._ssl is None:
            import certifi

            self._ssl = ssl.create_default_context(cafile=certifi.where())
        # trust_env=False: no proxy from the environment (it would defeat the address
        # checks), no .netrc credentials sent to receivers.
        return httpx.AsyncClient(verify=self._ssl, follow_redirects=False, trust_env=False,
                                 timeout=self.settings.webhook_timeout_s)

    async def _deliver(self, http: httpx.AsyncClient, job: Job, target: WebhookTarget,
                       event: str, data: dict) -> bool:
        s = self.settings
        body = json.dumps(payload.build(event, data), separators=(",", ":"))
        message_id = "msg_" + uuid.uuid4().hex
        attempts = 1 if event == "progress" else s.webhook_max_attempts
        for attempt in range(1, attempts + 1):
            attempted_at = datetime.now(UTC)
            status_code, error = await self._attempt(http, target, message_id, body)
            finished_at = datetime.now(UTC)
            ok = status_code is not None and 200 <= status_code < 300
            retry = (not ok and attempt < attempts and status_code != 410
                     and not self._closing)
            delay = s.webhook_backoff_s * 2 ** (attempt - 1)
            try:
                await asyncio.to_thread(self.log.add, DeliveryAttempt(
                    job_id=job.id, record_id=job.record_id, message_id=message_id,
                    event=event, attempt=attempt, url=target.url, ok=ok,
                    status_code=status_code, error=error, attempted_at=attempted_at,
                    finished_at=finished_at,
                    next_attempt_at=finished_at + timedelta(seconds=delay) if retry else None))
            except Exception:
                log.exception("job %s: could not log a webhook delivery", job.id)
            if ok:
                return True
            log.warning("job %s: webhook %s attempt %d/%d failed: %s%s", job.id, event,
                        attempt, attempts, error,
                        f"; again in {delay:g}s" if retry else "; giving up")
            if not retry:
                return False
            await asyncio.sleep(delay)
        return False

    async def _attempt(self, http: httpx.AsyncClient, target: WebhookTarget,
                       message_id: str, body: str) -> tuple[int | None, str | None]:
        """One POST: (status code, None) on a 2xx, else (status code or None, why)."""
        s = self.settings
        try:
            async with asyncio.timeout(s.webhook_timeout_s):
                url = parse(target.url)
                addresses = await resolve_checked(url, s.webhook_allowed_hosts)
                secret = await asyncio.to_thread(self.secrets.secret_for, target.key_id)
                now = datetime.now(UTC)
                headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                           "webhook-id": message_id,
                           "webhook-timestamp": str(int(now.timestamp())),
                           "webhook-signature": Webhook(secret).sign(message_id, now, body)}
                extensions: dict = {}
                send_to = url
                if addresses:  # connect to the address just checked, not to the name
                    send_to = url.copy_with(host=addresses[0])
                    headers["host"] = url.netloc.decode("ascii")
                    if url.scheme == "https":
                        extensions["sni_hostname"] = url.host
                async with http.stream("POST", send_to, content=body.encode("utf-8"),
                                       headers=headers, extensions=extensions) as response:
                    code = response.status_code  # the body is not read
        except TimeoutError:
            return None, f"timed out after {s.webhook_timeout_s:g}s"
        except RefusedAddress as exc:
            return None, f"refused: {exc.message}"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        return code, None if 200 <= code < 300 else f"HTTP {code}"

    # -- shutdown -----------------------------------------------------------------------
    async def aclose(self, grace_s: float) -> None:
        """Stop taking jobs, give pending deliveries ``grace_s`` seconds, drop the rest."""
        self._closing = True
        loop = asyncio.get_running_loop()
        tasks = [t for t in self._tasks if t.get_loop() is loop]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, grace_s))
        if pending:
            log.warning("dropping the webhook deliveries of %d job(s) at shutdown",
                        len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
