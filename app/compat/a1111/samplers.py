"""AUTOMATIC1111 sampler and schedule names, mapped onto our schedulers.

AUTOMATIC1111 1.9+ names a sampler (``"DPM++ 2M"``) and, separately, a schedule type
(``scheduler``: ``"Automatic"``, ``"Karras"``, …); older clients put the schedule into the
sampler's name (``"DPM++ 2M Karras"``). Both work here. ``Automatic`` is what
AUTOMATIC1111 picks for the sampler (Karras for the DPM++ samplers that default to it, the
model's own sigmas otherwise).

Each of our schedulers is a diffusers class with either the model's own sigmas or Karras
sigmas, so a sampler maps onto a ``(uniform, karras)`` pair. Where we have no exact
counterpart the nearest one is used and :attr:`A1111Sampler.exact` is False (listed in
``docs/compat-a1111.md``). Schedules we do not have (Exponential, Polyexponential, KL
Optimal, Align Your Steps, Beta) fall back to ``Automatic``, the way AUTOMATIC1111 treats
a schedule name it does not know; Normal, Simple, SGM Uniform and DDIM spacing run as
Uniform. An unknown sampler is AUTOMATIC1111's 404 ``Sampler not found``.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import NotFound
from app.pipelines.schedulers import SCHEDULERS


class SamplerNotFound(NotFound):
    """AUTOMATIC1111's answer to an unknown sampler, word for word (AI-Render reads it)."""

    def __init__(self) -> None:
        super().__init__("Sampler not found", param="sampler_name")


@dataclass(frozen=True)
class A1111Sampler:
    name: str  # AUTOMATIC1111's name
    aliases: tuple[str, ...]  # its k-diffusion aliases
    uniform: str  # our scheduler with the model's own sigmas
    karras: str | None  # our scheduler with Karras sigmas, if we have one
    automatic: str = "uniform"  # what AUTOMATIC1111's "Automatic" picks: uniform | karras
    exact: bool = True  # False: the nearest of ours, not the same algorithm
    note: str = ""


SAMPLERS: tuple[A1111Sampler, ...] = (
    A1111Sampler("DPM++ 2M", ("k_dpmpp_2m",), "dpmpp_2m", "dpmpp_2m_karras", "karras"),
    A1111Sampler("DPM++ SDE", ("k_dpmpp_sde",), "dpmpp_2m_sde", "dpmpp_2m_sde_karras",
                 "karras", exact=False, note="runs the multistep DPM++ 2M SDE solver"),
    A1111Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "dpmpp_2m_sde", "dpmpp_2m_sde_karras",
                 "karras", note="Automatic uses Karras sigmas (AUTOMATIC1111: Exponential)"),
    A1111Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "dpmpp_2m_sde",
                 "dpmpp_2m_sde_karras", "karras", exact=False,
                 note="runs DPM++ 2M SDE (midpoint, not Heun)"),
    A1111Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), "dpmpp_2s", None, exact=False,
                 note="runs the single-step DPM++ 2S, not ancestral, model sigmas"),
    A1111Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "euler_a", None),
    A1111Sampler("Euler", ("k_euler",), "euler", "euler_karras"),
    A1111Sampler("LMS", ("k_lms",), "lms", "lms_karras"),
    A1111Sampler("Heun", ("k_heun",), "heun", "heun_karras"),
    A1111Sampler("DPM2", ("k_dpm_2",), "dpm2", "dpm2_karras"),
    A1111Sampler("DPM2 a", ("k_dpm_2_a",), "dpm2_a", "dpm2_a_karras"),
    A1111Sampler("DDIM", ("ddim",), "ddim", None),
    A1111Sampler("PLMS", ("plms",), "pndm", None),
    A1111Sampler("UniPC", ("unipc",), "unipc", None),
    A1111Sampler("LCM", ("k_lcm", "lcm"), "lcm", None),
    # Ours, not AUTOMATIC1111's: listed so that clients can pick them too.
    A1111Sampler("DEIS", ("deis",), "deis", None, note="Bildwerk's; not in AUTOMATIC1111"),
    A1111Sampler("DDPM", ("ddpm",), "ddpm", None, note="Bildwerk's; not in AUTOMATIC1111"),
    A1111Sampler("TCD", ("tcd",), "tcd", None, note="Bildwerk's; not in AUTOMATIC1111"),
)


@dataclass(frozen=True)
class Schedule:
    name: str
    label: str
    aliases: tuple[str, ...] = ()
    runs_as: str | None = None  # uniform | karras; None: not ours (falls back to automatic)
    default_rho: float | None = None
    need_inner_model: bool | None = None


