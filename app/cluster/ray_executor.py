"""The Ray executor (``BILDWERK_EXECUTOR=ray``): device jobs run on ``Generator`` replicas of
a Ray Serve application (:mod:`app.cluster.generator`); remote-provider jobs stay on this
ingress, as with the local executor.

The ingress keeps what it had: its bounded queue (429 ``queue_full`` / 503
``shutting_down`` with ``Retry-After``, per-key limits), the job objects that HTTP status,
SSE and cancel work on, and the records it writes when it accepts a job. A device job's
worker thread here hands the plan to Serve (the base checkpoint as multiplexed model id, so
a replica holding it gets it) and waits; meanwhile the replica's progress arrives through
the bus (:mod:`app.jobs.bus`) and reaches this process's subscribers. The queue keeps as
many jobs in flight as there can be replicas, so Serve's own queue stays short and the
backpressure is ours.

When the replica running a job dies, Ray says so to the waiting thread: the record (if the
replica did not finish it) and the job end ``interrupted``, and the next jobs go to the
other replicas (Serve starts a new one).
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.config import Settings
from app.errors import BildwerkError, JobCancelled, JobInterrupted
from app.jobs.job import Job
from app.jobs.queue import JobQueue
from app.observability.metrics import plan_model
from app.services.executor import LocalExecutor, LocalPlace
from app.services.plans import GenerationWork, JobPlan, SequenceWork

log = logging.getLogger("bildwerk.ray")

WORKER_LOST = ("the worker running this job stopped before it finished (its Ray replica "
               "died); submit it again")


class RemoteFailure(BildwerkError):
    """A job's failure on a replica, with its own code and status."""

    def __init__(self, error: dict) -> None:
        super().__init__(error["message"], param=error.get("param"))
        self.code = error["code"]
        self.status_code = error["status_code"]


class RayExecutor(LocalExecutor):
    """The local executor's queues and remote-provider jobs; device jobs go to Ray."""

    def __init__(self, settings: Settings, device: JobQueue, remote: JobQueue, runner,
                 records, bus) -> None:
        super().__init__(device, remote, runner, bus=bus)
        self.settings = settings
        self.records = records
        self._handle = None

    # -- Ray ---------------------------------------------------------------------------
    def connect(self, registry) -> None:
        """Join the Ray cluster and deploy the Generator application unless it runs
        already (another ingress, or ``bildwerk ray deploy``, deployed it)."""
        from app.cluster.deploy import connect, generator_handle

        connect(self.settings)
        self._handle = generator_handle(self.settings, registry)

    @property
    def handle(self):
        if self._handle is None:
            raise RuntimeError("the Ray executor is not connected")
        return self._handle

    def ready(self) -> dict[str, bool | str]:
        """``/ready``'s checks: Ray reachable, at least one Generator replica running."""
        from app.cluster.deploy import replicas_running

        try:
            running = replicas_running(self.settings)
        except Exception as exc:
            log.warning("Ray status failed: %s", exc)
            return {"ray": False, "replicas": False}
        return {"ray": True, "replicas": running > 0}

    # -- Executor ------------------------------------------------------------------------
    def start(self, plan: JobPlan, place: LocalPlace, *, job_id: str, record_id: str,
              loop: asyncio.AbstractEventLoop, accepted_at: float) -> Job:
        if plan.remote:  # remote providers: called from here, as by the local executor
            return super().start(plan, place, job_id=job_id, record_id=record_id,
                                 loop=loop, accepted_at=accepted_at)

        def run(job: Job):
            return self._run_on_replica(plan, job, accepted_at)

        job = Job(id=job_id, record_id=record_id, endpoint=plan.endpoint, run=run,
                  loop=loop, owner=plan.owner, previews=plan.previews,
                  model=plan_model(plan), bus=self.bus, relayed=True)
        job.on_cancel = lambda interrupt: self.bus.request_cancel(job_id, interrupt)
        place.queue.submit(job, place.slot)
        return job

    # -- one device job ------------------------------------------------------------------
    def _run_on_replica(self, plan: JobPlan, job: Job, accepted_at: float):
        from ray.exceptions import RayError

        model_id = _base_model(plan)
        relay = self.bus.relay(job.id, job.relay_event)
        try:
            response = self.handle.options(multiplexed_model_id=model_id).run.remote(
                plan, job.id, job.record_id, time.perf_counter() - accepted_at)
            try:
                outcome = response.result()
            except RayError as exc:
                log.error("job %s: its replica failed: %s", job.id, exc)
                self.records.finish_if_unfinished(
                    job.record_id, status="interrupted", error_code="interrupted",
                    error_message=WORKER_LOST)
                raise JobInterrupted(WORKER_LOST) from None
        finally:
            relay.stop()
        status = outcome["status"]
        if status == "succeeded":
            return outcome["result"]
        error = outcome["error"]
        if status == "interrupted":
            raise JobInterrupted(error["message"], partial=outcome.get("partial"))
        if status == "cancelled":
            raise JobCancelled(error["message"], partial=outcome.get("partial"))
        raise RemoteFailure(error)


def _base_model(plan: JobPlan) -> str:
    """The base checkpoint a device plan runs on: the multiplexed model id ("" for an
    upscale, which loads no checkpoint)."""
    work = plan.work
    if isinstance(work, GenerationWork | SequenceWork) and work.entry is not None:
        return work.entry.id
    return ""
