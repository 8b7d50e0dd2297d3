"""Writing what a run trained to ``cfg.output``.

* LoRA: one ``.safetensors`` in diffusers' LoRA layout (``pipe.load_lora_weights`` and the
  server's LoRA catalogue read it), with ``lora_alpha / rank`` folded into the B weights;
* full: a complete diffusers folder: the base's untrained components copied, the trained
  ones saved, swapped into place whole.

Both are written under a temporary name next to the output and renamed into place.
:mod:`training.register` then puts them where the server discovers them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from app.files import replacing_folder
from training.config import TrainConfig


def save_output(cfg: TrainConfig, accelerator, index: dict,
                trained: dict[str, torch.nn.Module]) -> None:
    """Write ``cfg.output`` from the ``trained`` modules (``unet``, and ``text_encoder``
    when it trained); ``index`` is the base's ``model_index.json``."""
    out = cfg.output
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.method == "lora":
        save_lora(cfg, accelerator, trained, out)
    else:
        save_full(cfg, accelerator, index, trained, out)


def save_lora(cfg: TrainConfig, accelerator, trained: dict[str, torch.nn.Module],
              out: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    # The file carries no alpha: fold alpha/rank into B so that loaders, which assume
    # alpha == rank for diffusers-layout files, apply the trained scale.
    scale = (cfg.lora_alpha or cfg.rank) / cfg.rank

    def lora_sd(model, prefix: str = "") -> dict[str, torch.Tensor]:
        module = accelerator.unwrap_model(model)
        sd = get_peft_model_state_dict(module)
        return {prefix + k: (v * scale if ".lora_B." in k and scale != 1 else v)
                .detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}

    unet_sd = convert_state_dict_to_diffusers(lora_sd(trained["unet"]))
    te_sd = None
    if "text_encoder" in trained:
        # transformers 5 dropped CLIPTextModel's ``text_model`` level; LoRA files (and
        # diffusers' loader) keep it.
        te = lora_sd(trained["text_encoder"])
        te_sd = convert_state_dict_to_diffusers(
            {("" if k.startswith("text_model.") else "text_model.") + k: v
             for k, v in te.items()})
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd,
            weight_name=out.name, safe_serialization=True)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_full(cfg: TrainConfig, accelerator, index: dict,
              trained: dict[str, torch.nn.Module], out: Path) -> None:
    with replacing_folder(out, prefix=f".{out.name}.") as tmp:
        shutil.copy2(cfg.base / "model_index.json", tmp / "model_index.json")
        for name, spec in index.items():
            if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            if name not in trained and (cfg.base / name).is_dir():
                shutil.copytree(cfg.base / name, tmp / name)
        for name, model in trained.items():
            module = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
            module.save_pretrained(tmp / name)


__all__ = ["save_full", "save_lora", "save_output"]
