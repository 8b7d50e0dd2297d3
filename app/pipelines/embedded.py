"""The embedded default model: a tiny Stable-Diffusion-shaped pipeline with seeded
random weights, generated on first start so the server runs with an empty models dir.

It is saved as an ordinary diffusers folder and loaded through the normal registry path.
Its pictures are abstract: the weights are random, not trained.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

EMBEDDED_DESCRIPTION = (
    "Embedded tiny model with seeded random weights, built on first start so the server "
    "runs out of the box. Its pictures are abstract patterns, not what the prompt describes. "
    "Put real checkpoints into BILDWERK_MODELS_DIR for real pictures."
)
EMBEDDED_SEED = 20261121
_MARKER = "bildwerk_embedded.json"


def build_tiny_sd15(dest: Path, *, seed: int = EMBEDDED_SEED, inpaint: bool = False,
                    sample_size: int = 32) -> Path:
    """Build a tiny SD1.5-shaped pipeline with weights drawn from ``seed`` into ``dest``.

    ``inpaint=True`` gives the 9-channel inpaint variant. The VAE downsamples by 8 like the
    real one, so the native resolution is ``sample_size * 8``.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from app.pipelines.single_file.clip_tokenizer import write_clip_tokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=dest.parent))
    try:
        # A byte-level CLIP tokenizer: every byte is a token, no merges.
        write_clip_tokenizer(tmp / "_tok", merges=[])
        tokenizer = CLIPTokenizer.from_pretrained(tmp / "_tok")
        vocab_size = len(tokenizer)
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=9 if inpaint else 4, out_channels=4,
            block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
            attention_head_dim=4, norm_num_groups=16,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
            block_out_channels=(8, 16, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=sample_size * 8)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=vocab_size, max_position_embeddings=77, projection_dim=32))
        scheduler = PNDMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
            set_alpha_to_one=False)
        cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                   requires_safety_checker=False)
        shutil.rmtree(tmp / "_tok")
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / _MARKER).write_text(json.dumps({"seed": seed, "inpaint": inpaint,
                                               "description": EMBEDDED_DESCRIPTION}))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def ensure_embedded_model(dest: Path) -> Path:
    """Build the embedded model into ``dest`` unless a complete one is already there."""
    if (dest / _MARKER).exists() and (dest / "model_index.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    return build_tiny_sd15(dest)


def is_embedded(folder: Path) -> bool:
    return (folder / _MARKER).exists()
