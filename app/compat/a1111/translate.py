"""AUTOMATIC1111 requests into ours: a :class:`Translation` holds our request model
(:class:`~app.schemas.generation.Txt2ImgRequest`, ``Img2ImgRequest`` or ``InpaintRequest``)
and what the answer needs to speak AUTOMATIC1111 again (its sampler name, the prompt as
sent, notes on what was skipped). Pure functions: nothing here runs or stores anything."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from app.compat.a1111 import checkpoints
from app.compat.a1111.samplers import Resolved, resolve
from app.compat.a1111.schemas import GenerationFields, Img2ImgBody, Txt2ImgBody
from app.errors import InvalidInput, NotFound, invalid_input_from
from app.pipelines.registry import ModelRegistry
from app.schemas.generation import (
    MAX_SEED,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)

# <lora:name>, <lora:name:0.7>, <lora:name:0.7:0.5>, <lora:name:unet=0.7> (and <lyco:…>);
# <hypernet:…> is taken out and skipped.
_EXTRA_NETWORK = re.compile(r"<(lora|lyco|hypernet):([^<>]+)>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")
RESIZE_MODES = {0: "resize", 1: "crop", 2: "fill", 3: "resize"}  # 3: latent upscale
LORA_WEIGHT_LIMIT = 4.0  # our LoraRef's range
# our field -> AUTOMATIC1111's, for the messages of a refused request
A1111_FIELD = {"guidance_scale": "cfg_scale", "num_images": "batch_size",
               "strength": "denoising_strength", "image": "init_images",
               "invert_mask": "inpainting_mask_invert", "padding": "inpaint_full_res_padding",
               "clip_skip": "override_settings.CLIP_stop_at_last_layers",
               "model": "override_settings.sd_model_checkpoint",
               "vae": "override_settings.sd_vae", "scheduler": "sampler_name",
               "loras": "prompt", "style": "styles"}


@dataclass(frozen=True)
class Defaults:
    """The caller's options (POST /sdapi/v1/options) that apply when a request sets none."""

    model: str | None = None  # our model id
    clip_skip: int = 1
    vae: str | None = None


@dataclass(frozen=True)
class Catalogue:
    """What names a request may use: the registry, LoRA ids and style names."""

    registry: ModelRegistry
    loras: tuple[str, ...]
    styles: tuple[str, ...]


@dataclass
class Translation:
    kind: Literal["txt2img", "img2img", "inpaint"]
    request: Txt2ImgRequest | Img2ImgRequest | InpaintRequest
    sampler: Resolved
    prompt: str  # as sent, with its <lora:…> tags (AUTOMATIC1111's infotexts keep them)
    negative_prompt: str
    batch_size: int
    clip_skip: int
    vae: str | None
    denoising_strength: float | None = None
    mask_blur: int | None = None
    notes: list[str] = field(default_factory=list)


def split_extra_networks(prompt: str) -> tuple[str, list[tuple[str, float]], list[str]]:
    """(the prompt without its tags, [(LoRA name, weight)], names of skipped networks)."""
    loras: list[tuple[str, float]] = []
    skipped: list[str] = []
    for match in _EXTRA_NETWORK.finditer(prompt):
        kind, args = match.group(1).lower(), [a.strip() for a in match.group(2).split(":")]
        name = args[0]
        if kind == "hypernet" or not name:
            skipped.append(f"{kind}:{name}")
            continue
        named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
        positional = [a for a in args[1:] if "=" not in a]
        weight = named.get("unet") or (positional[0] if positional else "1")
        try:
            value = float(weight)
        except ValueError:
            value = 1.0
        loras.append((name, value if math.isfinite(value) else 1.0))
    text = _EXTRA_NETWORK.sub("", prompt)
    text = _drop_empty_terms(_SPACES.sub(" ", text)).strip().strip(",").strip()
    return text, loras, skipped


def _drop_empty_terms(text: str) -> str:
    """Commas with only whitespace between them (what a removed tag leaves) become one,
    the whitespace before them dropped: ``"a cat , , in the rain"`` -> ``"a cat, in the
    rain"``. (Without a regex: ``(\\s*,){2,}`` backtracks quadratically on a long run of
    whitespace.)"""
    parts = text.split(",")
    out = [parts[0]]
    for part in parts[1:]:
        if len(out) > 1 and not out[-1].strip():  # an empty term: one comma for both
            out.pop()
            out[-1] = out[-1].rstrip()
        out.append(part)
    return ",".join(out)


