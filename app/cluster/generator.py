"""The ``Generator`` Ray Serve deployment: the device work of Bildwerk on a Ray cluster.

Each replica is a whole worker: its own model registry (within its memory budget), LoRA
catalogue, blob store and the shared database, built from the ingress's settings by the
same composition root as the server (:func:`~app.services.container.build_services`). It
runs the plans the ingress hands it through the same
:class:`~app.services.runner.PlanRunner` as the local worker thread, one at a time
(``max_ongoing_requests=1``: the device runs one job), so records, outputs and errors are
written exactly as on a single box. Outputs go to the blob store; what comes back to the
ingress is the typed result: hashes and URLs, never pixels.

* **Routing by model.** Requests carry the base checkpoint as Serve's multiplexed model
  id. A replica reports the checkpoints it holds, and Serve routes a model's requests to
  those replicas first (``serve.multiplexed``); it keeps at most
  ``BILDWERK_RAY_MODELS_PER_REPLICA`` (by default, what its memory budget holds of the
  largest model) and unloads the least recently used one beyond that.
* **Progress and cancel** go through Redis (:mod:`app.jobs.bus`): the replica publishes its
  steps, and listens for cancel requests, which its step callback honours.
* **Leases**: the replica renews the lease of the job it runs, so a job outlives the
  ingress that accepted it (and a dead replica's job is reaped, see
  :mod:`app.jobs.leases`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from app.config import Settings

log = logging.getLogger("bildwerk.generator")


def models_per_replica(settings: Settings, registry) -> int:
    """How many base checkpoints a replica keeps loaded: the setting, or what its memory
    budget holds of the largest local model (at least 1)."""
    if settings.ray_models_per_replica:
        return settings.ray_models_per_replica
    largest = max((entry.load_bytes for entry in registry.list()), default=0)
    if largest <= 0:
        return 1
    return max(1, min(8, registry.budget_bytes // largest))


class GeneratorReplica:
    """One replica's state and its entry point, :meth:`run`. Wrapped into a Serve
    deployment by :func:`generator_deployment`."""

    def __init__(self, settings: Settings) -> None:
        import torch

        from app.jobs.bus import JobBus
        from app.jobs.leases import LeaseKeeper
        from app.observability.logs import configure_logging
        from app.services.container import build_services

        threads = settings.ray_torch_threads or max(1, int(settings.ray_num_cpus))
        torch.set_num_threads(threads)
        settings = settings.model_copy(update={"torch_threads": threads})  # not by size
        configure_logging(settings.log_format)
        self.settings = settings
        self.services = build_services(settings)
        self.services.records.instance = self.replica_id = _replica_id()
        self.runner = self.services.runner
        self.services.registry  # noqa: B018 - scan the models now, not on the first job
        self.bus = JobBus(settings.redis_url)
        self.active: dict[str, Any] = {}
        self.bus.listen_cancels(self._cancel)
        self.leases = LeaseKeeper(
            self.services.records, lambda: [job.record_id for job in self.active.values()],
            lease_s=settings.lease_s, reap=False).start()
        log.info("generator replica %s ready (%d torch threads)", self.replica_id, threads)

    def _cancel(self, job_id: str, interrupt: bool = False) -> None:
        job = self.active.get(job_id)
        if job is not None:
            job.interrupt() if interrupt else job.request_cancel()

    async def load_model(self, model_id: str) -> str:
        """Serve's multiplexed loader (wrapped with ``serve.multiplexed`` per replica)."""
        started = time.perf_counter()
        await asyncio.to_thread(self.services.registry.load, model_id)
        log.info("loaded %s in %.2fs", model_id, time.perf_counter() - started)
        return model_id

    async def run(self, plan, job_id: str, record_id: str, waited_s: float) -> dict:
        """Run ``plan`` as job ``job_id``. Returns how it ended: ``status``, and the typed
        ``result`` or the ``error`` (with the ``partial`` result of a cancelled sequence)."""
        from ray import serve

        from app.errors import BildwerkError, JobCancelled, JobInterrupted
        from app.jobs.job import Job
        from app.observability.metrics import plan_model

        model_id = serve.get_multiplexed_model_id()
        job = Job(id=job_id, record_id=record_id, endpoint=plan.endpoint, run=None,
                  loop=asyncio.get_running_loop(), owner=plan.owner, model=plan_model(plan),
                  previews=plan.previews, bus=self.bus, status="running", stage="starting")
        self.active[job_id] = job
        asked = self.bus.cancel_requested(job_id)  # stopped while it waited for a replica
        if asked:
            self._cancel(job_id, asked == "interrupt")
        outcome: dict[str, Any] = {}
        try:
            if model_id:
                await self.get_model(model_id)
            accepted_at = time.perf_counter() - waited_s
            result = await asyncio.to_thread(self.runner.run, plan, job, accepted_at)
            outcome.update(status="succeeded", result=result)
        except JobCancelled as exc:
            interrupted = isinstance(exc, JobInterrupted) or job.interrupted
            outcome.update(status="interrupted" if interrupted else "cancelled",
                           error=_error(exc), partial=exc.partial)
        except BildwerkError as exc:
            outcome.update(status="failed", error=_error(exc))
        except Exception as exc:  # the replica must survive anything a job does
            log.exception("job %s crashed", job_id)
            outcome.update(status="failed", error={"code": "internal_error",
                                                   "message": str(exc), "status_code": 500,
                                                   "param": None})
        finally:
            self.active.pop(job_id, None)
        return outcome

    def __del__(self) -> None:  # Serve stops the replica: stop the threads
        try:
            self.leases.stop()
            self.bus.close()
        except Exception:  # __init__ failed half-way, or Redis is gone
            pass


def _error(exc) -> dict:
    return {"code": exc.code, "message": exc.message, "status_code": exc.status_code,
            "param": exc.param}


def _replica_id() -> str:
    """``ray:<replica>@host:pid``: the record's ``worker`` of the jobs this replica runs."""
    import socket

    try:
        from ray import serve

        replica = str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        replica = "unknown"
    return f"ray:{replica}@{socket.gethostname()}:{os.getpid()}"


def generator_deployment(settings: Settings, models: int):
    """The Serve deployment of :class:`GeneratorReplica` with the settings' placement
    (CPUs, GPUs), autoscaling and multiplexing; bind it with the settings to deploy."""
    from ray import serve

    class Generator(GeneratorReplica):
        @serve.multiplexed(max_num_models_per_replica=models)
        async def get_model(self, model_id: str) -> str:
            return await self.load_model(model_id)

    actor: dict[str, Any] = {"num_cpus": settings.ray_num_cpus}
    if settings.ray_num_gpus:
        actor["num_gpus"] = settings.ray_num_gpus
    scaling: dict[str, Any] = {
        "min_replicas": settings.ray_min_replicas,
        "max_replicas": max(settings.ray_max_replicas, settings.ray_min_replicas, 1),
        "target_ongoing_requests": settings.ray_target_ongoing}
    options: dict[str, Any] = {"name": "Generator", "ray_actor_options": actor,
                               "max_ongoing_requests": 1, "graceful_shutdown_timeout_s": 30,
                               "health_check_period_s": 5}
    if scaling["min_replicas"] == scaling["max_replicas"]:
        options["num_replicas"] = scaling["max_replicas"]
    else:
        options["autoscaling_config"] = scaling
    Generator.__name__ = Generator.__qualname__ = "Generator"
    return serve.deployment(**options)(Generator)
