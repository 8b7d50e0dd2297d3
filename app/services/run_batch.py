"""A batch of compatible txt2img jobs (app/services/batching.py) as one pipeline call.

Each job keeps what it has alone: its record goes ``running`` and ends with its own
images, seeds and timings (``inference_s`` is the batch's, ``batch_images`` says how many
images shared the call); its progress and previews are its own rows'. A job cancelled or
out of time leaves the batch at once, recorded as it ends, while the others go on
(:class:`~app.pipelines.progress.BatchReporter`). When the batch as a whole fails (out of
memory, say), each job still waiting for its images runs again alone, so a batch never
makes a job fail that would have succeeded by itself.
"""

from __future__ import annotations

import logging
import time

import torch

from app.jobs.queue import settle
from app.pipelines.device import free_memory
from app.pipelines.progress import BatchMember, BatchReporter
from app.pipelines.txt2img import Txt2ImgPipeline
from app.providers.registry import LOCAL
from app.services.run_generation import completed
from app.services.runner import PlanRunner, RunContext, classify, model_session

log = logging.getLogger("bildwerk.jobs")


class BatchRun:
    def __init__(self, runner: PlanRunner) -> None:
        self.runner = runner

    def run(self, items: list) -> list:
        """``items``: ``(plan, job, accepted_at)`` of started jobs with one batch key.
        Returns per job, in order, its result or the error it ended with."""
        runner = self.runner
        ctxs = [runner.begin(job, accepted_at) for _plan, job, accepted_at in items]
        outcomes: list = [None] * len(items)
        members, row = [], 0
        for plan, job, _accepted in items:
            images = len(plan.work.args.seeds)
            members.append(BatchMember(job.reporter(), row, row + images))
            row += images

        def drop(index: int, exc) -> None:  # cancelled or out of time: ends now
            plan, job, _accepted = items[index]
            outcomes[index] = runner.fail(plan, ctxs[index], *classify(job, exc))
            settle(job, outcomes[index])

        reporter = BatchReporter(members, drop)
        work = items[0][0].work
        failed = None
        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), model_session(
                    runner.registry, runner.generation.loras, work.entry, work.choice,
                    reporter, images=row) as (loaded, vae):
                t1 = time.perf_counter()
                outputs = Txt2ImgPipeline(loaded, vae).together(
                    [plan.work.args for plan, _job, _accepted in items], reporter)
            t2 = time.perf_counter()
        except Exception as exc:
            failed = repr(exc) if outcomes.count(None) else None  # some job still waits
        else:
            reporter.stage_changed("saving", reporter.total)
            for index, (plan, _job, _accepted) in enumerate(items):
                if not members[index].live:
                    continue
                ctx = ctxs[index]
                ctx.timings.update(load_s=round(t1 - t0, 4), inference_s=round(t2 - t1, 4),
                                   batch_images=row)
                outcomes[index] = self._stored(plan, ctx, outputs[index], t2 - t0)
            return outcomes
        # Out of the except block, so the traceback no longer pins the batch's activations.
        if failed is not None:
            log.warning("a batch of %d jobs failed (%s); running each alone", len(items),
                        failed)
            free_memory(runner.registry.runtime)
            for index, (plan, _job, _accepted) in enumerate(items):
                if outcomes[index] is None:
                    outcomes[index] = self._alone(plan, ctxs[index])
        return outcomes

    def _stored(self, plan, ctx: RunContext, output, seconds: float):
        started = time.perf_counter()
        try:
            done = self.runner.generation.store(ctx, plan.work, plan.work.entry.id, output)
            ctx.lap("save_s", started)
            done = completed(plan.work, done, LOCAL, [], seconds)
        except Exception as exc:
            ended = classify(ctx.job, exc)
        else:
            return self.runner.succeed(plan, ctx, done)
        return self.runner.fail(plan, ctx, *ended)

    def _alone(self, plan, ctx: RunContext):
        """The job's plan run by itself, as the worker would have run it."""
        try:
            with torch.inference_mode():
                done = self.runner.generation.run(ctx, plan.work)
        except Exception as exc:
            ended = classify(ctx.job, exc)
        else:
            return self.runner.succeed(plan, ctx, done)
        return self.runner.fail(plan, ctx, *ended)