def _loras(found: list[tuple[str, float]], known: tuple[str, ...],
           notes: list[str]) -> list[dict]:
    by_lower = {k.lower(): k for k in known}
    refs: dict[str, float] = {}
    missing = []
    for name, weight in found:
        real = name if name in known else by_lower.get(name.lower())
        if real is None:
            missing.append(name)
            continue
        clamped = max(-LORA_WEIGHT_LIMIT, min(LORA_WEIGHT_LIMIT, weight))
        if clamped != weight:
            notes.append(f"LoRA {real} weight {weight:g} clamped to {clamped:g}")
        refs.setdefault(real, clamped)
    if missing:  # AUTOMATIC1111 goes on without them too
        notes.append("Networks not found: " + ", ".join(missing))
    return [{"name": n, "weight": w} for n, w in refs.items()]


def _model(body: GenerationFields, defaults: Defaults, catalogue: Catalogue) -> str | None:
    name = (body.override_settings or {}).get("sd_model_checkpoint")
    if name is None or name == "":
        return defaults.model
    if not isinstance(name, str):
        raise InvalidInput("override_settings.sd_model_checkpoint must be a string",
                           param="override_settings.sd_model_checkpoint")
    found = checkpoints.find(catalogue.registry, name)
    if found is None:
        raise NotFound(f"Model not found: {name!r} (see GET /sdapi/v1/sd-models)",
                       param="override_settings.sd_model_checkpoint")
    return found.entry.id


def _clip_skip(body: GenerationFields, defaults: Defaults) -> int:
    value = (body.override_settings or {}).get("CLIP_stop_at_last_layers")
    if value is None:
        return defaults.clip_skip
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()):  # inf, nan: not whole
        raise InvalidInput("override_settings.CLIP_stop_at_last_layers must be a whole "
                           "number", param="override_settings.CLIP_stop_at_last_layers")
    return int(value)


def vae_id(name: Any, registry: ModelRegistry) -> str | None:
    """Our VAE id for an ``sd_vae`` value; None for Automatic/None or an unknown name."""
    if not isinstance(name, str) or name.strip().lower() in ("", "automatic", "none"):
        return None
    known = {v.id: v.id for v in registry.vaes()}
    for v in registry.vaes():
        known.setdefault(v.path.name, v.id)
        known.setdefault(v.path.stem, v.id)
    return known.get(name.strip())


def _vae(body: GenerationFields, defaults: Defaults, catalogue: Catalogue,
         notes: list[str]) -> str | None:
    settings = body.override_settings or {}
    if "sd_vae" not in settings:
        return defaults.vae
    found = vae_id(settings["sd_vae"], catalogue.registry)
    if found is None and str(settings["sd_vae"]).strip().lower() not in ("automatic", "none",
                                                                           ""):
        notes.append(f"VAE {settings['sd_vae']!r} not found; using the model's own")
    return found


def _size(value: int | None, default: int = 512) -> int:
    value = default if value is None else value
    return value - value % 8 if value > 0 else value


def _seed(seed: int | None) -> int | None:
    if seed is None or seed < 0:
        return None  # drawn by the planner
    return seed % (MAX_SEED + 1)


