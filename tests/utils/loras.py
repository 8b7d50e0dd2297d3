"""Tiny LoRA files for the tiny SD1.5-shaped test models, written in the layouts users bring.

The adapter is made with PEFT (rank 4 on ``to_q/to_k/to_v/to_out.0`` of the UNet, and on
``q/k/v/out_proj`` of the CLIP text encoder), its A and B weights drawn from a seeded
generator (B non-zero, unlike a freshly initialised LoRA, so it visibly changes pictures),
then saved with diffusers' own utilities:

- diffusers layout: ``get_peft_model_state_dict`` -> ``convert_state_dict_to_diffusers`` ->
  ``StableDiffusionPipeline.save_lora_weights``;
- kohya layout: the same PEFT state dict -> ``convert_state_dict_to_kohya`` (``lora_down`` /
  ``lora_up`` / ``alpha`` keys).

Text-encoder keys get the ``text_model.`` prefix that transformers 4 had and that every
LoRA in the wild carries (transformers 5 dropped that module level); the kohya text-encoder
prefix is ``lora_te_``, as in SD1.x kohya files (``lora_te1_`` is diffusers' SDXL-style
spelling). ``lora_alpha == rank``, matching the ``alpha`` diffusers' kohya converter writes,
so both files mean the same scale and must give the same picture.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import CLIPTextModel

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _seeded_lora_weights(module: torch.nn.Module, adapter: str, seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if f".{adapter}." in name and ("lora_A" in name or "lora_B" in name):
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


def _peft_state_dict(module: torch.nn.Module, targets: list[str], rank: int, seed: int,
                     scale: float) -> dict[str, torch.Tensor]:
    adapter = "tiny"
    module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                  init_lora_weights=True), adapter_name=adapter)
    _seeded_lora_weights(module, adapter, seed, scale)
    return {k: v.detach().clone().contiguous()
            for k, v in get_peft_model_state_dict(module, adapter_name=adapter,
                                                   save_embedding_layers=False).items()}


def write_tiny_lora(model_dir: Path, dest: Path, name: str, *, seed: int, rank: int = 4,
                    text_encoder: bool = True, scale: float = 0.25) -> dict[str, Path]:
    """Write ``dest/<name>-diffusers.safetensors`` and ``dest/<name>-kohya.safetensors``,
    the same LoRA for the model at ``model_dir`` in both layouts. Returns
    ``{"diffusers": path, "kohya": path}``."""
    dest.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    unet_sd = _peft_state_dict(unet, UNET_TARGETS, rank, seed, scale)
    te_sd: dict[str, torch.Tensor] = {}
    if text_encoder:
        te = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
        te_sd = {("" if k.startswith("text_model.") else "text_model.") + k: v
                 for k, v in _peft_state_dict(te, TEXT_TARGETS, rank, seed + 1, scale).items()}

    diffusers_name = f"{name}-diffusers.safetensors"
    StableDiffusionPipeline.save_lora_weights(
        dest, unet_lora_layers=convert_state_dict_to_diffusers(unet_sd),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(te_sd) if te_sd else None,
        weight_name=diffusers_name, safe_serialization=True)

    peft_sd = {f"unet.{k}": v for k, v in unet_sd.items()}
    peft_sd |= {f"text_encoder.{k}": v for k, v in te_sd.items()}
    kohya_sd = {k.replace("lora_te1_", "lora_te_", 1): v.contiguous()
                for k, v in convert_state_dict_to_kohya(peft_sd).items()}
    kohya_path = dest / f"{name}-kohya.safetensors"
    save_file(kohya_sd, kohya_path, metadata={"ss_network_dim": str(rank),
                                              "ss_network_alpha": str(rank)})
    return {"diffusers": dest / diffusers_name, "kohya": kohya_path}


def write_header_only_safetensors(path: Path, shapes: dict[str, list[int]],
                                  metadata: dict[str, str] | None = None) -> Path:
    """A syntactically valid safetensors file with the given F16 tensor shapes, for probe
    tests of LoRAs far too big to create (e.g. SDXL-shaped): the data is zero-filled, so
    the file is only as big as the tensors (keep them small, or few)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def sdxl_kohya_shapes(rank: int = 4) -> dict[str, list[int]]:
    """Key names and shapes of a (heavily truncated) SDXL kohya LoRA: one cross-attention
    block (context width 2048) and one layer of each text encoder."""
    unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2"
    return {
        f"{unet}_to_k.lora_down.weight": [rank, 2048],
        f"{unet}_to_k.lora_up.weight": [640, rank],
        f"{unet}_to_k.alpha": [],
        f"{unet}_to_q.lora_down.weight": [rank, 640],
        f"{unet}_to_q.lora_up.weight": [640, rank],
        f"{unet}_to_q.alpha": [],
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [rank, 768],
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": [768, rank],
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [rank, 1280],
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": [1280, rank],
    }
