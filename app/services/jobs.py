"""Job lookups, waiting and cancel, with the database as the fallback memory: a job
that is no longer held in memory (or ran before a restart) is answered from its record."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from app.errors import BildwerkError, ClientGone, Conflict, JobTimeout, NotFound
from app.jobs.job import TERMINAL, Job
from app.jobs.queue import JobQueue
from app.persistence.records import RecordRepository, owned_by
from app.services.results import status_from_record


class JobFailed(BildwerkError):
    """A job's own failure, re-raised to a waiting synchronous caller."""

    def __init__(self, code: str, message: str, status_code: int, param: str | None) -> None:
        super().__init__(message, param=param)
        self.code = code
        self.status_code = status_code




class JobService:
    """Jobs across every queue (the device's and the remote providers'), and, with a
    ``bus`` (several ingresses), the jobs other processes hold: their status and progress
    come from the bus's last snapshot and their record, their events from the bus, and a
    cancel goes out on the bus to whoever holds or runs them."""

    def __init__(self, queues: list[JobQueue], records: RecordRepository,
                 bus=None) -> None:
        self.queues = queues
        self.records = records
        self.bus = bus

    def _live(self, job_id: str) -> tuple[JobQueue, Job] | None:
        for queue in self.queues:
            job = queue.get(job_id)
            if job is not None:
                return queue, job
        return None

    def check_owner(self, job_id: str, owner: str | None) -> None:
        """404 unless the job is ``owner``'s (a key id; None: anyone's). Another key's job
        answers exactly like an unknown one."""
        if owner is None:
            return
        row = self.records.get_by_job(job_id)
        if row is None or not owned_by(row, owner):
            raise NotFound(f"job {job_id} not found", param="job_id")

    def status(self, job_id: str, *, owner: str | None = None) -> dict:
        self.check_owner(job_id, owner)
        live = self._live(job_id)
        job = live[1] if live else None
        if job is None:
            row = self.records.get_by_job(job_id)
            if row is None:
                raise NotFound(f"job {job_id} not found", param="job_id")
            return self._with_progress(status_from_record(row))
        return self.job_status(job)

    def _with_progress(self, status: dict) -> dict:
        """A record's status, with the stage and progress another process published for
        it while it is unfinished."""
        if self.bus is None or status["status"] not in ("queued", "running"):
            return status
        last = self.bus.last(status["job_id"])
        if last and last.get("status") in ("queued", "running"):
            status.update(status=last["status"], stage=last.get("stage", status["stage"]),
                          progress=last.get("progress", status["progress"]))
        return status

    @staticmethod
    def job_status(job: Job) -> dict:
        data = job.snapshot()
        data.update(created_at=job.created_at, started_at=job.started_at,
                    finished_at=job.finished_at, result=job.result, error=None)
        if job.error is not None:
            data["error"] = {"code": job.error.code, "message": job.error.message,
                             "param": job.error.param}
        return data

    def get(self, job_id: str) -> Job | None:
        live = self._live(job_id)
        return live[1] if live else None

    def cancel(self, job_id: str, *, owner: str | None = None) -> dict:
        self.check_owner(job_id, owner)
        live = self._live(job_id)
        if live is None:
            row = self.records.get_by_job(job_id)
            if row is None:
                raise NotFound(f"job {job_id} not found", param="job_id")
            if self.bus is not None and row.status in ("queued", "running"):
                self.bus.request_cancel(job_id)  # its holder cancels it (cancel_local)
                return self._with_progress(status_from_record(row))
            raise Conflict(f"job {job_id} already {row.status}", param="job_id")
        return self.job_status(live[0].cancel(job_id))

    def cancel_local(self, job_id: str, interrupt: bool = False) -> None:
        """A cancel request from the bus: cancel the job if this process holds it (an
        ``interrupt`` comes from the job's own ingress, for the worker: nothing to do)."""
        if interrupt:
            return
        live = self._live(job_id)
        if live is not None and not live[1].finished:
            live[0].cancel(job_id)

    async def follow_elsewhere(self, job_id: str,
                               disconnected: Callable[[], Awaitable[bool]]):
        """The SSE events of a job another process holds, from the bus: a ``status`` event
        first, and last the terminal event (from the bus, or from the record when the job
        ended unseen: before we subscribed, or reaped by a lease)."""
        import asyncio

        events = self.bus.follow(job_id)
        try:
            async for event, data in events:
                if event in ("subscribed", "tick"):
                    row = await asyncio.to_thread(self.records.get_by_job, job_id)
                    status = status_from_record(row)
                    if row.status not in ("queued", "running"):
                        yield row.status, status
                        return
                    if event == "subscribed":
                        status = self._with_progress(status)
                        yield "status", {k: status[k] for k in (
                            "job_id", "record_id", "endpoint", "status", "stage", "progress")}
                    elif await disconnected():
                        return
                    continue
                yield event, data
                if event in TERMINAL:
                    return
        finally:
            await events.aclose()

    @staticmethod
    async def wait_result(job: Job, timeout: float,
                          disconnected: Callable[[], Awaitable[bool]] | None = None) -> dict:
        """Wait for ``job`` and return its result, or raise its error. Stops waiting when
        ``disconnected()`` says the client left (the job itself goes on, recorded)."""
        deadline = time.monotonic() + timeout
        while not await job.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            if disconnected is not None and await disconnected():
                raise ClientGone(f"client left while job {job.id} was {job.status}")
            if time.monotonic() >= deadline:
                raise JobTimeout(
                    f"job {job.id} is still {job.status} after {timeout:.0f}s; "
                    f"follow it at /jobs/{job.id}", param=None)
        if job.status == "succeeded" and job.result is not None:
            return job.result
        if job.status == "cancelled" and job.result is not None:
            return job.result  # a partial result (e.g. the frames finished before cancel)
        err = job.error
        if err is None:
            raise JobFailed("internal_error", f"job ended {job.status}", 500, None)
        raise JobFailed(err.code, err.message, err.status_code, err.param)
