"""Scheduler names clients may ask for, each mapped to a diffusers class and options.

A fresh scheduler instance is built from the model's own scheduler config for every
request, so no request changes the state another sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from app.errors import InvalidInput


@dataclass(frozen=True)
class SchedulerSpec:
    cls: type[SchedulerMixin]
    options: dict = field(default_factory=dict)
    description: str = ""
    max_steps: int | None = None


SCHEDULERS: dict[str, SchedulerSpec] = {
    "euler": SchedulerSpec(EulerDiscreteScheduler, {}, "Euler"),
    "euler_a": SchedulerSpec(EulerAncestralDiscreteScheduler, {}, "Euler ancestral"),
    "dpmpp_2m": SchedulerSpec(DPMSolverMultistepScheduler, {}, "DPM++ 2M"),
    "dpmpp_2m_karras": SchedulerSpec(
        DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "ddim": SchedulerSpec(DDIMScheduler, {}, "DDIM"),
    "pndm": SchedulerSpec(PNDMScheduler, {}, "PNDM (the SD1.5 default)"),
    "lms": SchedulerSpec(LMSDiscreteScheduler, {}, "LMS"),
    "heun": SchedulerSpec(HeunDiscreteScheduler, {}, "Heun"),
    "unipc": SchedulerSpec(UniPCMultistepScheduler, {}, "UniPC"),
    "lcm": SchedulerSpec(LCMScheduler, {}, "LCM (for LCM-distilled models or LoRAs)",
                         max_steps=50),
}
DEFAULT_SCHEDULER = "euler_a"
SCHEDULER_NAMES = tuple(SCHEDULERS)


def build_scheduler(name: str, base_config: dict) -> SchedulerMixin:
    """A new scheduler of kind ``name`` derived from the model's scheduler config."""
    spec = SCHEDULERS.get(name)
    if spec is None:
        raise InvalidInput(
            f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}",
            param="scheduler")
    return spec.cls.from_config(base_config, **spec.options)
