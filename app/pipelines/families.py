"""Model families (sd15, sd21, sdxl): their pipeline classes, and probing a checkpoint
to find its family, variant, prediction type and native resolution without loading it.
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

CONFIGS_DIR = Path(__file__).parent / "single_file" / "configs"
SIDECAR_SUFFIX = ".config"


@dataclass(frozen=True)
class Family:
    name: str
    pipeline_classes: dict
    load_kwargs: dict = field(default_factory=dict)

    def config_dir(self) -> Path:
        """The shipped diffusers config folder (no weights) for single-file loading."""
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


@dataclass(frozen=True)
class Probe:
    family: str
    variant: str
    prediction_type: str
    native_resolution: int


def probe_diffusers_folder(path: Path) -> Probe:
    """Probe a diffusers folder from its JSON configs."""
    index = json.loads((path / "model_index.json").read_text())
    unet = json.loads((path / "unet" / "config.json").read_text())
    vae_cfg = path / "vae" / "config.json"
    vae = json.loads(vae_cfg.read_text()) if vae_cfg.exists() else {}
    sched_cfg = path / "scheduler" / "scheduler_config.json"
    sched = json.loads(sched_cfg.read_text()) if sched_cfg.exists() else {}
    cls_name = index.get("_class_name", "")
    cross = unet.get("cross_attention_dim")
    if "XL" in cls_name:
        family = "sdxl"
    elif cross == 1024:
        family = "sd21"
    elif cls_name.startswith("StableDiffusion"):
        family = "sd15"
    else:
        raise ValueError(f"unsupported pipeline class {cls_name!r}")
    if unet.get("in_channels") == 9:
        variant = "inpaint"
    elif family == "sdxl" and "text_encoder" not in index:
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


def probe_single_file(path: Path) -> Probe:
    """Probe a single-file checkpoint from its sidecar config or its tensor shapes."""
    sidecar = sidecar_config(path)
    if sidecar is not None:
        return probe_diffusers_folder(sidecar)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        first_conv = "model.diffusion_model.input_blocks.0.0.weight"
        if first_conv not in keys:
            raise ValueError("not a Stable Diffusion UNet checkpoint")
        in_channels = fh.get_slice(first_conv).get_shape()[1]
        attn_key = next((k for k in keys if k.endswith("attn2.to_k.weight")), None)
        cross = fh.get_slice(attn_key).get_shape()[1] if attn_key else 768
    if any(k.startswith("conditioner.embedders.1") for k in keys) or cross == 2048:
        family, native = "sdxl", 1024
    elif cross == 1024:
        family, native = "sd21", 768
    else:
        family, native = "sd15", 512
    variant = "inpaint" if in_channels == 9 else "base"
    prediction = "v_prediction" if family == "sd21" and variant == "base" else "epsilon"
    return Probe(family=family, variant=variant, prediction_type=prediction,
                 native_resolution=native if variant == "base" or family != "sd21" else 512)
