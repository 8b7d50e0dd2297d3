"""Model families (sd15, sd21, sdxl): their pipeline classes and text-encoder context
width, and probing a checkpoint to find its family, variant, prediction type and native
resolution without loading it.

Diffusers folders are probed from their JSON configs:

* **sdxl**: ``model_index.json`` names an ``...XL...`` pipeline, or lists ``text_encoder_2``,
  or the UNet has ``addition_embed_type == "text_time"``.
* **sd21**: the UNet's ``cross_attention_dim`` is 1024 (OpenCLIP ViT-H), or, for models
  too small to have real widths, both SD2 structural signals hold: the UNet has
  ``use_linear_projection`` and the text encoder's ``hidden_act`` is ``"gelu"`` (OpenCLIP;
  SD1.x's OpenAI CLIP uses ``quick_gelu`` and convolutional projections). The prediction
  type is deliberately *not* a family signal: SD2 512-base and SD2 inpainting are epsilon.
* **sd15**: any other ``StableDiffusion*`` pipeline.
* variant: ``inpaint`` when the UNet has 9 input channels; ``refiner`` for SDXL with no
  first text encoder or with ``requires_aesthetics_score``; otherwise ``base``.
* prediction type: the scheduler config's ``prediction_type`` (default epsilon).
* native resolution: UNet ``sample_size`` x VAE scale (2 ** (VAE levels - 1)).

Single files (``.safetensors`` headers or weights-only ``.ckpt``) are probed from tensor
names and shapes; see :func:`probe_checkpoint_keys`. A sidecar ``<name>.config/``
(a diffusers folder without weights) overrides everything; a ``<name>.yaml`` (the original
LDM/sgm config) overrides the prediction type (``parameterization: "v"``, or SDXL's
``VScaling`` denoiser) and native resolution (``unet_config.params.image_size`` x 8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from app.pipelines.single_file.checkpoint import read_tensor_shapes

CONFIGS_DIR = Path(__file__).parent / "single_file" / "configs"
SIDECAR_SUFFIX = ".config"
YAML_SUFFIX = ".yaml"


@dataclass(frozen=True)
class Family:
    name: str
    pipeline_classes: dict
    load_kwargs: dict = field(default_factory=dict)

    def config_dir(self) -> Path:
        """The shipped diffusers config folder (no weights) for single-file loading.

        Its tokenizer folders may lack ``vocab.json``/``merges.txt``; ``load_single_file``
        fills them in from the shared CLIP BPE files (see ``single_file.loader``).
        """
        return CONFIGS_DIR / self.name


_SD_KWARGS = {"safety_checker": None, "requires_safety_checker": False}
_SD_CLASSES = {"txt2img": StableDiffusionPipeline, "img2img": StableDiffusionImg2ImgPipeline,
               "inpaint": StableDiffusionInpaintPipeline}
_SDXL_CLASSES = {"txt2img": StableDiffusionXLPipeline, "img2img": StableDiffusionXLImg2ImgPipeline,
                 "inpaint": StableDiffusionXLInpaintPipeline}

FAMILIES: dict[str, Family] = {
    "sd15": Family("sd15", _SD_CLASSES, _SD_KWARGS),
    "sd21": Family("sd21", _SD_CLASSES, _SD_KWARGS),
    "sdxl": Family("sdxl", _SDXL_CLASSES, {}),
}

# The text-encoder context width each family's UNet cross-attends to (its
# ``cross_attention_dim``): what a LoRA must have been made for to fit the model.
FAMILY_CONTEXT_DIM: dict[str, int] = {"sd15": 768, "sd21": 1024, "sdxl": 2048}


@dataclass(frozen=True)
class Probe:
    family: str
    variant: str
    prediction_type: str
    native_resolution: int


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _component_present(index: dict, name: str) -> bool:
    """``model_index.json`` lists a component as ``[library, class]``; ``[null, null]``
    (or no entry) means the pipeline has none."""
    value = index.get(name)
    return isinstance(value, list) and bool(value) and value[0] is not None


def probe_diffusers_folder(path: Path) -> Probe:
    """Probe a diffusers folder from its JSON configs (rules in the module docstring)."""
    path = Path(path)
    index = _read_json(path / "model_index.json")
    unet = _read_json(path / "unet" / "config.json")
    if not unet:
        raise ValueError(f"{path} has no unet/config.json")
    vae = _read_json(path / "vae" / "config.json")
    sched = _read_json(path / "scheduler" / "scheduler_config.json")
    text = _read_json(path / "text_encoder" / "config.json")
    cls_name = index.get("_class_name", "")
    if ("XL" in cls_name or _component_present(index, "text_encoder_2")
            or unet.get("addition_embed_type") == "text_time"):
        family = "sdxl"
    elif unet.get("cross_attention_dim") == 1024 or (
            unet.get("use_linear_projection") and text.get("hidden_act") == "gelu"):
        family = "sd21"
    elif cls_name.startswith("StableDiffusion"):
        family = "sd15"
    else:
        raise ValueError(f"unsupported pipeline class {cls_name!r}")
    if unet.get("in_channels") == 9:
        variant = "inpaint"
    elif family == "sdxl" and (not _component_present(index, "text_encoder")
                               or index.get("requires_aesthetics_score")):
        variant = "refiner"
    else:
        variant = "base"
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return Probe(family=family, variant=variant,
                 prediction_type=sched.get("prediction_type", "epsilon"),
                 native_resolution=int(unet.get("sample_size", 64)) * scale)


def sidecar_config(path: Path) -> Path | None:
    """A diffusers config folder (no weights) next to a single file: ``<name>.config/``."""
    candidate = path.with_name(path.stem + SIDECAR_SUFFIX)
    return candidate if (candidate / "model_index.json").exists() else None


_UNET = "model.diffusion_model."
_CONV_IN = _UNET + "input_blocks.0.0.weight"
_LABEL_EMB = _UNET + "label_emb.0.0.weight"


def probe_checkpoint_keys(shapes: dict[str, tuple[int, ...]]) -> Probe:
    """Probe an LDM-layout checkpoint from its tensor names and shapes.

    * **sdxl**: ``label_emb`` (SDXL's size/crop conditioning) or ``conditioner.embedders.*``
      keys, or cross-attention (``attn2.to_k`` in-features) of 2048. ``refiner`` when there
      is no second embedder (``conditioner.embedders.0.model.*`` is OpenCLIP bigG alone),
      or ``label_emb`` takes 2560 features (base: 2816). Epsilon, 1024 px, unless the file
      carries a ``v_pred`` marker key (as some v-prediction SDXL finetunes do).
    * **sd21**: OpenCLIP text encoder keys ``cond_stage_model.model.*`` or cross-attention
      of 1024. Shapes cannot tell SD2.x 768-v from 512-base, so a 4-channel SD2 file is
      assumed to be the common 768 v-prediction model (SD2.1, SD2.0-v); 9-channel SD2
      inpainting is epsilon at 512. SD2 512-base files (epsilon) need a sidecar or yaml.
    * **sd15**: OpenAI CLIP ``cond_stage_model.transformer.*`` / cross-attention 768;
      epsilon, 512 px.
    * variant ``inpaint`` for a 9-channel ``input_blocks.0.0``; only 4 and 9 are supported
      (SD2 depth's 5 and the x4 upscaler's 7 channels are refused).
    """
    if _CONV_IN not in shapes:
        raise ValueError("not a Stable Diffusion UNet checkpoint (no input_blocks.0.0)")
    in_channels = shapes[_CONV_IN][1]
    if in_channels not in (4, 9):
        raise ValueError(f"unsupported UNet with {in_channels} input channels")
    to_k = next((k for k in shapes if k.startswith(_UNET) and k.endswith("attn2.to_k.weight")),
                None)
    cross = shapes[to_k][1] if to_k else None

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in shapes)

    variant = "inpaint" if in_channels == 9 else "base"
    if _LABEL_EMB in shapes or has("conditioner.embedders.") or cross == 2048:
        refiner = (has("conditioner.embedders.0.model.") and not has("conditioner.embedders.1.")
                   or shapes.get(_LABEL_EMB, (0, 0))[1] == 2560)
        if refiner and variant == "base":
            variant = "refiner"
        prediction = "v_prediction" if "v_pred" in shapes else "epsilon"
        return Probe("sdxl", variant, prediction, 1024)
    if has("cond_stage_model.model.") or cross == 1024:
        if variant == "inpaint":
            return Probe("sd21", variant, "epsilon", 512)
        return Probe("sd21", variant, "v_prediction", 768)
    if has("cond_stage_model.transformer.") or cross in (768, None):
        return Probe("sd15", variant, "epsilon", 512)
    raise ValueError(f"unrecognised text conditioning (cross-attention width {cross})")


def _yaml_hint(path: Path, probe: Probe) -> Probe:
    """Apply ``<name>.yaml`` (original LDM inference config) if there is one."""
    hint = path.with_suffix(YAML_SUFFIX)
    if not hint.is_file():
        return probe
    import yaml

    params = (yaml.safe_load(hint.read_text()) or {}).get("model", {}).get("params", {})
    denoiser = json.dumps(params.get("denoiser_config", {}))  # SDXL (sgm) configs
    v_pred = params.get("parameterization") == "v" or "VScaling" in denoiser
    prediction = "v_prediction" if v_pred else "epsilon"
    image_size = params.get("unet_config", {}).get("params", {}).get("image_size")
    native = int(image_size) * 8 if image_size else probe.native_resolution
    return Probe(probe.family, probe.variant, prediction, native)


def probe_single_file(path: Path) -> Probe:
    """Probe a single-file checkpoint (``.safetensors`` or weights-only ``.ckpt``).

    A sidecar config wins; otherwise tensor shapes decide (without loading weights or
    executing pickles) and a ``<name>.yaml`` may correct prediction type and resolution.
    """
    path = Path(path)
    sidecar = sidecar_config(path)
    if sidecar is not None:
        return probe_diffusers_folder(sidecar)
    return _yaml_hint(path, probe_checkpoint_keys(read_tensor_shapes(path)))
