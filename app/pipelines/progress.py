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
        try:
            self.check_cancelled()
        except BildwerkError:
            pipe._interrupt = True
            raise
        # The pipeline knows how many timesteps it really runs (img2img strength,
        # second-order schedulers such as Heun run more than num_inference_steps).
        run = getattr(pipe, "_num_timesteps", None) or self.total
        self.total = self.step_offset + run
        self.report(self.stage, self.step_offset + step + 1, self.total)
        if self.preview and step + 1 in preview_steps(run, self.previews):
            image = latent_preview(pipe, callback_kwargs.get("latents"))
            if image is not None:
                self.preview(image, self.step_offset + step + 1, self.total)
        return callback_kwargs
