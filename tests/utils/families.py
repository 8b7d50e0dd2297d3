"""Tiny seeded random SD1.5-, SD2.1- and SDXL-shaped pipelines for tests.

Each builder makes its components from configs in-process (sizes like diffusers' own
tests' ``get_dummy_components``), draws weights from ``seed`` and saves an ordinary
diffusers folder with safetensors weights. Tokenizers are byte-level CLIP tokenizers
written on disk, so nothing is downloaded. The tiny models carry the signals that
``app.pipelines.families.probe_diffusers_folder`` uses to tell families apart:

* SD2.1: OpenCLIP-style text encoder (``hidden_act="gelu"``, ``projection_dim`` unlike
  ``hidden_size``, tokenizer padding with ``"!"``), UNet with ``use_linear_projection``,
  per-level ``attention_head_dim`` and ``upcast_attention``, and the shipped SD2.1 DDIM
  scheduler config (``v_prediction``; the inpaint variant is epsilon like the real one).
* SDXL: two text encoders (``CLIPTextModel`` + ``CLIPTextModelWithProjection``, of
  different widths like the real 768/1280) and tokenizers, UNet with
  ``addition_embed_type="text_time"``; ``refiner=True`` gives the refiner layout
  (OpenCLIP encoder only, ``requires_aesthetics_score``).

Every VAE downsamples by 8 like the real ones; SD2.1/SDXL tiny models are native 64 px.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from app.pipelines import embedded
from app.pipelines.families import FAMILIES
from app.pipelines.single_file.clip_tokenizer import EOS_TOKEN, write_clip_tokenizer

SAMPLE_SIZE = 8  # latent size: 64 px native with the x8 VAE
TIME_EMBED_DIM = 8  # SDXL addition_time_embed_dim


def build_tiny_sd15(dest: Path, seed: int, inpaint: bool = False) -> Path:
    """The embedded model's builder, as an ordinary (unmarked) model."""
    embedded.build_tiny_sd15(dest, seed=seed, inpaint=inpaint)
    (dest / "bildwerk_embedded.json").unlink(missing_ok=True)
    return dest


def _tokenizer(tmp: Path, name: str, pad_token: str) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp / name, [], pad_token=pad_token))


def _text_config(tokenizer: CLIPTokenizer, hidden: int, projection: int, act: str
                 ) -> CLIPTextConfig:
    vocab = len(tokenizer)
    return CLIPTextConfig(
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=vocab, max_position_embeddings=77, projection_dim=projection, hidden_act=act)


def _vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=SAMPLE_SIZE * 8)


def _save(pipe, dest: Path, tmp: Path) -> Path:
    out = tmp / "pipe"
    pipe.save_pretrained(out, safe_serialization=True)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(out), dest)
    return dest


def build_tiny_sd21(dest: Path, seed: int, inpaint: bool = False) -> Path:
    """A tiny SD2.1-shaped pipeline (v-prediction base, epsilon inpaint) in ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp), "tok", pad_token="!")
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=SAMPLE_SIZE, in_channels=9 if inpaint else 4, out_channels=4,
            block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
            attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
            norm_num_groups=16, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae = _vae(seed + 1)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(_text_config(tokenizer, 32, 16, "gelu"))
        scheduler = DDIMScheduler.from_pretrained(FAMILIES["sd21"].config_dir(),
                                                  subfolder="scheduler")
        if inpaint:  # like stabilityai/stable-diffusion-2-inpainting
            scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="epsilon")
        cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                   requires_safety_checker=False)
        return _save(pipe, dest, Path(tmp))


def build_tiny_sdxl(dest: Path, seed: int, inpaint: bool = False, refiner: bool = False
                    ) -> Path:
    """A tiny SDXL-shaped pipeline in ``dest`` (``inpaint``: 9-channel UNet;
    ``refiner``: the img2img refiner layout with the OpenCLIP encoder only)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = None if refiner else _tokenizer(Path(tmp), "tok", pad_token=EOS_TOKEN)
        tokenizer_2 = _tokenizer(Path(tmp), "tok2", pad_token="!")
        hidden_1, hidden_2, projection = 32, 48, 32
        cross = hidden_2 if refiner else hidden_1 + hidden_2
        time_ids = 5 if refiner else 6  # refiner: aesthetic score replaces the target size
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=SAMPLE_SIZE, in_channels=9 if inpaint else 4, out_channels=4,
            block_out_channels=(32, 64), layers_per_block=2, attention_head_dim=(2, 4),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
            transformer_layers_per_block=(1, 2), cross_attention_dim=cross,
            projection_class_embeddings_input_dim=projection + time_ids * TIME_EMBED_DIM)
        vae = _vae(seed + 1)
        torch.manual_seed(seed + 2)
        text_encoder = None if refiner else CLIPTextModel(
            _text_config(tokenizer, hidden_1, hidden_1, "quick_gelu"))
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(
            _text_config(tokenizer_2, hidden_2, projection, "gelu"))
        scheduler = EulerDiscreteScheduler.from_pretrained(FAMILIES["sdxl"].config_dir(),
                                                           subfolder="scheduler")
        parts = dict(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                     scheduler=scheduler)
        if refiner:
            pipe = StableDiffusionXLImg2ImgPipeline(**parts, requires_aesthetics_score=True,
                                                    force_zeros_for_empty_prompt=False)
        elif inpaint:
            pipe = StableDiffusionXLInpaintPipeline(**parts)
        else:
            pipe = StableDiffusionXLPipeline(**parts)
        return _save(pipe, dest, Path(tmp))
