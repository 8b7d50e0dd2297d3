"""Per-request progress and cancellation, wired into diffusers' ``callback_on_step_end``.

Each request owns one :class:`StepReporter`; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import BildwerkError, JobCancelled
from app.pipelines.preview import latent_preview, preview_steps

if TYPE_CHECKING:
    from PIL import Image

ProgressFn = Callable[[str, int, int], None]
PreviewFn = Callable[["Image.Image", int, int], None]  # (preview, step, total)


def stop_pipe_on_error(pipe, check: Callable[[], None]) -> None:
    """Run ``check`` (cancel, time limit); when it raises, set the pipeline's own interrupt
    flag first, so the denoising loop ends and the VAE decode is skipped."""
    try:
        check()
    except BildwerkError:
        pipe._interrupt = True
        raise


@dataclass
class StepReporter:
    """Reports ``(stage, step, total)`` and stops the pipeline when cancelled or out of
    time.

    ``cancelled`` and ``check_deadline`` are polled after every denoising step. A cancelled
    run sets the pipeline's own interrupt flag and raises :class:`JobCancelled`, which
    leaves the denoising loop at once and skips the VAE decode; a run past its deadline does
    the same with the :class:`~app.errors.JobTimeLimit` that ``check_deadline`` raises.
    """

    report: ProgressFn
    cancelled: Callable[[], bool]
    check_deadline: Callable[[], None] = lambda: None  # raises once the job's time is up
    stage: str = "denoising"
    step_offset: int = 0
    total: int = 0
    previews: int = 0  # step previews wanted over the run (app.pipelines.preview)
    preview: PreviewFn | None = None

    def stage_changed(self, stage: str, step: int = 0) -> None:
        self.stage = stage
        self.report(stage, step, self.total)

    def check_cancelled(self) -> None:
        """Stop here if the job was cancelled or ran out of time."""
        if self.cancelled():
            raise JobCancelled("job was cancelled")
        self.check_deadline()

    def on_step_end(self, pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        stop_pipe_on_error(pipe, self.check_cancelled)
        self.after_step(pipe, step, callback_kwargs.get("latents"))
        return callback_kwargs

    def after_step(self, pipe, step: int, latents) -> None:
        """Report step ``step`` (0-based) done, with a preview of ``latents`` (this job's
        images) when one falls on it."""
        # The pipeline knows how many timesteps it really runs (img2img strength,
        # second-order schedulers such as Heun run more than num_inference_steps).
        run = getattr(pipe, "_num_timesteps", None) or self.total
        self.total = self.step_offset + run
        self.report(self.stage, self.step_offset + step + 1, self.total)
        if self.preview and step + 1 in preview_steps(run, self.previews):
            image = latent_preview(pipe, latents)
            if image is not None:
                self.preview(image, self.step_offset + step + 1, self.total)


@dataclass
class BatchMember:
    """One job of a batch: its reporter and its images' rows ``[start, end)`` in the
    pipeline call."""

    reporter: StepReporter
    start: int
    end: int
    live: bool = True


class BatchReporter:
    """One pipeline call's progress, told to each job of its batch (app/services/run_batch).

    Stands in for a :class:`StepReporter`. After every step each live job's cancel flag and
    time limit are checked: a job cancelled (or out of time) leaves the batch at once
    (``on_drop`` ends it and its record) while the others go on; its rows are still
    computed, and thrown away. When every job has left, the pipeline stops as for one.
    """

    def __init__(self, members: list[BatchMember],
                 on_drop: Callable[[int, BildwerkError], None]) -> None:
        self.members = members
        self.on_drop = on_drop
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value
        for member in self.members:
            member.reporter.total = value

    @property
    def live(self) -> list[BatchMember]:
        return [member for member in self.members if member.live]

    def stage_changed(self, stage: str, step: int = 0) -> None:
        for member in self.live:
            member.reporter.stage_changed(stage, step)

    def check_cancelled(self) -> None:
        """Drop the jobs cancelled or out of time; stop when none is left."""
        for index, member in enumerate(self.members):
            if not member.live:
                continue
            try:
                member.reporter.check_cancelled()
            except BildwerkError as exc:
                member.live = False
                self.on_drop(index, exc)
        if not self.live:
            raise JobCancelled("every job of the batch was cancelled")

    def on_step_end(self, pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        stop_pipe_on_error(pipe, self.check_cancelled)
        latents = callback_kwargs.get("latents")
        for member in self.live:
            rows = latents[member.start:member.end] if latents is not None else None
            member.reporter.after_step(pipe, step, rows)
        return callback_kwargs
