"""Admitting a plan: a place in the executor first, then the uploads stored, the record
written, and the job started in the held place.

A request refused while it is checked is recorded ``rejected`` with its prompt and the
inputs that could be decoded (:mod:`app.services.rejections`). A request that cannot get
a place (429 ``queue_full`` or ``too_many_jobs``, 503 ``shutting_down``) is recorded
``rejected`` before anything of it is stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from app.errors import BildwerkError, QueueFull, ShuttingDown, TooManyJobs
from app.jobs.job import Job
from app.jobs.owners import OwnerLimit
from app.persistence.blobs import BlobStore
from app.persistence.records import NewRecord, RecordRepository
from app.services.executor import Executor
from app.services.plans import JobPlan
from app.services.rejections import Rejections


@dataclass
class Accepted:
    job: Job
    record_id: str


class Admission:
    def __init__(self, records: RecordRepository, blobs: BlobStore, owners: OwnerLimit,
                 executor: Executor, rejections: Rejections, webhooks=None) -> None:
        self.records = records
        self.blobs = blobs
        self.owners = owners
        self.executor = executor
        self.rejections = rejections
        self.webhooks = webhooks  # app.webhooks.sender.WebhookSender: watches started jobs

    def admit(self, endpoint: str, request: object, client: dict | None,
              make_plan: Callable[[], JobPlan], loop: asyncio.AbstractEventLoop,
              previews: int = 0) -> Accepted:
        """Check the request into a plan and submit it. A request refused while it is
        checked (4xx) is recorded ``rejected`` with what could be decoded of it."""
        try:
            plan = make_plan()
        except BildwerkError as exc:
            self.rejections.record(endpoint, request, client, exc)
            raise
        if isinstance(getattr(request, "previews", None), int):  # asked for: on the record
            plan = replace(plan, record={**plan.record, "params": {
                **plan.record["params"], "previews": request.previews}})
        return self.submit(replace(plan, previews=max(0, previews)), loop)

    def submit(self, plan: JobPlan, loop: asyncio.AbstractEventLoop) -> Accepted:
        record_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())

        def record(stored: dict[str, str]) -> None:
            self.records.create(NewRecord(id=record_id, job_id=job_id, **plan.record,
                                          **stored))

        try:
            with self.owners.lock:
                self.owners.check(plan.owner)
                place = self.executor.reserve(plan)
        except (QueueFull, TooManyJobs, ShuttingDown) as exc:
            record({})  # the refusal is recorded; the uploads were never stored
            self._reject(record_id, plan, exc)
            raise
        try:
            record({u.record_field: self.blobs.put(u.data, u.content_type)
                    for u in plan.uploads})
            job = self.executor.start(plan, place, job_id=job_id, record_id=record_id,
                                      loop=loop, accepted_at=time.perf_counter())
        except ShuttingDown as exc:  # closed while the request was being admitted
            self._reject(record_id, plan, exc)
            raise
        finally:
            self.executor.release(place)
        if plan.webhook is not None and self.webhooks is not None:
            self.webhooks.watch(job, plan.webhook)  # never fails the job
        return Accepted(job=job, record_id=record_id)

    def _reject(self, record_id: str, plan: JobPlan, exc) -> None:
        self.records.finish(record_id, status="rejected", seeds=list(plan.seeds),
                            error_code=exc.code, error_message=exc.message)
