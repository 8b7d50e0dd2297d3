"""A bounded job queue drained by worker threads: one per device (local), or one per job
the Ray executor keeps in flight on its replicas (each waits on a remote run).

It also counts each owner's live (queued or running) jobs for the per-key limit, and
closes for shutdown: :meth:`close` refuses new jobs and interrupts the waiting ones,
:meth:`wait_idle` waits for the running one, :meth:`interrupt_running` stops it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import (
    BildwerkError,
    Conflict,
    JobCancelled,
    JobInterrupted,
    NotFound,
    QueueFull,
    ShuttingDown,
)
from app.jobs.job import Job, JobFailure
from app.observability import metrics
from app.observability.logs import bind_job_context, unbind_job_context

log = logging.getLogger("bildwerk.jobs")
_STOP = object()


@dataclass(eq=False)
class Slot:
    """A place in the queue held for a job that is still being prepared (its inputs
    stored, its record written): :meth:`JobQueue.reserve` takes it, :meth:`JobQueue.submit`
    fills it and :meth:`JobQueue.release` gives it back unused. Counted like a waiting job,
    against the queue's bound and its owner's live jobs."""

    owner: str | None
    state: str = "held"  # held -> used | released


class JobQueue:
    """Accepts jobs while fewer than ``maxsize`` are waiting, runs them one at a time in
    order. A job cancelled while waiting frees its place at once.

    ``on_cancelled_before_start`` lets the owner record jobs cancelled while waiting.
    Thread-safe: ``submit``/``cancel`` come from request threads, the worker is its own.
    """

    def __init__(self, maxsize: int, retry_after_s: int, device: str = "cpu",
                 keep_finished: int = 1000,
                 on_cancelled_before_start: Callable[[Job], None] | None = None,
                 workers: int = 1) -> None:
        self.maxsize = maxsize
        self.retry_after_s = retry_after_s
        self.device = device
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0  # jobs waiting, and places held for jobs being prepared
        self._held = 0  # of those, places held (reserve) and not yet filled (submit)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a job stops running
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Job] = {}
        self._on_cancelled = on_cancelled_before_start
        self._live: Counter[str] = Counter()  # owner -> jobs queued or running
        self._counted: set[str] = set()  # ids of the jobs counted in _live
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._threads = [threading.Thread(target=self._work, name=f"worker-{self.device}-{i}",
                                          daemon=True) for i in range(self._workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the queue, interrupt the running jobs and end the workers."""
        if not self._threads:
            return
        self.close()
        self.interrupt_running()
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def close(self) -> list[Job]:
        """Refuse new jobs from now on (503 ``shutting_down``) and interrupt every waiting
        one; returns the jobs interrupted, for their records."""
        with self._lock:
            self._closed = True
            waiting = [job for job in self._jobs.values() if job.status == "queued"]
        interrupted = []
        for job in waiting:
            if job.interrupt_if_queued():
                with self._lock:
                    self._waiting -= 1
                    self._release(job)
                metrics.job_left_queue(job)
                interrupted.append(job)
        return interrupted

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no job runs (after :meth:`close`, none will start again)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def interrupt_running(self) -> list[Job]:
        """Stop the running jobs at their next step; they end ``interrupted``."""
        with self._lock:
            jobs = list(self._running.values())
        for job in jobs:
            if not job.finished:
                job.interrupt()
        return jobs

    def unfinished(self) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if not job.finished]

    @property
    def running(self) -> Job | None:
        """A running job (the oldest), or None."""
        with self._lock:
            return next(iter(self._running.values()), None)

    @property
    def running_jobs(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def waiting(self) -> int:
        """Jobs in the queue, waiting for the worker (not counting held places)."""
        return self._waiting - self._held

    def live(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""
        with self._lock:
            return self._live[owner]

    # -- API ----------------------------------------------------------------------------
    def reserve(self, owner: str | None) -> Slot:
        """Hold a place for a job of ``owner``: 503 ``shutting_down`` once closed, 429
        ``queue_full`` when ``maxsize`` jobs (or held places) already wait."""
        with self._lock:
            if self._closed:
                raise ShuttingDown(retry_after_s=self.retry_after_s)
            if self._waiting >= self.maxsize:
                raise QueueFull(
                    f"the {self.device} queue is full ({self.maxsize} jobs waiting); "
                    "retry later", retry_after_s=self.retry_after_s)
            self._waiting += 1
            self._held += 1
            if owner is not None:
                self._live[owner] += 1
            return Slot(owner)

    def release(self, slot: Slot) -> None:
        """Give back a place that no job filled (the request failed while preparing)."""
        with self._lock:
            if slot.state != "held":
                return
            slot.state = "released"
            self._waiting -= 1
            self._held -= 1
            self._uncount(slot.owner)

    def submit(self, job: Job, slot: Slot | None = None) -> None:
        """Queue ``job`` in ``slot`` (held by :meth:`reserve` for ``job.owner``), or in a
        place taken now."""
        slot = slot or self.reserve(job.owner)
        with self._lock:
            if slot.state != "held":
                raise ValueError("a queue slot can be filled once")
            if self._closed:  # closed while the job was being prepared
                slot.state = "released"
                self._waiting -= 1
                self._held -= 1
                self._uncount(slot.owner)
                raise ShuttingDown(retry_after_s=self.retry_after_s)
            slot.state = "used"
            self._held -= 1
            self._jobs[job.id] = job
            if job.owner is not None:
                self._counted.add(job.id)
            self._trim()
        metrics.job_queued(job)
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
                self._release(job)
            metrics.job_left_queue(job)
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
            with self._lock:  # start and mark running in one step, for wait_idle
                if not job.try_start():
                    continue  # cancelled or interrupted while waiting; its place was freed
                self._waiting -= 1
                self._running[job.id] = job
            context = bind_job_context(job)  # job_id, record_id on the job's log lines
            metrics.job_left_queue(job)
            metrics.job_running(+1)
            log.info("job started (%s)", job.endpoint)
            try:
                result = job.run(job)
                job.finish("succeeded", result=result)
            except JobCancelled as exc:
                if isinstance(exc, JobInterrupted) or job.interrupted:
                    job.finish("interrupted", result=exc.partial, error=JobFailure(
                        "interrupted", JobInterrupted().message, 503))
                else:
                    job.finish("cancelled", result=exc.partial,
                               error=JobFailure(exc.code, exc.message, exc.status_code))
            except BildwerkError as exc:
                job.finish("failed", error=JobFailure(exc.code, exc.message, exc.status_code,
                                                    exc.param))
            except Exception as exc:  # the worker must survive anything a job does
                log.exception("job %s crashed", job.id)
                job.finish("failed", error=JobFailure("internal_error", str(exc), 500))
            finally:
                metrics.job_running(-1)
                log.info("job finished: %s", job.status)
                unbind_job_context(context)
                with self._lock:
                    self._running.pop(job.id, None)
                    self._release(job)
                    self._idle.notify_all()

    def _release(self, job: Job) -> None:
        """Stop counting ``job`` against its owner (call with the lock held)."""
        if job.id in self._counted:
            self._counted.discard(job.id)
            self._uncount(job.owner)

    def _uncount(self, owner: str | None) -> None:
        if owner is None:
            return
        self._live[owner] -= 1
        if self._live[owner] <= 0:
            del self._live[owner]

    def _trim(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.finished]
        for jid in finished[: max(0, len(finished) - self._keep_finished)]:
            self._jobs.pop(jid, None)
