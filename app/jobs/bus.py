"""Job events and cancels across processes, through Redis.

One process holds a job (the ingress that accepted it), and with the Ray executor another
one runs its steps (a Generator replica). A client may follow or cancel the job on any
ingress. Every process therefore publishes what it knows of a job to Redis, and listens
there for cancels:

* ``bildwerk:job:<id>`` (pub/sub): the job's SSE events (``status``, ``progress``,
  ``preview``, ``frame``, and one terminal event), JSON;
* ``bildwerk:job:<id>:last`` (a key, kept a day): the latest status snapshot, for
  ``GET /jobs/<id>`` on an ingress that does not hold the job;
* ``bildwerk:cancel`` (pub/sub) and ``bildwerk:cancel:<id>`` (a key): cancel requests.
  The key covers a job whose worker has not started it yet when the message goes out.

Why Redis pub/sub rather than PostgreSQL ``LISTEN/NOTIFY``: progress is many small,
short-lived messages that nobody needs once the job ends; a ``NOTIFY`` payload is capped at
8000 bytes (a step preview is larger), is delivered only at commit and would put that
traffic on the database that keeps the records. Redis is already what the rate limiter
shares. What must survive (the status, outputs and errors) is in the records; the bus only
carries what happens meanwhile, so a message lost with a Redis restart costs a progress
update, never a result.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.encoders import jsonable_encoder

from app.jobs.job import TERMINAL

log = logging.getLogger("bildwerk.bus")

KEEP_S = 24 * 3600  # how long the last snapshot and a cancel request are kept


class JobBus:
    """Publishing (thread-safe, from worker threads) and following (asyncio) job events,
    and cancel requests, through one Redis server."""

    def __init__(self, url: str, prefix: str = "bildwerk") -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30)
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    # -- names -------------------------------------------------------------------------
    def _channel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def _cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"

    # -- checks ------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:
            return False

    # -- events ------------------------------------------------------------------------
    def publish(self, job_id: str, event: str, data: dict[str, Any]) -> None:
        """Send one event of ``job_id`` to every process following it. Never raises: a
        lost progress message must not fail the job."""
        try:
            message = json.dumps({"event": event, "data": jsonable_encoder(data)})
            pipe = self._redis.pipeline(transaction=False)
            if event in ("status", "progress") or event in TERMINAL:
                snapshot = {k: v for k, v in jsonable_encoder(data).items()
                            if k in ("job_id", "record_id", "endpoint", "status", "stage",
                                     "progress")}
                pipe.set(self._channel(job_id) + ":last", json.dumps(snapshot), ex=KEEP_S)
            pipe.publish(self._channel(job_id), message)
            pipe.execute()
        except Exception as exc:
            log.warning("could not publish %s of job %s: %s", event, job_id, exc)

    def last(self, job_id: str) -> dict | None:
        """The latest status snapshot any process published for ``job_id``."""
        try:
            raw = self._redis.get(self._channel(job_id) + ":last")
        except Exception:
            return None
        return json.loads(raw) if raw else None

    async def follow(self, job_id: str, *,
                     ping_s: float = 1.0) -> AsyncIterator[tuple[str, dict | None]]:
        """The events of ``job_id`` as they are published, until a terminal one. First
        yields ``("subscribed", None)``: nothing published after it is missed. Then
        ``("tick", None)`` every ``ping_s`` without news, so the caller can check whether
        the job ended without a message (its record) or the client left."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel(job_id))
            yield "subscribed", None
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=ping_s)
                if message is None:
                    yield "tick", None
                    continue
                payload = json.loads(message["data"])
                yield payload["event"], payload["data"]
                if payload["event"] in TERMINAL:
                    return
        finally:
            await pubsub.aclose()
            await client.aclose()

    def relay(self, job_id: str, deliver: Callable[[str, dict], None]) -> Relay:
        """Call ``deliver(event, data)`` on a thread for every event of ``job_id`` until
        :meth:`Relay.stop` (the holder of a job that runs elsewhere uses it to pass the
        worker's progress to its own subscribers)."""
        return Relay(self._redis.pubsub(ignore_subscribe_messages=True),
                     self._channel(job_id), deliver)

    # -- cancel ------------------------------------------------------------------------
    def request_cancel(self, job_id: str, interrupt: bool = False) -> None:
        """Ask whoever holds or runs ``job_id`` to stop it: a cancel, or with ``interrupt``
        a stop because its ingress shuts down (it then ends ``interrupted``)."""
        how = "interrupt" if interrupt else "cancel"
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(f"{self.prefix}:cancel:{job_id}", how, ex=KEEP_S)
        pipe.publish(self._cancel_channel, f"{job_id} {how}")
        pipe.execute()

    def cancel_requested(self, job_id: str) -> str | None:
        """``"cancel"`` or ``"interrupt"`` if a stop was asked for ``job_id``, else None."""
        try:
            value = self._redis.get(f"{self.prefix}:cancel:{job_id}")
        except Exception:
            return None
        return value.decode() if value else None

    def listen_cancels(self, on_cancel: Callable[[str, bool], None]) -> None:
        """Call ``on_cancel(job_id, interrupt)`` on a background thread for every stop
        request any process sends (reconnecting after a Redis outage)."""

        def listen() -> None:
            backoff = 0.5
            while not self._stop.is_set():
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(self._cancel_channel)
                    backoff = 0.5
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=0.5)
                        if message is not None:
                            job_id, _, how = message["data"].decode().partition(" ")
                            try:
                                on_cancel(job_id, how == "interrupt")
                            except Exception:
                                log.exception("cancel of job %s failed", job_id)
                except Exception as exc:
                    log.warning("cancel listener lost Redis (%s); retrying", exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10)
                finally:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

        self._listener = threading.Thread(target=listen, name="bus-cancels", daemon=True)
        self._listener.start()

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(2)
        self._redis.close()


class Relay:
    """A subscription to one job's channel, read on its own thread (see
    :meth:`JobBus.relay`). Subscribed when constructed, so nothing published after is
    missed."""

    def __init__(self, pubsub, channel: str, deliver: Callable[[str, dict], None]) -> None:
        self._pubsub = pubsub
        self._deliver = deliver
        self._stop = threading.Event()
        pubsub.subscribe(channel)
        self._thread = threading.Thread(target=self._read, name="bus-relay", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self._read_until_stopped()
        finally:
            try:
                self._pubsub.close()
            except Exception:
                pass

    def _read_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.2)
            except Exception as exc:
                log.warning("relay lost Redis: %s", exc)
                time.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            payload = json.loads(message["data"])
            try:
                self._deliver(payload["event"], payload["data"])
            except Exception:
                log.exception("relaying %s failed", payload.get("event"))

    def stop(self) -> None:
        """Stop relaying; the thread ends (and unsubscribes) within its next poll, without
        holding up the caller (the job's result is waiting)."""
        self._stop.set()
