"""What a training run is asked to do (:class:`TrainConfig`), what it gives back
(:class:`TrainResult`), and the checks that refuse an unusable configuration before any
model is loaded (:func:`checked_config`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class TrainConfig:
    method: Literal["lora", "full"]
    base: Path                 # a diffusers pipeline folder (SD1.x/SD2.x layout)
    dataset: Path              # imagefolder: images + metadata.jsonl/.csv
    output: Path               # lora: a .safetensors file; full: a diffusers folder
    task: Literal["txt2img", "inpaint"] = "txt2img"
    resolution: int = 512
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 100  # optimizer steps
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # diffusers.optimization.get_scheduler names
    lr_warmup_steps: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    rank: int = 4                     # lora
    lora_alpha: int | None = None     # default = rank
    train_text_encoder: bool = False
    checkpointing_steps: int = 0      # 0 = off
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # "latest" or a path
    validation_prompts: list[str] = field(default_factory=list)
    validation_steps: int = 0
    validation_inference_steps: int = 20
    noise_offset: float = 0.0
    snr_gamma: float | None = None
    dataloader_num_workers: int = 0
    work_dir: Path | None = None      # default: <output>.work
    log_every: int = 1
    progress: bool = True
    from_scratch: bool = False        # full only; recorded in the log
    center_crop: bool = True
    random_flip: bool = False
    max_grad_norm: float = 1.0
    adam_weight_decay: float = 1e-2


@dataclass
class TrainResult:
    output: Path
    steps: int
    final_loss: float
    seconds: float
    log_path: Path
    validation_dir: Path | None


def default_work_dir(output: Path) -> Path:
    """``<output>.work`` next to the output (file or folder)."""
    output = Path(output)
    return output.with_name(output.name + ".work")


def config_dict(cfg: TrainConfig) -> dict:
    """``cfg`` as JSON-ready values (paths as strings), for the log's start line."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def checked_config(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` with paths expanded and the work dir filled in; ``ValueError``
    for a configuration no run can use."""
    import torch

    cfg = dataclasses.replace(cfg)
    for name in ("base", "dataset", "output"):
        setattr(cfg, name, Path(getattr(cfg, name)).expanduser())
    cfg.work_dir = Path(cfg.work_dir).expanduser() if cfg.work_dir else \
        default_work_dir(cfg.output)
    cfg.validation_prompts = list(cfg.validation_prompts or [])

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    need(cfg.method in ("lora", "full"), f"method must be 'lora' or 'full', not {cfg.method!r}")
    need(cfg.task in ("txt2img", "inpaint"),
         f"task must be 'txt2img' or 'inpaint', not {cfg.task!r}")
    need(cfg.mixed_precision in ("no", "fp16", "bf16"),
         f"mixed_precision must be 'no', 'fp16' or 'bf16', not {cfg.mixed_precision!r}")
    for name in ("resolution", "train_batch_size", "gradient_accumulation_steps",
                 "max_train_steps", "rank", "log_every", "validation_inference_steps"):
        need(int(getattr(cfg, name)) >= 1, f"{name} must be at least 1")
    for name in ("lr_warmup_steps", "checkpointing_steps", "validation_steps",
                 "dataloader_num_workers"):
        need(int(getattr(cfg, name)) >= 0, f"{name} must not be negative")
    for name in ("learning_rate", "noise_offset", "max_grad_norm", "adam_weight_decay",
                 "snr_gamma"):
        value = getattr(cfg, name)
        need(value is None or math.isfinite(value), f"{name} must be a finite number")
    need(cfg.learning_rate > 0, "learning_rate must be positive")
    need(cfg.lora_alpha is None or cfg.lora_alpha > 0, "lora_alpha must be positive")
    need(cfg.checkpoints_total_limit is None or cfg.checkpoints_total_limit >= 1,
         "checkpoints_total_limit must be at least 1 (or None: keep all)")
    need(cfg.snr_gamma is None or cfg.snr_gamma > 0, "snr_gamma must be positive")
    need(cfg.noise_offset >= 0, "noise_offset must not be negative")
    need(not (cfg.from_scratch and cfg.method == "lora"),
         "from_scratch is for method='full' (a LoRA needs meaningful base weights)")
    if cfg.method == "lora":
        need(cfg.output.suffix == ".safetensors",
             f"a LoRA is written as one .safetensors file; output {cfg.output} is not")
    else:
        need(not cfg.output.is_file(), f"output {cfg.output} is a file; a full fine-tune "
             "writes a diffusers folder")
    need(cfg.base.resolve() != cfg.output.resolve(), "output must not be the base model")
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision='fp16' needs a CUDA GPU (float16 autocast and loss "
                         "scaling); on the CPU use 'no' (or 'bf16')")
    return cfg


__all__ = ["TrainConfig", "TrainResult", "checked_config", "config_dict", "default_work_dir"]
