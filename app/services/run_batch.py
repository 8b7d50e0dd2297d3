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
from app.services.runner import (
    Finished,
    PlanRunner,
    RunContext,
    classify,
    is_oom,
    model_session,
)

log = logging.getLogger("bildwerk.jobs")


class BatchRun:
    def __init__(self, runner: PlanRunner) -> None:
        self.runner = runner

    def run(self, items: list) -> list:
        """``items``: ``(plan, job, accepted_at)`` of started jobs with one batch key.
        Returns per job, in order, its result or the error it ended with; every job's
        record is ended whatever happens (one job's failure is its own)."""
        runner = self.runner
        outcomes: list = [None] * len(items)
        ctxs: list[RunContext | None] = [None] * len(items)
        members, row = [], 0
        for index, (plan, job, accepted_at) in enumerate(items):
            images = len(plan.work.args.seeds)
            members.append(BatchMember(job.reporter(), row, row + images))
            row += images
            try:
                ctxs[index] = runner.begin(job, accepted_at)
            except Exception as exc:  # its record cannot be written: it ends here
                log.exception("job %s could not start", job.id)
                members[index].live = False
                outcomes[index] = exc
                settle(job, exc)

        def drop(index: int, exc) -> None:  # cancelled or out of time: ends now
            plan, job, _accepted = items[index]
            outcomes[index] = self._failed(plan, ctxs[index], classify(job, exc),
                                           free=False)  # the batch still runs
            settle(job, outcomes[index])

        reporter = BatchReporter(members, drop)
        work = items[0][0].work
        failed = oom = False
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
            failed = None in outcomes  # some job still waits for its images
            oom = is_oom(exc) or isinstance(exc, torch.cuda.OutOfMemoryError)
            if failed:
                log.warning("a batch of %d jobs failed (%r); running each alone", len(items),
                            exc)
        else:
            for member in reporter.live:
                member.reporter.stage_changed("saving", member.reporter.total)
            for index, (plan, _job, _accepted) in enumerate(items):
                if outcomes[index] is None:
                    ctx = ctxs[index]
                    ctx.timings.update(load_s=round(t1 - t0, 4),
                                       inference_s=round(t2 - t1, 4), batch_images=row)
                    outcomes[index] = self._outcome(plan, ctx, self._store(
                        plan, ctx, outputs[index], t2 - t0))
            return outcomes
        # Out of the except block, so the traceback no longer pins the batch's activations.
        if failed:
            if oom:
                runner.registry.after_oom(keep=work.entry.id)
            free_memory(runner.registry.runtime)
            for index, (plan, job, _accepted) in enumerate(items):
                if outcomes[index] is None:  # alone, with the whole time limit again
                    job.start_clock(runner.settings.job_timeout_s)
                    outcomes[index] = self._outcome(plan, ctxs[index], self._alone(
                        plan, ctxs[index]))
        return outcomes

    def _store(self, plan, ctx: RunContext, output, seconds: float):
        def store() -> Finished:
            started = time.perf_counter()
            done = self.runner.generation.store(ctx, plan.work, plan.work.entry.id, output)
            ctx.lap("save_s", started)
            return completed(plan.work, done, LOCAL, [], seconds)

        return store

    def _alone(self, plan, ctx: RunContext):
        """The job's plan run by itself, as the worker would have run it."""
        def alone() -> Finished:
            with torch.inference_mode():
                return self.runner.generation.run(ctx, plan.work)

        return alone

    def _outcome(self, plan, ctx: RunContext, work):
        """Run ``work`` (it makes the job's :class:`Finished`) and record how the job
        ended; the job's result, or its error. Never raises."""
        try:
            return self.runner.succeed(plan, ctx, work())
        except Exception as exc:
            ended = classify(ctx.job, exc)
        return self._failed(plan, ctx, ended)

    def _failed(self, plan, ctx: RunContext, ended: tuple, free: bool = True):
        try:
            return self.runner.fail(plan, ctx, *ended, free=free)
        except Exception as exc:  # not even its record could be written
            log.exception("job %s: its ending could not be recorded", ctx.job.id)
            return exc
