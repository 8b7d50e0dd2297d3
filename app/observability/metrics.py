"""Bildwerk's Prometheus series, and the small functions the job queue, the plan runner and
the model registry call to move them.

The metrics live in prometheus_client's default registry, created once per process (the
tests build many apps in one process; each reads deltas). With ``PROMETHEUS_MULTIPROC_DIR``
set (several uvicorn workers), prometheus_client writes every value to files in that
folder and ``/metrics`` reads them all back through a
:class:`~prometheus_client.multiprocess.MultiProcessCollector`; the gauges therefore say
how to combine the processes (``livesum``: the sum over the processes still alive).

==============================================  ======================================
``bildwerk_queue_depth{model}``                 jobs waiting (device and remote queues)
``bildwerk_jobs_running``                       jobs running now
``bildwerk_job_queue_seconds``                  accepted -> started (histogram)
``bildwerk_job_duration_seconds{endpoint,       started -> finished (histogram)
model,status}``
``bildwerk_model_load_seconds{model}``          a checkpoint load (histogram)
``bildwerk_gpu_memory_bytes{device}``           ``torch.cuda.memory_allocated`` per CUDA
                                                device; no samples without CUDA
==============================================  ======================================
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

log = logging.getLogger("bildwerk.models")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Jobs take from a fraction of a second (the tiny models, a remote provider) to minutes.
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

QUEUE_DEPTH = Gauge("bildwerk_queue_depth", "Jobs waiting in a queue, by model id.",
                    ["model"], multiprocess_mode="livesum")
JOBS_RUNNING = Gauge("bildwerk_jobs_running", "Jobs running now.",
                     multiprocess_mode="livesum")
JOB_QUEUE_SECONDS = Histogram("bildwerk_job_queue_seconds",
                              "Seconds from a job's acceptance to its start.",
                              buckets=JOB_BUCKETS)
JOB_DURATION_SECONDS = Histogram("bildwerk_job_duration_seconds",
                                 "Seconds from a job's start to its end, by endpoint, model "
                                 "and final status.", ["endpoint", "model", "status"],
                                 buckets=JOB_BUCKETS)
MODEL_LOAD_SECONDS = Histogram("bildwerk_model_load_seconds",
                               "Seconds to load a checkpoint into memory, by model id.",
                               ["model"], buckets=LOAD_BUCKETS)
GPU_MEMORY_BYTES = Gauge("bildwerk_gpu_memory_bytes",
                         "Bytes torch has allocated on each CUDA device (this server's "
                         "processes together); no samples without CUDA.", ["device"],
                         multiprocess_mode="livesum")


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> bytes:
    """The Prometheus text exposition of every series: this process's, or every worker
    process's in multiprocess mode."""
    update_gpu_memory()
    if multiprocess_mode():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def process_exit() -> None:
    """At shutdown in multiprocess mode: this process's live gauges stop counting."""
    if multiprocess_mode():
        _multiprocess.mark_process_dead(os.getpid())


# -- what a job runs on ------------------------------------------------------------------
def plan_model(plan: Any) -> str:
    """The model label of a :class:`~app.services.plans.JobPlan`: the local checkpoint's
    id, the remote provider's model (or the provider) for remote plans, the upscaler's
    name for upscales."""
    work = getattr(plan, "work", None)
    if getattr(plan, "remote", False):
        chain = getattr(work, "chain", ()) or ()
        return getattr(work, "remote_model", None) or (chain[0] if chain else "remote")
    entry = getattr(work, "entry", None)
    if entry is not None:
        return entry.id
    upscaler = getattr(work, "upscaler", None)
    if upscaler is not None:
        return upscaler.name
    chain = getattr(work, "chain", ()) or ()
    return getattr(work, "remote_model", None) or (chain[0] if chain else "unknown")


def job_model(job: Any) -> str:
    """The model label of a queued :class:`~app.jobs.job.Job` (set by the executor from
    its plan: :func:`plan_model`)."""
    model = getattr(job, "model", None)
    return model if isinstance(model, str) and model else "unknown"


# -- the job queue (app/jobs/queue.py) ---------------------------------------------------
# job id -> its model label while it waits: a job drops its plan once finished (cancelled
# while waiting), so the label is taken when it is queued.
_waiting_models: dict[str, str] = {}


def job_queued(job: Any) -> None:
    model = _waiting_models[job.id] = job_model(job)
    QUEUE_DEPTH.labels(model=model).inc()


def job_left_queue(job: Any) -> None:
    """Started, cancelled or interrupted while waiting."""
    model = _waiting_models.pop(job.id, None)
    if model is not None:
        QUEUE_DEPTH.labels(model=model).dec()


def job_running(delta: int) -> None:
    JOBS_RUNNING.inc(delta)


# -- the plan runner (app/services/runner.py) --------------------------------------------
def job_started(queued_s: float) -> None:
    JOB_QUEUE_SECONDS.observe(max(0.0, queued_s))


def job_ended(plan: Any, status: str, duration_s: float) -> None:
    JOB_DURATION_SECONDS.labels(endpoint=getattr(plan, "endpoint", "unknown"),
                                model=plan_model(plan), status=status
                                ).observe(max(0.0, duration_s))
    update_gpu_memory()


# -- the model registry (app/pipelines/registry.py) --------------------------------------
def model_loaded(model_id: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(model=model_id).observe(max(0.0, seconds))
    log.info("model %s loaded in %.2f s", model_id, seconds)
    update_gpu_memory()


def update_gpu_memory() -> None:
    """``torch.cuda.memory_allocated`` of each CUDA device this process has used; nothing
    when torch is not imported, CUDA is absent or not initialised (nothing allocated)."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        for index in range(torch.cuda.device_count()):
            GPU_MEMORY_BYTES.labels(device=f"cuda:{index}").set(
                torch.cuda.memory_allocated(index))
    except Exception:  # a metric must never fail a job or a scrape
        log.debug("reading the CUDA memory failed", exc_info=True)
