"""Load single-file (LDM layout) Stable Diffusion 1.x checkpoints fully offline."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from safetensors import safe_open

from app.pipelines.single_file.ldm_format import UNET_PREFIX

SD15_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "sd15"
_UNET_CONV_IN = f"{UNET_PREFIX}input_blocks.0.0.weight"


def unet_in_channels(path: Path | str) -> int | None:
    """Read the UNet input channel count (4 normal, 9 inpainting) from a ``.safetensors`` header."""
    with safe_open(str(path), framework="pt") as handle:
        if _UNET_CONV_IN not in handle.keys():
            return None
        return int(handle.get_slice(_UNET_CONV_IN).get_shape()[1])


def load_single_file(
    path: Path | str,
    config_dir: Path | str = SD15_CONFIG_DIR,
    torch_dtype: torch.dtype | None = None,
    pipeline_cls: type[DiffusionPipeline] = StableDiffusionPipeline,
) -> DiffusionPipeline:
    """Build a pipeline from one LDM-layout ``.safetensors`` checkpoint without any hub access.

    ``config_dir`` is a diffusers folder holding configs and tokenizer files but no weights.
    The UNet's ``in_channels`` is taken from the checkpoint, so 9-channel inpainting
    files load against the same config folder (use ``StableDiffusionInpaintPipeline``
    as ``pipeline_cls`` to run them). The safety checker is never loaded.
    """
    extra = {}
    in_channels = unet_in_channels(path)
    if in_channels is not None:
        # Legacy kwarg that diffusers forwards to the UNet only (the VAE also has `in_channels`).
        extra["num_in_channels"] = in_channels
    return pipeline_cls.from_single_file(
        str(path),
        config=str(config_dir),
        local_files_only=True,
        dtype=torch_dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **extra,
    )
