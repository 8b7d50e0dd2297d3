"""Which jobs may share one pipeline call, and how many.

Queued txt2img jobs on the local model that agree on everything the pipeline call is
made of except the prompts and the seeds (model, size, steps, scheduler, guidance, LoRA
set, VAE and clip skip) run as one batch: their prompts concatenated, one generator per
image. Progress, cancel, records and results stay per job (app/jobs/queue.py,
app/services/run_batch.py). A batched image matches the same request run alone within
floating-point rounding (PSNR >= 40 dB, tested); a request sends ``"batch": false`` to be
run alone and keep exact bytes. docs/performance.md, "Batching".
"""

from __future__ import annotations

from app.jobs.job import BatchTicket
from app.jobs.queue import BatchPolicy
from app.pipelines.requests import Txt2ImgInput
from app.providers.registry import LOCAL
from app.services.plans import GenerationWork, JobPlan

AUTO_MAX_IMAGES = 8  # beyond 8 the per-image cost hardly falls (bench/throughput.py)


def batch_policy(settings) -> BatchPolicy | None:
    """The device worker's batching, or None when it is off (``BILDWERK_MAX_BATCH=1``).

    ``BILDWERK_MAX_BATCH`` 0 (auto) allows as many images as one request may ask for
    (``BILDWERK_MAX_IMAGES``, at most 8); either way a batch's images x width x height stays
    within ``BILDWERK_MAX_BATCH_PIXELS``, the bound one request's memory already has."""
    images = settings.max_batch or min(settings.max_images, AUTO_MAX_IMAGES)
    if images <= 1:
        return None
    return BatchPolicy(max_images=images, max_pixels=settings.max_batch_pixels,
                       wait_s=settings.batch_wait_ms / 1000.0)


def batch_key(plan: JobPlan) -> tuple | None:
    """What a plan's pipeline call is made of, but for its prompts and seeds; None when it
    runs alone (not txt2img on the local model first, or asked ``"batch": false``)."""
    work = plan.work
    if not plan.batch or plan.remote or not isinstance(work, GenerationWork):
        return None
    args = work.args
    if work.endpoint != "txt2img" or type(args) is not Txt2ImgInput or work.entry is None \
            or not work.chain or work.chain[0] != LOCAL:
        return None
    vae = work.choice.vae.id if work.choice.vae is not None else None
    return (work.entry.id, args.width, args.height, args.steps, args.scheduler,
            float(args.guidance_scale), tuple(work.choice.lora_refs), vae, args.clip_skip)


def batch_ticket(plan: JobPlan, accepted_at: float) -> BatchTicket | None:
    key = batch_key(plan)
    if key is None:
        return None
    args = plan.work.args
    return BatchTicket(key=key, images=len(args.seeds), pixels=args.width * args.height,
                       payload=(plan, accepted_at))
