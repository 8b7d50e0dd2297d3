"""The embedded default model, installed on first start so the server runs with an empty
models dir.

By default it is ``bildwerk-micro``: our own tiny Stable Diffusion (VAE, UNet, text encoder
and tokenizer), trained from scratch on procedural scenes of coloured shapes on coloured
backgrounds. It ships in ``app/pipelines/micro/bildwerk-micro`` (retrain it with
``python -m training.micro``, see its README.md) and is copied into the data dir.

``bildwerk-tiny`` is the same kind of pipeline with seeded random weights, built on the
fly: the test suite uses it, and it is the fallback when the shipped files are missing.
Either way the model is an ordinary diffusers folder loaded through the normal registry
path.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from app.files import replacing_folder

log = logging.getLogger(__name__)

MICRO_ID = "bildwerk-micro"
MICRO_SOURCE = Path(__file__).resolve().parent / "micro" / MICRO_ID
MICRO_DESCRIPTION = (
    "Embedded micro model (bildwerk-micro, 1.9M parameters), trained from scratch by "
    "Bildwerk on procedural scenes so the server runs out of the box. It draws one "
    "coloured shape on a plain coloured background at 64x64 px: ask for "
    "'a {colour} {shape} on a {colour} background' with red, green, blue, yellow, orange, "
    "purple, white or black and a circle, square or triangle. Anything else also comes out "
    "as a shape on a background. Put real checkpoints into BILDWERK_MODELS_DIR for real "
    "pictures."
)
TINY_DESCRIPTION = (
    "Embedded tiny model with seeded random weights, built on first start so the server "
    "runs out of the box. Its pictures are abstract patterns, not what the prompt describes. "
    "Put real checkpoints into BILDWERK_MODELS_DIR for real pictures."
)
EMBEDDED_DESCRIPTION = MICRO_DESCRIPTION
EMBEDDED_SEED = 20261121
_MARKER = "bildwerk_embedded.json"
_MICRO_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler",
                "README.md", "training.json")


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

    with replacing_folder(dest) as tmp:
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
                                               "description": TINY_DESCRIPTION}))
    return dest


def micro_available(source: Path = MICRO_SOURCE) -> bool:
    """Whether the shipped micro model is complete (all its weights present)."""
    return (source / "model_index.json").is_file() and all(
        any((source / part).glob("*.safetensors")) for part in ("unet", "vae", "text_encoder"))


def install_micro(dest: Path, source: Path = MICRO_SOURCE) -> Path:
    """Copy the shipped micro model into ``dest`` (atomically: build beside, rename)."""
    with replacing_folder(dest) as tmp:
        for part in _MICRO_PARTS:
            src = source / part
            if src.is_dir():
                shutil.copytree(src, tmp / part)
            elif src.is_file():
                shutil.copy2(src, tmp / part)
        (tmp / _MARKER).write_text(json.dumps({"model": MICRO_ID, "source": str(source),
                                               "description": MICRO_DESCRIPTION}))
    return dest


def ensure_embedded_model(dest: Path) -> Path:
    """Install the embedded model into ``dest`` unless a complete one is already there.

    ``dest``'s name picks the model: ``bildwerk-tiny`` builds the random tiny model; any
    other name (the default ``bildwerk-micro``) copies the shipped micro model, or builds
    the tiny one, with a warning, when the shipped files are missing.
    """
    if (dest / _MARKER).exists() and (dest / "model_index.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.name != "bildwerk-tiny":
        if micro_available():
            return install_micro(dest)
        log.warning("the shipped micro model is missing (%s); building the random tiny "
                    "model instead: its pictures are abstract", MICRO_SOURCE)
    return build_tiny_sd15(dest)


def is_embedded(folder: Path) -> bool:
    return (folder / _MARKER).exists()


def embedded_description(folder: Path) -> str:
    """The description of an installed embedded model (micro or random tiny)."""
    try:
        description = json.loads((folder / _MARKER).read_text()).get("description")
    except (OSError, ValueError):
        description = None
    return description or EMBEDDED_DESCRIPTION
