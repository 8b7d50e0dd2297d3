"""Write a diffusers SD1.x/SD2.x/SDXL pipeline as one original-layout (LDM) checkpoint.

This is the inverse of the key conversion that diffusers' ``from_single_file``
performs (``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint`` and
``convert_ldm_clip_checkpoint`` in ``diffusers.loaders.single_file_utils``). The
output uses the CompVis key layout found in CivitAI-style ``.safetensors`` files:

* ``model.diffusion_model.*``          UNet (``input_blocks``/``middle_block``/``output_blocks``)
* ``first_stage_model.*``              VAE (``encoder.down``/``decoder.up``/``mid.attn_1``)
* ``cond_stage_model.transformer.*``   SD1.x CLIP text encoder (``text_model.*``)
* ``cond_stage_model.model.*``         SD2.x OpenCLIP text encoder (``transformer.resblocks``,
  fused ``attn.in_proj_weight``)
* ``conditioner.embedders.0.transformer.*`` / ``conditioner.embedders.1.model.*``  SDXL's
  CLIP ViT-L and OpenCLIP bigG (``conditioner.embedders.0.model.*`` alone for the refiner);
  SDXL's size/crop embedding is ``model.diffusion_model.label_emb.0``

It works for any SD1.x/SD2.x/SDXL-shaped pipeline, including tiny random test models
and 9-channel inpainting UNets. SD2 is recognised by its OpenCLIP text encoder
(``hidden_act == "gelu"``), the same rule the probe uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."

_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
_UNET_RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_TOP_LEVEL = {
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "decoder.conv_norm_out": "decoder.norm_out",
}
_VAE_ATTENTION_LAYERS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _split_param(key: str) -> tuple[str, str]:
    """Split ``"a.b.weight"`` into ``("a.b", "weight")``."""
    module, _, param = key.rpartition(".")
    return module, param


def _unet_resnet(ldm_block: str, suffix: str) -> str:
    """Map a diffusers ResnetBlock2D parameter (``norm1.weight``...) under ``ldm_block``."""
    layer, param = _split_param(suffix)
    return f"{ldm_block}.{_UNET_RESNET_LAYERS[layer]}.{param}"


def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """Return the LDM key (without prefix) for a diffusers ``UNet2DConditionModel`` key."""
    per_block = config["layers_per_block"] + 1  # LDM slots per level: resnets (+ down/upsampler)
    module, param = _split_param(key)
    if module in _UNET_TOP_LEVEL:
        return f"{_UNET_TOP_LEVEL[module]}.{param}"

    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = f"input_blocks.{1 + block * per_block + layer}"
        return _unet_resnet(f"{slot}.0", rest) if kind == "resnets" else f"{slot}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        slot = 1 + int(m[1]) * per_block + config["layers_per_block"]
        return f"input_blocks.{slot}.0.op.{m[2]}"

    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return _unet_resnet(f"middle_block.{2 * int(m[1])}", m[2])
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"

    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = f"output_blocks.{block * per_block + layer}"
        return _unet_resnet(f"{slot}.0", rest) if kind == "resnets" else f"{slot}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        block = int(m[1])
        has_attention = config["up_block_types"][block].startswith("CrossAttn")
        slot = block * per_block + config["layers_per_block"]
        return f"output_blocks.{slot}.{2 if has_attention else 1}.conv.{m[2]}"

    raise KeyError(f"no LDM mapping for UNet key {key!r}")


def vae_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """Return the LDM key (without prefix) for a diffusers ``AutoencoderKL`` key."""
    module, param = _split_param(key)
    if module in _VAE_TOP_LEVEL:
        return f"{_VAE_TOP_LEVEL[module]}.{param}"

    def resnet(ldm_block: str, rest: str) -> str:
        return f"{ldm_block}.{rest.replace('conv_shortcut', 'nin_shortcut')}"

    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return resnet(f"encoder.down.{m[1]}.block.{m[2]}", m[3])
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"

    # diffusers counts decoder up blocks from the bottom, LDM from the top.
    last_up = len(config["up_block_types"]) - 1
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return resnet(f"decoder.up.{last_up - int(m[1])}.block.{m[2]}", m[3])
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{last_up - int(m[1])}.upsample.conv.{m[2]}"

    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return resnet(f"{m[1]}.mid.block_{int(m[2]) + 1}", m[3])
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(\w+)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION_LAYERS[m[2]]}.{m[3]}"

    raise KeyError(f"no LDM mapping for VAE key {key!r}")


def clip_key_to_ldm(key: str) -> str:
    """Return the LDM key (without prefix) for a transformers ``CLIPTextModel`` key.

    transformers >= 5.6 dropped the ``text_model.`` level; LDM files always have it.
    """
    return key if key.startswith("text_model.") else f"text_model.{key}"


def _is_vae_attention_linear(ldm_key: str, tensor: torch.Tensor) -> bool:
    """LDM stores VAE mid-block q/k/v/proj_out as 1x1 convolutions."""
    return ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and tensor.ndim == 2


def _add_component(
    out: dict[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    prefix: str,
    key_fn: Callable[[str], str],
) -> None:
    for key, tensor in state_dict.items():
        ldm_key = prefix + key_fn(key)
        if ldm_key in out:
            raise ValueError(f"two parameters map to {ldm_key!r}")
        if _is_vae_attention_linear(ldm_key, tensor):
            tensor = tensor[:, :, None, None]
        out[ldm_key] = tensor.detach().to("cpu").contiguous().clone()


_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OPEN_CLIP_TOP_LEVEL = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a transformers CLIP text model's weights in OpenCLIP layout (no prefix).

    Inverse of diffusers' ``convert_open_clip_checkpoint``: q/k/v projections are fused
    into ``attn.in_proj_weight``/``in_proj_bias`` and ``text_projection`` is stored
    transposed, as an OpenCLIP ``[width, embed_dim]`` matrix.
    """
    source = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if key in _OPEN_CLIP_TOP_LEVEL:
            out[_OPEN_CLIP_TOP_LEVEL[key]] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.T
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)", key):
            if m[2] == "q":
                fused = [source[f"encoder.layers.{m[1]}.self_attn.{p}_proj.{m[3]}"] for p in "qkv"]
                out[f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}"] = torch.cat(fused)
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(\w+)", key):
            out[f"transformer.resblocks.{m[1]}.{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = tensor
        else:
            raise KeyError(f"no OpenCLIP mapping for text encoder key {key!r}")
    return out


def _add_clip(out: dict[str, torch.Tensor], encoder: torch.nn.Module, prefix: str) -> None:
    """OpenAI CLIP layout, with the position ids real SD1.x/SDXL files carry."""
    _add_component(out, encoder.state_dict(), prefix, clip_key_to_ldm)
    positions = encoder.config.max_position_embeddings
    out[f"{prefix}text_model.embeddings.position_ids"] = torch.arange(
        positions, dtype=torch.int64
    )[None]


def _add_open_clip(out: dict[str, torch.Tensor], encoder: torch.nn.Module, prefix: str) -> None:
    _add_component(out, open_clip_state_dict(encoder.state_dict()), prefix, lambda k: k)


def pipeline_to_ldm_state_dict(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """Return the pipeline's UNet, VAE and text encoder(s) weights under LDM keys."""
    out: dict[str, torch.Tensor] = {}
    unet_config, vae_config = pipe.unet.config, pipe.vae.config
    _add_component(
        out, pipe.unet.state_dict(), UNET_PREFIX, lambda k: unet_key_to_ldm(k, unet_config)
    )
    _add_component(out, pipe.vae.state_dict(), VAE_PREFIX, lambda k: vae_key_to_ldm(k, vae_config))
    text_encoder = getattr(pipe, "text_encoder", None)
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    if text_encoder_2 is not None:  # SDXL base (CLIP + OpenCLIP) or refiner (OpenCLIP only)
        if text_encoder is not None:
            _add_clip(out, text_encoder, SDXL_CLIP_PREFIX)
            _add_open_clip(out, text_encoder_2, SDXL_OPEN_CLIP_PREFIX)
        else:
            _add_open_clip(out, text_encoder_2, SDXL_REFINER_OPEN_CLIP_PREFIX)
    elif text_encoder.config.hidden_act == "gelu":  # SD2.x: OpenCLIP ViT-H
        _add_open_clip(out, text_encoder, OPEN_CLIP_PREFIX)
    else:
        _add_clip(out, text_encoder, CLIP_PREFIX)
    return out


def save_as_ldm_checkpoint(pipe: DiffusionPipeline, path: Path | str) -> Path:
    """Save an SD1.x/SD2.x/SDXL-shaped pipeline as one LDM-layout ``.safetensors`` file.

    Tensors keep the pipeline's dtype. Returns the written path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(pipeline_to_ldm_state_dict(pipe), str(target), metadata={"format": "pt"})
    return target
