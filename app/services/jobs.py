"""Job lookups, waiting and cancel, with the database as the fallback memory: a job
that is no longer held in memory (or ran before a restart) is answered from its record."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from app.errors import BildwerkError, ClientGone, Conflict, JobTimeout, NotFound
from app.jobs.job import Job
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
    """Jobs across every queue (the device's and the remote providers')."""

    def __init__(self, queues: list[JobQueue], records: RecordRepository) -> None:
        self.queues = queues
        self.records = records

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
            return status_from_record(row)
        return self.job_status(job)

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
            raise Conflict(f"job {job_id} already {row.status}", param="job_id")
        return self.job_status(live[0].cancel(job_id))

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
