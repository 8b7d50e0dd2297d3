"""A running job's time limit (``BILDWERK_JOB_TIMEOUT_S``), checked where cancellation is:
between denoising steps, between frames and after a model load."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.errors import JobTimeLimit


@dataclass(frozen=True)
class Deadline:
    limit_s: float
    at: float  # time.monotonic() when the job must stop

    @classmethod
    def after(cls, limit_s: float) -> Deadline:
        return cls(limit_s=limit_s, at=time.monotonic() + limit_s)

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def check(self) -> None:
        """Raise :class:`JobTimeLimit` once the time is up."""
        if self.passed:
            raise JobTimeLimit(
                f"the job ran longer than {self.limit_s:g} s (BILDWERK_JOB_TIMEOUT_S) and was "
                "stopped; ask for less work (fewer frames or steps, a smaller size)")
