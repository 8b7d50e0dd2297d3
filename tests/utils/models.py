"""Tiny Stable Diffusion checkpoints for tests, built in-process from configs with
seeded random weights and saved to disk in the formats users bring."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from app.pipelines.single_file.ldm_format import save_as_ldm_checkpoint
from tests.utils.families import build_tiny_sd15, build_tiny_sd21, build_tiny_sdxl
from tests.utils.loras import sdxl_kohya_shapes, write_header_only_safetensors, write_tiny_lora
from tests.utils.upscalers import build_upscalers_dir


def build_models_dir(root: Path) -> Path:
    """A models dir holding every flavour the registry must handle.

    - ``tiny-sd15``: a diffusers folder (SD1.5-shaped, 4-channel UNet)
    - ``tiny-sd15-inpaint``: the 9-channel inpaint variant
    - ``tiny-single.safetensors``: ``tiny-sd15``'s weights as one LDM-layout file, with a
      ``tiny-single.config/`` sidecar (configs only) because tiny shapes are no real family
    - ``broken``: configs that probe fine but weights that cannot load
    - ``upscalers/``: tiny model upscalers (tests/utils/upscalers.py), each case the
      upscaler catalog and loader handle, refused ones included
    """
    models = root / "models"
    models.mkdir(parents=True)
    base = build_tiny_sd15(models / "tiny-sd15", seed=101)
    build_tiny_sd15(models / "tiny-sd15-inpaint", seed=202, inpaint=True)
    # The other families, each with its inpaint variant (and SDXL's refiner).
    build_tiny_sd21(models / "tiny-sd21", seed=301)
    build_tiny_sd21(models / "tiny-sd21-inpaint", seed=302, inpaint=True)
    build_tiny_sdxl(models / "tiny-sdxl", seed=401)
    build_tiny_sdxl(models / "tiny-sdxl-inpaint", seed=402, inpaint=True)
    build_tiny_sdxl(models / "tiny-sdxl-refiner", seed=403, refiner=True)

    pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True,
                                                   safety_checker=None,
                                                   requires_safety_checker=False)
    save_as_ldm_checkpoint(pipe, models / "tiny-single.safetensors")
    sidecar = models / "tiny-single.config"
    shutil.copytree(base, sidecar, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))

    broken = models / "broken"
    shutil.copytree(base, broken)
    for weights in broken.rglob("*.safetensors"):
        weights.write_bytes(b"this is not a safetensors file")

    # LoRAs for tiny-sd15 in both layouts, and an SDXL-shaped one that must not fit.
    loras = models / "loras"
    write_tiny_lora(base, loras, "style", seed=7)
    write_tiny_lora(base, loras, "detail", seed=8, text_encoder=False)
    write_header_only_safetensors(loras / "xl-style.safetensors", sdxl_kohya_shapes())
    # A VAE with the tiny architecture but other weights.
    torch.manual_seed(5)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(base / "vae"))
    vae.save_pretrained(models / "vae" / "tiny-vae", safe_serialization=True)
    build_upscalers_dir(models)
    return models


