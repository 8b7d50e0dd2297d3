"""Executors run plans. The services hand a checked :class:`~app.services.plans.JobPlan`
to an executor and get back a :class:`~app.jobs.job.Job` that reports progress, can be
cancelled and ends with the plan's typed result or error.

:class:`LocalExecutor` is the default: a bounded queue and one worker thread for the
device, and one for the remote providers, each running plans through
:class:`~app.services.runner.PlanRunner` in this process. Because a plan is plain data, an
executor that runs plans in other processes or on other machines implements the same
three steps (reserve, start, release) without touching the services.

Batching is the local executor's: its device queue may run compatible txt2img jobs as one
pipeline call (app/services/batching.py, BILDWERK_MAX_BATCH, BILDWERK_BATCH_WAIT_MS).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass

from app.jobs.job import Job
from app.jobs.queue import JobQueue, Slot
from app.observability.metrics import plan_model
from app.services.batching import batch_ticket
from app.services.plans import JobPlan
from app.services.runner import PlanRunner


class Executor(ABC):
    @abstractmethod
    def reserve(self, plan: JobPlan):
        """Hold a place for ``plan`` before its inputs are stored: 429 ``queue_full`` or
        503 ``shutting_down`` when there is none."""

    @abstractmethod
    def start(self, plan: JobPlan, place, *, job_id: str, record_id: str,
              loop: asyncio.AbstractEventLoop, accepted_at: float) -> Job:
        """Run ``plan`` in the held ``place``; the job is queued when this returns."""

    @abstractmethod
    def release(self, place) -> None:
        """Give back a place that :meth:`start` did not fill (a no-op once it did)."""

    @property
    @abstractmethod
    def queues(self) -> list[JobQueue]:
        """The queues whose jobs the job routes look up, cancel and drain."""


@dataclass(frozen=True)
class LocalPlace:
    queue: JobQueue
    slot: Slot


class LocalExecutor(Executor):
    def __init__(self, device: JobQueue, remote: JobQueue, runner: PlanRunner,
                 bus=None) -> None:
        self.device = device
        self.remote = remote
        self.runner = runner
        self.bus = bus  # several ingresses: events go to the others too (app/jobs/bus.py)
        device.run_batch = self._run_batch  # batching, when the queue has a policy

    @property
    def queues(self) -> list[JobQueue]:
        return [self.device, self.remote]

    def reserve(self, plan: JobPlan) -> LocalPlace:
        queue = self.remote if plan.remote else self.device
        return LocalPlace(queue, queue.reserve(plan.owner))

    def start(self, plan: JobPlan, place: LocalPlace, *, job_id: str, record_id: str,
              loop: asyncio.AbstractEventLoop, accepted_at: float) -> Job:
        def run(job: Job):
            return self.runner.run(plan, job, accepted_at)

        job = Job(id=job_id, record_id=record_id, endpoint=plan.endpoint, run=run, loop=loop,
                  owner=plan.owner, previews=plan.previews, model=plan_model(plan),
                  bus=self.bus, batch=batch_ticket(plan, accepted_at))
        place.queue.submit(job, place.slot)
        return job

    def release(self, place: LocalPlace) -> None:
        place.queue.release(place.slot)

    def _run_batch(self, jobs: list[Job]) -> list:
        items = []
        for job in jobs:
            plan, accepted_at = job.batch.payload
            items.append((plan, job, accepted_at))
        return self.runner.run_batch(items)

    def start_workers(self) -> None:
        self.device.start()
        self.remote.start()

    def stop_workers(self) -> None:
        self.device.stop()
        self.remote.stop()
