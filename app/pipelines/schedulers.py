"""Scheduler names clients may ask for, each mapped to a diffusers class and options.

A fresh scheduler instance is built from the model's own scheduler config for every
request, so no request changes the state another sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    TCDScheduler,
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


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

# Names follow AUTOMATIC1111's sampler list where diffusers has the same method.
SCHEDULERS: dict[str, SchedulerSpec] = {
    "euler": SchedulerSpec(EulerDiscreteScheduler, {}, "Euler"),
    "euler_karras": SchedulerSpec(EulerDiscreteScheduler, _KARRAS, "Euler Karras"),
    "euler_a": SchedulerSpec(EulerAncestralDiscreteScheduler, {}, "Euler a"),
    "heun": SchedulerSpec(HeunDiscreteScheduler, {}, "Heun"),
    "heun_karras": SchedulerSpec(HeunDiscreteScheduler, _KARRAS, "Heun Karras"),
    "lms": SchedulerSpec(LMSDiscreteScheduler, {}, "LMS"),
    "lms_karras": SchedulerSpec(LMSDiscreteScheduler, _KARRAS, "LMS Karras"),
    "dpm2": SchedulerSpec(KDPM2DiscreteScheduler, {}, "DPM2"),
    "dpm2_karras": SchedulerSpec(KDPM2DiscreteScheduler, _KARRAS, "DPM2 Karras"),
    "dpm2_a": SchedulerSpec(KDPM2AncestralDiscreteScheduler, {}, "DPM2 a"),
    "dpm2_a_karras": SchedulerSpec(KDPM2AncestralDiscreteScheduler, _KARRAS, "DPM2 a Karras"),
    "dpmpp_2s": SchedulerSpec(DPMSolverSinglestepScheduler, {}, "DPM++ 2S (single-step)"),
    "dpmpp_2m": SchedulerSpec(DPMSolverMultistepScheduler, {}, "DPM++ 2M"),
    "dpmpp_2m_karras": SchedulerSpec(DPMSolverMultistepScheduler, _KARRAS, "DPM++ 2M Karras"),
    "dpmpp_2m_sde": SchedulerSpec(DPMSolverMultistepScheduler, _SDE, "DPM++ 2M SDE"),
    "dpmpp_2m_sde_karras": SchedulerSpec(DPMSolverMultistepScheduler, {**_SDE, **_KARRAS},
                                         "DPM++ 2M SDE Karras"),
    "deis": SchedulerSpec(DEISMultistepScheduler, {}, "DEIS"),
    "unipc": SchedulerSpec(UniPCMultistepScheduler, {}, "UniPC"),
    "ddim": SchedulerSpec(DDIMScheduler, {}, "DDIM"),
    "ddpm": SchedulerSpec(DDPMScheduler, {}, "DDPM"),
    "pndm": SchedulerSpec(PNDMScheduler, {}, "PLMS/PNDM (the SD1.5 default)"),
    "lcm": SchedulerSpec(LCMScheduler, {}, "LCM (for LCM-distilled models or LoRAs)",
                         max_steps=50),
    "tcd": SchedulerSpec(TCDScheduler, {}, "TCD (for TCD LoRAs)", max_steps=50),
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
