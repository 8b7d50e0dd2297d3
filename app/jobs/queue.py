"""A bounded job queue drained by one worker thread per device."""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable

from app.errors import BildwerkError, Conflict, JobCancelled, NotFound, QueueFull
from app.jobs.job import Job, JobError

log = logging.getLogger("bildwerk.jobs")
_STOP = object()


class JobQueue:
    """Accepts jobs while fewer than ``maxsize`` are waiting, runs them one at a time in
    order. A job cancelled while waiting frees its place at once.

    ``on_cancelled_before_start`` lets the owner record jobs cancelled while waiting.
    """

    def __init__(self, maxsize: int, retry_after_s: int, device: str = "cpu",
                 keep_finished: int = 1000,
                 on_cancelled_before_start: Callable[[Job], None] | None = None) -> None:
        self.maxsize = maxsize
        self.retry_after_s = retry_after_s
        self.device = device
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running: Job | None = None
        self._on_cancelled = on_cancelled_before_start

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"worker-{self.device}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        if self._running is not None:
            self._running.request_cancel()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def waiting(self) -> int:
        return self._waiting

    # -- API ----------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._lock:
            if self._waiting >= self.maxsize:
                raise QueueFull(
                    f"the {self.device} queue is full ({self.maxsize} jobs waiting); "
                    "retry later", retry_after_s=self.retry_after_s)
            self._waiting += 1
            self._jobs[job.id] = job
            self._trim()
        self._queue.put(job)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", param="job_id")
        if job.finished:
            raise Conflict(f"job {job_id} already {job.status}", param="job_id")
        job.request_cancel()
        if job.cancel_if_queued():
            with self._lock:
                self._waiting -= 1
            if self._on_cancelled is not None:
                self._on_cancelled(job)
        return job

    # -- worker -------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job: Job = item
            if not job.try_start():
                continue  # cancelled while waiting; its place was freed then
            with self._lock:
                self._waiting -= 1
            self._running = job
            try:
                result = job.run(job)
                job.finish("succeeded", result=result)
            except JobCancelled as exc:
                job.finish("cancelled", result=exc.partial,
                           error=JobError(exc.code, exc.message, exc.status_code))
            except BildwerkError as exc:
                job.finish("failed", error=JobError(exc.code, exc.message, exc.status_code,
                                                    exc.param))
            except Exception as exc:  # the worker must survive anything a job does
                log.exception("job %s crashed", job.id)
                job.finish("failed", error=JobError("internal_error", str(exc), 500))
            finally:
                self._running = None

    def _trim(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.finished]
        for jid in finished[: max(0, len(finished) - self._keep_finished)]:
            self._jobs.pop(jid, None)
