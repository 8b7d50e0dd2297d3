"""A bounded job queue drained by worker threads: one per device (local), or one per job
the Ray executor keeps in flight on its replicas (each waits on a remote run).

With a :class:`BatchPolicy`, a worker that takes a job carrying a
:class:`~app.jobs.job.BatchTicket` also takes the queued jobs with the same ticket key, up
to the policy's images and pixels, waiting up to ``wait_s`` for more while the device is
busy, and runs them together through ``run_batch`` (docs/performance.md, "Batching").

It also counts each owner's live (queued or running) jobs for the per-key limit, and
closes for shutdown: :meth:`close` refuses new jobs and interrupts the waiting ones,
:meth:`wait_idle` waits for the running one, :meth:`interrupt_running` stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class BatchPolicy:
    """How a device worker batches compatible jobs: at most ``max_images`` images and
    ``max_pixels`` (images x width x height) in one pipeline call, and up to ``wait_s`` spent
    waiting for more, only while the previous run was itself a batch (so a lone request on
    an idle server never waits)."""

    max_images: int
    max_pixels: int
    wait_s: float


# Runs several started jobs as one; returns, per job in order, its result or its error.
BatchRun = Callable[[list[Job]], list[Any]]


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
                 workers: int = 1, batching: BatchPolicy | None = None,
                 run_batch: BatchRun | None = None) -> None:
        self.maxsize = maxsize
        self.retry_after_s = retry_after_s
        self.device = device
        self._pending: deque = deque()  # jobs (and _STOP) for the workers, in order
        self.batching = batching
        self.run_batch = run_batch  # set by the executor that knows how to run a batch
        self._last_run_batched = False
        self._waiting = 0  # jobs waiting, and places held for jobs being prepared
        self._held = 0  # of those, places held (reserve) and not yet filled (submit)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a job stops running
        self._ready = threading.Condition(self._lock)  # notified when _pending grows
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
        with self._lock:
            self._pending.extend([_STOP] * len(self._threads))
            self._ready.notify_all()
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
            self._ready.notify_all()  # a batch waiting for the job it held can stop

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
        with self._lock:
            self._pending.append(job)
            self._ready.notify_all()

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
    def _next(self):
        with self._lock:
            while not self._pending:
                self._ready.wait()
            return self._pending.popleft()

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is _STOP:
                return
            job: Job = item
            with self._lock:  # start and mark running in one step, for wait_idle
                if not self._start_locked(job):
                    continue  # cancelled or interrupted while waiting; its place was freed
            batch = [job]
            if self._batches(job):
                batch += self._gather(job)
            if len(batch) == 1:
                self._run(job)
            else:
                self._run_together(batch)

    def _start_locked(self, job: Job) -> bool:
        if not job.try_start():
            return False
        self._waiting -= 1
        self._running[job.id] = job
        return True

    def _batches(self, job: Job) -> bool:
        return (self.batching is not None and self.run_batch is not None
                and job.batch is not None and job.batch.images < self.batching.max_images)

    def _gather(self, first: Job) -> list[Job]:
        """Take (and start) the queued jobs that can join ``first``'s batch: the same ticket
        key, within the policy's images and pixels. While the previous run was a batch (the
        server is busy), keep waiting as long as compatible jobs keep arriving less than
        ``wait_s`` apart, or places are held for jobs being admitted, up to ``4 * wait_s``
        in all; else take only what already waits."""
        policy, key = self.batching, first.batch.key
        images, pixels = first.batch.images, first.batch.images * first.batch.pixels
        joined: list[Job] = []
        wait = policy.wait_s if self._last_run_batched else 0.0
        now = time.monotonic()
        last_arrival, cap = now, now + 4 * wait
        with self._lock:
            while True:
                for job in list(self._pending):
                    ticket = getattr(job, "batch", None)
                    if ticket is None or ticket.key != key:
                        continue
                    if images + ticket.images > policy.max_images or \
                            pixels + ticket.images * ticket.pixels > policy.max_pixels:
                        continue
                    self._pending.remove(job)
                    if self._start_locked(job):
                        joined.append(job)
                        images += ticket.images
                        pixels += ticket.images * ticket.pixels
                        last_arrival = time.monotonic()
                if images >= policy.max_images or self._closed:
                    break
                until = cap if self._held else min(cap, last_arrival + wait)
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
        return joined

    def _run(self, job: Job) -> None:
        self._last_run_batched = False
        context = bind_job_context(job)  # job_id, record_id on the job's log lines
        metrics.job_left_queue(job)
        metrics.job_running(+1)
        log.info("job started (%s)", job.endpoint)
        try:
            settle(job, job.run(job))
        except BaseException as exc:  # noqa: BLE001 (settle re-raises only non-Exceptions)
            settle(job, exc)
        finally:
            metrics.job_running(-1)
            log.info("job finished: %s", job.status)
            unbind_job_context(context)
            self._done_running([job])

    def _run_together(self, jobs: list[Job]) -> None:
        self._last_run_batched = True
        for job in jobs:
            metrics.job_left_queue(job)
            metrics.job_running(+1)
        log.info("batch of %d jobs started (%s): %s", len(jobs), jobs[0].endpoint,
                 ", ".join(job.id for job in jobs))
        fatal: BaseException | None = None
        try:
            try:
                outcomes = self.run_batch(jobs)
                if len(outcomes) != len(jobs):
                    raise RuntimeError(f"a batch of {len(jobs)} jobs gave {len(outcomes)} "
                                       "outcomes")
            except BaseException as exc:  # the worker survives anything a batch does
                log.error("batch crashed", exc_info=exc)
                outcomes = [exc] * len(jobs)
            for job, outcome in zip(jobs, outcomes, strict=True):
                try:
                    settle(job, outcome)  # a no-op for a job that already ended
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: after all
                    fatal = exc
        finally:
            metrics.job_running(-len(jobs))
            log.info("batch finished: %s", ", ".join(job.status for job in jobs))
            self._done_running(jobs)
        if fatal is not None:
            raise fatal

    def _done_running(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
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


def settle(job: Job, outcome: Any) -> None:
    """End ``job`` with ``outcome``: its result, or the error its run raised (a cancel, an
    interrupt, a :class:`BildwerkError` or anything else). A no-op once the job ended (a
    job cancelled inside a batch ends at once, before the batch does)."""
    if not isinstance(outcome, BaseException):
        job.finish("succeeded", result=outcome)
    elif isinstance(outcome, JobCancelled):
        if isinstance(outcome, JobInterrupted) or job.interrupted:
            job.finish("interrupted", result=outcome.partial, error=JobFailure(
                "interrupted", JobInterrupted().message, 503))
        else:
            job.finish("cancelled", result=outcome.partial,
                       error=JobFailure(outcome.code, outcome.message, outcome.status_code))
    elif isinstance(outcome, BildwerkError):
        job.finish("failed", error=JobFailure(outcome.code, outcome.message,
                                              outcome.status_code, outcome.param))
    elif isinstance(outcome, Exception):
        log.error("job %s crashed", job.id, exc_info=outcome)
        job.finish("failed", error=JobFailure("internal_error", str(outcome), 500))
    else:  # KeyboardInterrupt, SystemExit: end the job, then let it through
        job.finish("failed", error=JobFailure("internal_error", repr(outcome), 500))
        raise outcome
