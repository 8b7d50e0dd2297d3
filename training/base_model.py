"""The base a run trains from: a diffusers folder in the StableDiffusionPipeline layout
(SD1.x/SD2.x: one text encoder), checked from its ``model_index.json`` and loaded
component by component in float32."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class BaseParts:
    index: dict
    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler_config: dict


def model_index(base: Path) -> dict:
    """``base``'s ``model_index.json``; ``ValueError`` when it is no pipeline this trainer
    can train (no diffusers folder, SDXL's two text encoders, a missing component)."""
    index_path = base / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"base {base} is not a diffusers pipeline folder (no model_index.json)"
                         "; pass a model id of the registry to the CLI to convert single files")
    index = json.loads(index_path.read_text())
    if index.get("text_encoder_2") and index["text_encoder_2"][0] is not None:
        raise ValueError(f"base {base} has two text encoders (SDXL): this trainer supports "
                         "SD1.x/SD2.x-shaped models only")
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not index.get(name) or index[name][0] is None:
            raise ValueError(f"base {base} has no {name} (a StableDiffusionPipeline layout "
                             "needs unet, vae, text_encoder, tokenizer and scheduler)")
    return index


def _component(base: Path, index: dict, name: str):
    library, class_name = index[name]
    cls = getattr(importlib.import_module(library), class_name)
    return cls.from_pretrained(base / name)


def load_base_parts(base: Path) -> BaseParts:
    """Tokenizer, text encoder, VAE and UNet (float32, on the CPU) and the scheduler
    config of ``base``, with the libraries' loading chatter silenced."""
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    index = model_index(base)
    verbosity = tlogging.get_verbosity(), dlogging.get_verbosity()
    tlogging.set_verbosity_error()
    dlogging.set_verbosity_error()
    try:
        tokenizer = _component(base, index, "tokenizer")
        text_encoder = moved(_component(base, index, "text_encoder"), dtype=torch.float32)
        vae = moved(_component(base, index, "vae"), dtype=torch.float32)
        unet = moved(_component(base, index, "unet"), dtype=torch.float32)
    finally:
        tlogging.set_verbosity(verbosity[0])
        dlogging.set_verbosity(verbosity[1])
    scheduler_config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    return BaseParts(index, tokenizer, text_encoder, vae, unet, scheduler_config)


def moved(module: torch.nn.Module, device: torch.device | None = None,
          dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``module.to(device, dtype)``, casting only when the dtype differs (diffusers warns
    about every cast of a model with fp32-pinned modules)."""
    param = next(module.parameters())
    if dtype is not None and param.dtype != dtype:
        module.to(dtype=dtype)
    if device is not None and param.device != torch.device(device):
        module.to(device)
    return module


__all__ = ["BaseParts", "load_base_parts", "model_index", "moved"]