def _common(body: GenerationFields, defaults: Defaults, catalogue: Catalogue,
            notes: list[str]) -> tuple[dict, Resolved, str, str, int, int, str | None]:
    resolved = resolve(body.sampler_name, body.sampler_index, body.scheduler)
    if not resolved.exact:
        notes.append(f"sampler {resolved.sampler} runs as Bildwerk's {resolved.scheduler}")
    prompt = body.prompt or ""
    negative = body.negative_prompt or ""
    clean, found, skipped = split_extra_networks(prompt)
    if skipped:
        notes.append("Skipped (not supported): " + ", ".join(skipped))
    loras = _loras(found, catalogue.loras, notes)
    clip_skip = _clip_skip(body, defaults)
    vae = _vae(body, defaults, catalogue, notes)
    batch_size = 1 if body.batch_size is None else body.batch_size
    n_iter = 1 if body.n_iter is None else body.n_iter
    style = next((s for s in body.styles or () if s in catalogue.styles), None)
    values = {
        # An empty prompt is allowed in AUTOMATIC1111 (unconditional); ours needs a character.
        "prompt": clean or " ", "negative_prompt": negative,
        "model": _model(body, defaults, catalogue), "scheduler": resolved.scheduler,
        "loras": loras, "vae": vae, "clip_skip": clip_skip, "style": style,
        "width": _size(body.width), "height": _size(body.height),
        "steps": 50 if body.steps is None else body.steps,
        "guidance_scale": 7.0 if body.cfg_scale is None else body.cfg_scale,
        "seed": _seed(body.seed), "num_images": batch_size * n_iter,
    }
    if batch_size < 1 or n_iter < 1:
        raise InvalidInput("batch_size and n_iter must be at least 1", param="batch_size")
    return values, resolved, prompt, negative, batch_size, clip_skip, vae


def build(model: type, values: dict):
    try:
        return model(**values)
    except ValidationError as exc:
        raise invalid_input_from(exc, A1111_FIELD, top_level=True) from None


def txt2img(body: Txt2ImgBody, defaults: Defaults, catalogue: Catalogue) -> Translation:
    notes: list[str] = []
    values, resolved, prompt, negative, batch_size, clip_skip, vae = _common(
        body, defaults, catalogue, notes)
    return Translation(kind="txt2img", request=build(Txt2ImgRequest, values),
                       sampler=resolved, prompt=prompt, negative_prompt=negative,
                       batch_size=batch_size, clip_skip=clip_skip, vae=vae, notes=notes)


def img2img(body: Img2ImgBody, defaults: Defaults, catalogue: Catalogue) -> Translation:
    """img2img, or inpaint when the body has a mask."""
    if not body.init_images:
        raise NotFound("Init image not found", param="init_images")
    notes: list[str] = []
    values, resolved, prompt, negative, batch_size, clip_skip, vae = _common(
        body, defaults, catalogue, notes)
    if len(body.init_images) > 1:
        notes.append("only the first of init_images is used")
    strength = 0.75 if body.denoising_strength is None else body.denoising_strength
    steps = values["steps"]
    if isinstance(steps, int) and steps >= 1 and 0 <= strength and steps * strength < 1:
        # AUTOMATIC1111 runs at least one step; ours refuses fewer than one
        strength = min(1.0, (1 + 1e-9) / steps)
        notes.append(f"denoising_strength raised to {strength:.4f} so that one step runs")
    values.update(image=body.init_images[0], strength=strength)
    mask_blur = 4 if body.mask_blur is None else body.mask_blur
    if body.mask:
        if body.inpainting_fill not in (None, 1):
            notes.append("inpainting_fill is not honoured: the masked area starts from the "
                         "image (as AUTOMATIC1111's 'original')")
        values.update(mask=body.mask, invert_mask=bool(body.inpainting_mask_invert),
                      mask_blur=mask_blur,
                      padding=body.inpaint_full_res_padding or 0,
                      inpaint_area="full" if body.inpaint_full_res is False else "masked")
        request = build(InpaintRequest, values)
        kind: Literal["img2img", "inpaint"] = "inpaint"
    else:
        mode = 0 if body.resize_mode is None else body.resize_mode
        if mode not in RESIZE_MODES:
            raise InvalidInput("resize_mode must be 0 (resize), 1 (crop), 2 (fill) or 3 "
                               "(latent upscale)", param="resize_mode")
        values["resize_mode"] = RESIZE_MODES[mode]
        request = build(Img2ImgRequest, values)
        kind = "img2img"
        mask_blur = None
    return Translation(kind=kind, request=request, sampler=resolved, prompt=prompt,
                       negative_prompt=negative, batch_size=batch_size, clip_skip=clip_skip,
                       vae=vae, denoising_strength=request.strength, mask_blur=mask_blur,
                       notes=notes)


def echo(body: GenerationFields) -> dict:
    """``parameters`` of the answer: the request as AUTOMATIC1111 echoes it."""
    params = body.model_dump()
    if isinstance(body, Img2ImgBody) and not body.include_init_images:
        params["init_images"] = None
        params["mask"] = None
    return params
