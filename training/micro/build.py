"""The untrained base folder of the micro model, and its architecture.

A complete ``StableDiffusionPipeline`` diffusers folder: our tokenizer, our trained VAE,
and a UNet and text encoder freshly initialised from a seed, which
:func:`training.trainer.train` then trains from scratch.
"""

from __future__ import annotations

from pathlib import Path

from training.micro.shapes import vocabulary
from training.micro.tokenizer import MAX_LENGTH, write_micro_tokenizer

TEXT_HIDDEN = 64
UNET_CONFIG = dict(
    in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
    cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, norm_num_groups=16,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
# DDPM's linear schedule: at t=T almost no signal is left (alpha_bar 4e-5), so sampling
# from pure noise matches training and flat background colours come from the prompt.
# v-prediction: at high noise the target is (nearly) the clean picture, which only the
# prompt can tell, so the text conditioning gets a strong gradient from the start (with
# epsilon prediction it gets almost none there, and hardly learned in our CPU budget).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
    prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=0,
    timestep_spacing="trailing",
    skip_prk_steps=True,
)


def build_base(dest: Path, vae_dir: Path, *, seed: int = 0, resolution: int = 64) -> Path:
    """Write the base pipeline (random UNet + text encoder, trained VAE) into ``dest``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dest = Path(dest)
    tok_dir = write_micro_tokenizer(dest / "tokenizer", vocabulary())
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=resolution // scale, **UNET_CONFIG)
    torch.manual_seed(seed + 1)
    vocab = len(tokenizer)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_HIDDEN * 4,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=MAX_LENGTH,
        projection_dim=TEXT_HIDDEN, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(**SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(dest, safe_serialization=True)
    return dest


def parameter_counts(folder: Path) -> dict[str, int]:
    """Parameters per component of a saved pipeline folder (from the safetensors headers)."""
    import json
    import struct

    counts: dict[str, int] = {}
    for part in ("unet", "vae", "text_encoder"):
        total = 0
        for file in sorted((Path(folder) / part).glob("*.safetensors")):
            with file.open("rb") as handle:
                header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
            for name, info in header.items():
                if name != "__metadata__":
                    n = 1
                    for dim in info["shape"]:
                        n *= dim
                    total += n
        counts[part] = total
    return counts


def pipeline_from_checkpoint(base: Path, checkpoint: Path, dest: Path) -> Path:
    """A complete pipeline folder from ``base`` plus a trainer checkpoint's trained weights
    (``unet.trainable.safetensors``, ``text_encoder.trainable.safetensors``): for looking
    at a run before it ends, or shipping an earlier step."""
    import shutil

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    dest = Path(dest)
    if not (Path(checkpoint) / "unet.trainable.safetensors").is_file():
        raise FileNotFoundError(f"{checkpoint} has no unet.trainable.safetensors")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(base, dest)
    for name, cls in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel)):
        weights = Path(checkpoint) / f"{name}.trainable.safetensors"
        if not weights.exists():
            continue
        model = cls.from_pretrained(dest / name)
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
        if unexpected:
            raise ValueError(f"{weights}: unexpected keys {unexpected[:3]}")
        shutil.rmtree(dest / name)
        model.save_pretrained(dest / name, safe_serialization=True)
    return dest
