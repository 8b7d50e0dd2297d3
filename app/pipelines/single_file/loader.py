"""Load single-file (LDM layout) SD1.x, SD2.x and SDXL checkpoints fully offline.

``config_dir`` is a diffusers folder with configs and tokenizer files but no weights:
a shipped one (``configs/sd15``, ``configs/sd21``, ``configs/sdxl``) or a user's sidecar.

Shared tokenizer files: the CLIP BPE vocabulary (``vocab.json`` 0.9 MB, ``merges.txt``
0.5 MB) is identical for SD1.x, SD2.x and both SDXL tokenizers; only the special-token
settings differ (OpenCLIP pads with ``"!"``). So it is shipped once, in
``configs/sd15/tokenizer``, and the other folders ship only their small
``tokenizer_config.json``/``special_tokens_map.json``. When a config folder has a
tokenizer folder without the BPE files, :func:`complete_config_dir` assembles a
temporary copy of the folder (configs are a few KB) with the shared files added. This
avoids both duplicated multi-MB files and symlinks, which wheels and zip checkouts
do not preserve.

``.ckpt`` files are checked with ``torch.load(weights_only=True)`` before diffusers
sees them, so a pickle that would run code is refused (:class:`UnsafeCheckpointError`).
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline

from app.pipelines.single_file.checkpoint import (
    PICKLE_SUFFIXES,
    UnsafeCheckpointError,
    load_pickle_state_dict,
    read_tensor_shapes,
)
from app.pipelines.single_file.ldm_format import UNET_PREFIX

__all__ = ["UnsafeCheckpointError", "complete_config_dir", "load_single_file"]

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
SD15_CONFIG_DIR = CONFIGS_DIR / "sd15"
SHARED_TOKENIZER_DIR = SD15_CONFIG_DIR / "tokenizer"
SHARED_TOKENIZER_FILES = ("vocab.json", "merges.txt")
_UNET_CONV_IN = f"{UNET_PREFIX}input_blocks.0.0.weight"


def unet_in_channels(path: Path | str) -> int | None:
    """The UNet input channel count (4 normal, 9 inpainting) from the checkpoint's header
    (``.safetensors``) or weights-only unpickling (``.ckpt``)."""
    shape = read_tensor_shapes(path).get(_UNET_CONV_IN)
    return int(shape[1]) if shape else None


def _incomplete_tokenizers(config_dir: Path) -> list[Path]:
    return [d for d in sorted(config_dir.glob("tokenizer*"))
            if (d / "tokenizer_config.json").is_file()
            and not all((d / name).is_file() for name in SHARED_TOKENIZER_FILES)]


@contextlib.contextmanager
def complete_config_dir(config_dir: Path | str) -> Iterator[Path]:
    """Yield ``config_dir`` itself, or a temporary copy with the shared CLIP BPE files
    added to tokenizer folders that lack them (removed again on exit)."""
    config_dir = Path(config_dir)
    if not _incomplete_tokenizers(config_dir):
        yield config_dir
        return
    with tempfile.TemporaryDirectory(prefix="bildwerk-config-") as tmp:
        target = Path(tmp) / config_dir.name
        shutil.copytree(config_dir, target)
        for tokenizer_dir in _incomplete_tokenizers(target):
            for name in SHARED_TOKENIZER_FILES:
                if not (tokenizer_dir / name).is_file():
                    shutil.copyfile(SHARED_TOKENIZER_DIR / name, tokenizer_dir / name)
        yield target


def load_single_file(
    path: Path | str,
    config_dir: Path | str = SD15_CONFIG_DIR,
    torch_dtype: torch.dtype | None = None,
    pipeline_cls: type[DiffusionPipeline] = StableDiffusionPipeline,
) -> DiffusionPipeline:
    """Build a pipeline from one LDM-layout ``.safetensors``/``.ckpt`` without hub access.

    The UNet's ``in_channels`` is taken from the checkpoint, so 9-channel inpainting
    files load against the same config folder (use an inpaint ``pipeline_cls`` to run
    them). The safety checker is never loaded.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        load_pickle_state_dict(path)  # raises UnsafeCheckpointError; diffusers also uses
        # weights_only=True, this check keeps the guarantee independent of its version.
    extra: dict = {}
    in_channels = unet_in_channels(path)
    if in_channels is not None:
        # Legacy kwarg that diffusers forwards to the UNet only (the VAE also has `in_channels`).
        extra["num_in_channels"] = in_channels
    accepted = inspect.signature(pipeline_cls.__init__).parameters
    if "safety_checker" in accepted:
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with complete_config_dir(config_dir) as config:
        return pipeline_cls.from_single_file(
            str(path), config=str(config), local_files_only=True, dtype=torch_dtype, **extra)