# AUTOMATIC1111's schedule types. Listed by GET /schedulers: those we run (runs_as set).
SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic", runs_as="automatic"),
    Schedule("uniform", "Uniform", runs_as="uniform", need_inner_model=True),
    Schedule("karras", "Karras", runs_as="karras", default_rho=7.0),
    Schedule("exponential", "Exponential"),
    Schedule("polyexponential", "Polyexponential", default_rho=1.0),
    Schedule("sgm_uniform", "SGM Uniform", ("SGMUniform",), runs_as="uniform"),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    Schedule("simple", "Simple", runs_as="uniform"),
    Schedule("normal", "Normal", runs_as="uniform"),
    Schedule("ddim", "DDIM", runs_as="uniform"),
    Schedule("beta", "Beta"),
)
LISTED_SCHEDULES = tuple(s for s in SCHEDULES if s.name in ("automatic", "uniform", "karras"))
DEFAULT_SAMPLER = "Euler"  # AUTOMATIC1111's API default for sampler_index

_BY_NAME = {key.lower(): s for s in SAMPLERS for key in (s.name, *s.aliases)}
_SCHEDULE_BY_NAME = {key.lower(): s for s in SCHEDULES for key in (s.name, s.label, *s.aliases)}
# Our scheduler name -> (sampler, schedule label), for infotexts and our own names as input.
_OURS: dict[str, tuple[A1111Sampler, str]] = {}
for _s in SAMPLERS:
    _OURS.setdefault(_s.uniform, (_s, "Uniform"))
    if _s.karras:
        _OURS.setdefault(_s.karras, (_s, "Karras"))


@dataclass(frozen=True)
class Resolved:
    """What a request's sampler fields come to."""

    scheduler: str  # ours, for the request
    sampler: str  # AUTOMATIC1111's sampler name, for info and infotexts
    schedule: str  # the schedule type that runs: "Uniform" or "Karras"
    exact: bool


def resolve(sampler_name: str | None, sampler_index: str | None = None,
            scheduler: str | None = None) -> Resolved:
    """The scheduler for ``sampler_name`` (else ``sampler_index``, else Euler) with the
    schedule type ``scheduler`` or the one named at the end of the sampler's name."""
    name = (sampler_name or sampler_index or DEFAULT_SAMPLER).strip()
    if name in SCHEDULERS:  # one of our own names: exactly that scheduler
        sampler, label = _OURS.get(name, (None, "Uniform"))
        return Resolved(name, sampler.name if sampler else name, label, True)
    schedule = _SCHEDULE_BY_NAME.get((scheduler or "automatic").strip().lower())
    for option in SCHEDULES:  # "DPM++ 2M Karras": the schedule in the name wins
        for word in (option.label, option.name, *option.aliases):
            if name.lower().endswith(" " + word.lower()) and \
                    name[: -len(word) - 1].lower() in _BY_NAME:
                schedule, name = option, name[: -len(word) - 1]
                break
        else:
            continue
        break
    sampler = _BY_NAME.get(name.lower())
    if sampler is None:
        raise SamplerNotFound
    runs_as = schedule.runs_as if schedule and schedule.runs_as else "automatic"
    if runs_as == "automatic":
        runs_as = sampler.automatic
    if runs_as == "karras" and sampler.karras:
        return Resolved(sampler.karras, sampler.name, "Karras", sampler.exact)
    return Resolved(sampler.uniform, sampler.name, "Uniform", sampler.exact)


def describe(scheduler: str) -> tuple[str, str]:
    """(sampler name, schedule label) of one of our schedulers, AUTOMATIC1111 style."""
    sampler, label = _OURS.get(scheduler, (None, "Uniform"))
    return (sampler.name if sampler else scheduler), label


def sampler_items() -> list[dict]:
    """GET /sdapi/v1/samplers."""
    items = []
    for s in SAMPLERS:
        options = {"bildwerk_scheduler": s.uniform + (f", {s.karras}" if s.karras else "")}
        if s.automatic != "uniform":
            options["scheduler"] = s.automatic
        if not s.exact:
            options["approximation"] = "true"
        if s.note:
            options["note"] = s.note
        items.append({"name": s.name, "aliases": list(s.aliases), "options": options})
    return items


def scheduler_items() -> list[dict]:
    """GET /sdapi/v1/schedulers: the schedule types that run as they say."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
             "default_rho": s.default_rho, "need_inner_model": s.need_inner_model}
            for s in LISTED_SCHEDULES]
