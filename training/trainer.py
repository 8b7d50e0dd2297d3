"""Trainers for Stable-Diffusion-shaped models (SD1.x/SD2.x): LoRA and full fine-tunes,
for txt2img and inpaint (9-channel UNet) models, on CUDA or the CPU.

The recipe follows diffusers' ``examples/text_to_image/train_text_to_image.py`` and
``train_text_to_image_lora.py`` (and the SD inpainting recipe for 9-channel UNets):

* images -> VAE latents (sampled from the latent distribution, times the VAE's scaling
  factor), Gaussian noise (optionally with an offset), timesteps uniform over the
  training schedule, ``DDPMScheduler.add_noise``;
* the UNet predicts the noise (``epsilon``) or the velocity (``v_prediction``), as the
  base's scheduler config says; MSE loss, optionally Min-SNR weighted (``snr_gamma``);
* inpaint: the UNet input is ``[noisy latents, mask at latent size, latents of the masked
  image]`` (9 channels); masks come from the dataset (white = repaint) or are random
  rectangles;
* LoRA: PEFT adapters (``init_lora_weights="gaussian"``) on the UNet's attention
  projections and optionally the text encoder's; only they train. The result is one
  ``.safetensors`` in diffusers' LoRA layout, which ``pipe.load_lora_weights`` (and so the
  server's LoRA catalogue under ``<models>/loras/``) loads;
* full: the UNet (and optionally the text encoder) train; the result is a complete
  diffusers folder the registry discovers.

``accelerate`` gives mixed precision (fp16/bf16 autocast and loss scaling on CUDA),
gradient accumulation, and ``save_state``/``load_state`` for checkpoints (with hooks that
store only the trainable weights).

Resuming is exact: every random draw of a micro batch (its examples, crops, flips, masks,
latent samples, noise, timesteps) is a pure function of ``(seed, micro batch number)``, so
a run resumed from ``checkpoint-N`` computes the same updates as the run that wrote it.

Speed for long runs on small models (the CPU micro model trains for thousands of steps):
captions are tokenized once; when the text encoder is frozen its outputs are computed once
per caption; when the image pipeline is deterministic (centre crops; flips are cached as
both orientations) the VAE's latent distribution of every image is computed once, so a
step costs one UNet (+ text encoder) forward and backward. Validation pipelines are built
once and reuse the training modules. ``torch.set_num_threads`` is left alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from app.files import replacing_folder
from training._data import (
    BatchPlan,
    Example,
    ImageDataset,
    Transform,
    collate,
    derived_seed,
    flip_of,
    random_rect_mask,
    read_examples,
)

UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LOG_NAME = "train_log.jsonl"
STATE_NAME = "trainer_state.json"
# Caches of VAE latents and text-encoder outputs stay below this (MiB, per cache).
CACHE_BUDGET_MB = int(os.environ.get("BILDWERK_TRAIN_CACHE_MB", "2048"))
_ENCODE_CHUNK = 16  # images per VAE call when caching (fixed: results never depend on order)
_TEXT_CHUNK = 64


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


# -- configuration checks -----------------------------------------------------------------


def _checked(cfg: TrainConfig) -> TrainConfig:
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


# -- loading the base ---------------------------------------------------------------------


@dataclass
class _Parts:
    index: dict
    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler_config: dict


def _model_index(base: Path) -> dict:
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


def _load_parts(base: Path) -> _Parts:
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    index = _model_index(base)
    verbosity = tlogging.get_verbosity(), dlogging.get_verbosity()
    tlogging.set_verbosity_error()
    dlogging.set_verbosity_error()
    try:
        tokenizer = _component(base, index, "tokenizer")
        text_encoder = _moved(_component(base, index, "text_encoder"), dtype=torch.float32)
        vae = _moved(_component(base, index, "vae"), dtype=torch.float32)
        unet = _moved(_component(base, index, "unet"), dtype=torch.float32)
    finally:
        tlogging.set_verbosity(verbosity[0])
        dlogging.set_verbosity(verbosity[1])
    scheduler_config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    return _Parts(index, tokenizer, text_encoder, vae, unet, scheduler_config)


def _moved(module: torch.nn.Module, device: torch.device | None = None,
           dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``module.to(device, dtype)``, casting only when the dtype differs (diffusers warns
    about every cast of a model with fp32-pinned modules)."""
    param = next(module.parameters())
    if dtype is not None and param.dtype != dtype:
        module.to(dtype=dtype)
    if device is not None and param.device != torch.device(device):
        module.to(device)
    return module


# -- accelerate -----------------------------------------------------------------------------


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # A process may train several times (tests, notebooks) with different precisions;
    # accelerate keeps its state in process-wide singletons.
    try:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    except AttributeError:  # pragma: no cover - older/newer accelerate
        pass
    return Accelerator(mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                       cpu=not torch.cuda.is_available())


# -- the run --------------------------------------------------------------------------------


class _Log:
    def __init__(self, path: Path, append: bool, on_step: Callable[[dict], None] | None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = path.open("a" if append else "w", encoding="utf-8")
        self._on_step = on_step

    def write(self, entry: dict) -> None:
        # Strict JSON: a non-finite loss (a diverged run) is written as null.
        entry = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in entry.items()}
        self._fh.write(json.dumps(entry, default=str, allow_nan=False) + "\n")
        self._fh.flush()
        if self._on_step is not None:
            self._on_step(entry)

    def close(self) -> None:
        self._fh.close()


def _config_dict(cfg: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def train(cfg: TrainConfig, on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LoRA or fine-tune a model as ``cfg`` says; see the module docstring.

    Writes ``cfg.output`` (a LoRA ``.safetensors`` or a diffusers folder) and, under the
    work dir, ``train_log.jsonl`` (one JSON object per line: an ``{"event": "start"}``
    line, a step line every ``log_every`` optimizer steps, an ``{"event": "done"}`` line;
    ``on_step`` gets each of them), ``checkpoints/checkpoint-<step>`` and
    ``validation/step-<n>/<i>.png``. Raises ``ValueError`` for unusable configurations.
    """
    started = time.perf_counter()
    cfg = _checked(cfg)
    run = _Run(cfg, on_step)
    try:
        return run.execute(started)
    finally:
        run.close()


class _Run:
    """One training run (state shared by the steps; not reusable)."""

    def __init__(self, cfg: TrainConfig, on_step: Callable[[dict], None] | None) -> None:
        self.cfg = cfg
        self.on_step = on_step
        self.work_dir: Path = cfg.work_dir  # type: ignore[assignment]
        self.log: _Log | None = None
        self.progress = None

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            self.log.close()

    # -- setup ------------------------------------------------------------------------------
    def _setup(self) -> None:
        from accelerate.utils import set_seed
        from diffusers import DDPMScheduler

        cfg = self.cfg
        _model_index(cfg.base)
        unet_config = json.loads((cfg.base / "unet" / "config.json").read_text())
        in_channels = unet_config.get("in_channels", 4)
        if cfg.task == "inpaint" and in_channels != 9:
            raise ValueError(f"task 'inpaint' needs an inpaint base (9-channel UNet); "
                             f"{cfg.base} has a {in_channels}-channel UNet")
        if cfg.task == "txt2img" and in_channels != 4:
            raise ValueError(f"{cfg.base} is an inpaint model ({in_channels}-channel UNet); "
                             "train it with task='inpaint'")
        vae_config = json.loads((cfg.base / "vae" / "config.json").read_text())
        self.vae_scale = 2 ** (len(vae_config.get("block_out_channels", [0] * 4)) - 1)
        if cfg.resolution % self.vae_scale:
            raise ValueError(f"resolution must be a multiple of {self.vae_scale} "
                             f"(the VAE's downsampling), not {cfg.resolution}")
        self.examples: list[Example] = read_examples(cfg.dataset)
        parts = _load_parts(cfg.base)

        self.accelerator = acc = _accelerator(cfg)
        self.device = acc.device
        set_seed(cfg.seed)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            acc.mixed_precision, torch.float32)
        self.parts = parts
        self.noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r} in the base's "
                             "scheduler config")
        sf = parts.vae.config
        self.latent_scale = float(sf.scaling_factor)
        self.latent_shift = float(getattr(sf, "shift_factor", None) or 0.0)
        self.inpaint = cfg.task == "inpaint"
        self._setup_models()
        self._setup_text()
        self._setup_images()

    def _setup_models(self) -> None:
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        cfg, acc, parts = self.cfg, self.accelerator, self.parts
        unet, te, vae = parts.unet, parts.text_encoder, parts.vae
        vae.requires_grad_(False)
        vae.eval()
        _moved(vae, self.device, self.weight_dtype)
        self.train_te = cfg.train_text_encoder
        alpha = cfg.lora_alpha or cfg.rank
        if cfg.method == "lora":
            unet.requires_grad_(False)
            te.requires_grad_(False)
            # Frozen weights in the compute dtype; the adapters are added after, in fp32.
            _moved(unet, self.device, self.weight_dtype)
            _moved(te, self.device, self.weight_dtype)
            unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=alpha,
                                        init_lora_weights="gaussian",
                                        target_modules=UNET_LORA_TARGETS))
            if self.train_te:
                te.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=alpha,
                                          init_lora_weights="gaussian",
                                          target_modules=TEXT_LORA_TARGETS))
            cast_training_params([unet, te] if self.train_te else [unet], dtype=torch.float32)
        else:
            unet.requires_grad_(True)
            te.requires_grad_(self.train_te)
            _moved(unet, self.device)  # trained weights stay fp32 (autocast does the rest)
            _moved(te, self.device, torch.float32 if self.train_te else self.weight_dtype)
        if not self.train_te:
            te.eval()
        unet.train()
        if self.train_te:
            te.train()
        trained = [unet, te] if self.train_te else [unet]
        self.params = [p for m in trained for p in m.parameters() if p.requires_grad]
        self.trainable_count = sum(p.numel() for p in self.params)
        optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, betas=(0.9, 0.999),
                                      weight_decay=cfg.adam_weight_decay, eps=1e-8)
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                          num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=cfg.max_train_steps)
        prepared = acc.prepare(*trained, optimizer)
        self.models = list(prepared[:-1])
        self.model_names = ["unet", "text_encoder"][:len(self.models)]
        self.optimizer = prepared[-1]
        self.unet = self.models[0]
        self.text_encoder = self.models[1] if self.train_te else te
        acc.register_for_checkpointing(self.lr_scheduler)
        acc.register_save_state_pre_hook(self._save_hook)
        acc.register_load_state_pre_hook(self._load_hook)

    # Checkpoints keep only what trains (LoRA weights, or the fine-tuned modules).
    def _trainable(self, model) -> dict[str, torch.Tensor]:
        module = self.accelerator.unwrap_model(model)
        return {k: v.detach().contiguous() for k, v in module.named_parameters()
                if v.requires_grad}

    def _save_hook(self, models, weights, output_dir) -> None:
        from safetensors.torch import save_file

        for name, model in zip(self.model_names, models, strict=True):
            save_file(self._trainable(model),
                      str(Path(output_dir) / f"{name}.trainable.safetensors"))
        weights.clear()  # nothing else to save for the models

    def _load_hook(self, models, input_dir) -> None:
        from safetensors.torch import load_file

        for name, model in zip(self.model_names, list(models), strict=True):
            path = Path(input_dir) / f"{name}.trainable.safetensors"
            if not path.is_file():
                raise ValueError(f"checkpoint {input_dir} has no {path.name}: it was not "
                                 "written by this trainer with this configuration")
            module = self.accelerator.unwrap_model(model)
            state = load_file(str(path), device=str(self.device))
            expected = set(self._trainable(model))
            if set(state) != expected:
                raise ValueError(f"checkpoint {input_dir}: {path.name} does not match the "
                                 "model being trained (method, rank, targets or base differ)")
            module.load_state_dict(state, strict=False)
        models.clear()

    def _setup_text(self) -> None:
        cfg, parts = self.cfg, self.parts
        captions = [ex.text for ex in self.examples]
        unique = list(dict.fromkeys(captions))
        position = {c: i for i, c in enumerate(unique)}
        self.caption_of = torch.tensor([position[c] for c in captions], dtype=torch.long)
        tok = parts.tokenizer
        tokens = tok(unique, max_length=tok.model_max_length, padding="max_length",
                     truncation=True, return_tensors="pt")
        self.token_ids = tokens.input_ids.to(self.device)
        # As the pipelines encode prompts: an attention mask only for encoders that want it.
        self.use_attention_mask = bool(getattr(parts.text_encoder.config,
                                               "use_attention_mask", False))
        if self.use_attention_mask:
            self.token_mask = tokens.attention_mask.to(self.device)
        self.text_cache: torch.Tensor | None = None
        total_samples = cfg.max_train_steps * cfg.gradient_accumulation_steps * \
            cfg.train_batch_size
        if not self.train_te:
            width = parts.text_encoder.config.hidden_size
            nbytes = len(unique) * self.token_ids.shape[1] * width * \
                torch.finfo(self.weight_dtype).bits // 8
            if nbytes <= CACHE_BUDGET_MB << 20 and len(unique) <= total_samples:
                chunks = [self._encode_text(torch.arange(i, min(i + _TEXT_CHUNK, len(unique))))
                          for i in range(0, len(unique), _TEXT_CHUNK)]
                self.text_cache = torch.cat(chunks)

    def _encode_text(self, caption_idx: torch.Tensor) -> torch.Tensor:
        caption_idx = caption_idx.to(self.device)
        ids = self.token_ids[caption_idx]
        kwargs = {"attention_mask": self.token_mask[caption_idx]} \
            if self.use_attention_mask else {}
        if self.train_te:
            return self.text_encoder(ids, return_dict=False, **kwargs)[0]
        with torch.no_grad():
            return self.text_encoder(ids, return_dict=False, **kwargs)[0]

    def _setup_images(self) -> None:
        cfg = self.cfg
        self.transform = Transform(cfg.resolution, cfg.center_crop, cfg.random_flip, cfg.seed)
        self.dataset = ImageDataset(self.examples, self.transform, inpaint=self.inpaint)
        self.plan = BatchPlan(cfg.seed, len(self.examples), cfg.train_batch_size)
        has_masks = all(ex.mask is not None for ex in self.examples)
        views = 2 if cfg.random_flip else 1
        latent = cfg.resolution // self.vae_scale
        channels = self.parts.vae.config.latent_channels
        per_view = 2 * channels * latent * latent * 4  # mean and std, fp32
        if self.inpaint:
            per_view = per_view * 2 + latent * latent * 4
        total_samples = cfg.max_train_steps * cfg.gradient_accumulation_steps * \
            cfg.train_batch_size
        n_views = len(self.examples) * views
        self.cache_latents = (cfg.center_crop and (not self.inpaint or has_masks)
                              and n_views * per_view <= CACHE_BUDGET_MB << 20
                              and n_views <= total_samples)
        self.latent_cache: dict[str, torch.Tensor] = {}
        if self.cache_latents:
            self._build_latent_cache(views)

    def _loader(self, keys_batches, workers: int) -> Iterator[dict]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=keys_batches, collate_fn=collate,
            num_workers=workers, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def _build_latent_cache(self, views: int) -> None:
        n = len(self.examples)
        keys = [[(0, i, bool(v)) for i in range(start, min(start + _ENCODE_CHUNK, n))]
                for v in range(views) for start in range(0, n, _ENCODE_CHUNK)]
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in self._loader(keys, self.cfg.dataloader_num_workers):
            encoded = self._encode_batch(batch)
            for key, value in encoded.items():
                parts.setdefault(key, []).append(value)
        for key, chunks in parts.items():
            stacked = torch.cat(chunks)  # views * n in key order: view-major
            self.latent_cache[key] = stacked.view(views, n, *stacked.shape[1:]).transpose(0, 1) \
                .contiguous()

    def _encode_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """VAE latent distributions (mean, std) of a batch's images (and masked images),
        and the mask at latent size."""
        out = {"image": self._moments(batch["pixel_values"])}
        if self.inpaint:
            out["masked"] = self._moments(batch["masked_pixel_values"])
            latent = self.cfg.resolution // self.vae_scale
            out["mask"] = F.interpolate(batch["mask"].to(self.device, torch.float32),
                                        size=(latent, latent))
        return out

    @torch.no_grad()
    def _moments(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, dtype=self.weight_dtype, non_blocking=True)
        dist = self.parts.vae.encode(pixels).latent_dist
        return torch.cat([dist.mean, dist.std], dim=1).float()

    # -- the data stream ----------------------------------------------------------------------
    def _batches(self, start: int, stop: int) -> Iterator[tuple[int, dict[str, torch.Tensor],
                                                                torch.Tensor]]:
        """(epoch, encoded batch, caption indices) for micro batches ``start`` … ``stop-1``."""
        cfg = self.cfg
        if self.cache_latents:
            for epoch, indices in self.plan.batches(start, stop):
                idx = torch.tensor(indices, dtype=torch.long)
                view = torch.tensor([int(flip_of(cfg.seed, epoch, i, cfg.random_flip))
                                     for i in indices], dtype=torch.long)
                dev_idx, dev_view = idx.to(self.device), view.to(self.device)
                encoded = {k: v[dev_idx, dev_view] for k, v in self.latent_cache.items()}
                yield epoch, encoded, self.caption_of[idx]
            return
        plan = list(self.plan.batches(start, stop))
        keys = [[(epoch, i, None) for i in indices] for epoch, indices in plan]
        for (epoch, _), batch in zip(plan, self._loader(keys, cfg.dataloader_num_workers),
                                     strict=True):
            yield epoch, self._encode_batch(batch), self.caption_of[batch["index"]]

    # -- one micro batch ------------------------------------------------------------------------
    def _loss(self, micro: int, encoded: dict[str, torch.Tensor],
              caption_idx: torch.Tensor) -> torch.Tensor:
        from diffusers.training_utils import compute_snr

        cfg, device = self.cfg, self.device
        gen = torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, "step", micro))

        def randn(shape) -> torch.Tensor:
            return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

        def sample(moments: torch.Tensor) -> torch.Tensor:
            mean, std = moments.chunk(2, dim=1)
            return (mean + std * randn(mean.shape) - self.latent_shift) * self.latent_scale

        latents = sample(encoded["image"])
        masked = sample(encoded["masked"]) if self.inpaint else None
        noise = randn(latents.shape)
        if cfg.noise_offset:
            noise = noise + cfg.noise_offset * randn((*latents.shape[:2], 1, 1))
        bsz = latents.shape[0]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                                  generator=gen, device=device, dtype=torch.long)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        model_input = torch.cat([noisy, encoded["mask"], masked], dim=1) if self.inpaint \
            else noisy
        if self.text_cache is not None:
            hidden = self.text_cache[caption_idx.to(device)]
        else:
            hidden = self._encode_text(caption_idx)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = latents
        pred = self.unet(model_input.to(self.weight_dtype), timesteps, hidden,
                         return_dict=False)[0]
        if cfg.snr_gamma is None:
            return F.mse_loss(pred.float(), target.float(), reduction="mean")
        # Min-SNR weighting (Hang et al. 2023, section 3.4), in the noise/velocity form.
        snr = compute_snr(self.noise_scheduler, timesteps)
        weights = torch.clamp(snr, max=cfg.snr_gamma)
        if self.prediction_type == "epsilon":
            weights = weights / snr
        elif self.prediction_type == "v_prediction":
            weights = weights / (snr + 1)
        loss = F.mse_loss(pred.float(), target.float(), reduction="none")
        return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.work_dir / "checkpoints"

    def _structure(self) -> dict:
        cfg = self.cfg
        return {"method": cfg.method, "task": cfg.task,
                "train_text_encoder": cfg.train_text_encoder,
                "rank": cfg.rank if cfg.method == "lora" else None,
                "lora_alpha": (cfg.lora_alpha or cfg.rank) if cfg.method == "lora" else None}

    def _save_checkpoint(self, step: int, loss: float) -> Path:
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints_dir / f"checkpoint-{step}"
        partial = self.checkpoints_dir / f".checkpoint-{step}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.save_state(str(partial))
        cfg = self.cfg
        (partial / STATE_NAME).write_text(json.dumps({
            "global_step": step, "loss": loss if math.isfinite(loss) else None,
            **self._structure(), "seed": cfg.seed,
            "train_batch_size": cfg.train_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "resolution": cfg.resolution, "base": str(cfg.base)}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        limit = cfg.checkpoints_total_limit
        if limit is not None:
            for old in _checkpoints(self.checkpoints_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _resume(self) -> tuple[int, Path | None]:
        self.resumed_loss = float("nan")
        wanted = self.cfg.resume_from_checkpoint
        if not wanted:
            return 0, None
        if wanted == "latest":
            found = _checkpoints(self.checkpoints_dir)
            if not found:
                return 0, None  # nothing saved yet: a fresh run (as the diffusers recipe)
            path = found[-1]
        else:
            path = Path(wanted).expanduser()
            if not path.exists() and (self.checkpoints_dir / wanted).exists():
                path = self.checkpoints_dir / wanted
            if not (path / STATE_NAME).is_file():
                raise ValueError(f"resume_from_checkpoint: {wanted} is not a checkpoint of this "
                                 f"trainer (no {STATE_NAME})")
        state = json.loads((path / STATE_NAME).read_text())
        ours = self._structure()
        differs = [k for k, v in ours.items() if state.get(k) != v]
        if differs:
            raise ValueError(f"checkpoint {path} was written by a run with other "
                             + ", ".join(f"{k}={state.get(k)!r} (now {ours[k]!r})"
                                         for k in differs))
        self.accelerator.load_state(str(path))
        if state.get("loss") is not None:
            self.resumed_loss = float(state["loss"])
        return int(state["global_step"]), path

    # -- validation -----------------------------------------------------------------------------
    def _validation_pipeline(self):
        if getattr(self, "_val_pipe", None) is not None:
            return self._val_pipe
        import diffusers
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        sched_cls = getattr(diffusers, self.parts.scheduler_config.get("_class_name", ""),
                            diffusers.DDPMScheduler)
        cls = StableDiffusionInpaintPipeline if self.inpaint else StableDiffusionPipeline
        pipe = cls(vae=self.parts.vae, text_encoder=self.accelerator.unwrap_model(
            self.text_encoder), tokenizer=self.parts.tokenizer,
            unet=self.accelerator.unwrap_model(self.unet),
            scheduler=sched_cls.from_config(self.parts.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        self._val_pipe = pipe
        if self.inpaint:
            from PIL import Image

            ex = self.examples[0]
            with Image.open(ex.image) as img:
                mask_img = None
                if ex.mask is not None:
                    with Image.open(ex.mask) as m:
                        mask_img = m.copy()
                pixels, mask = self.transform(img, mask_img, 0, 0, False)
            if mask is None:
                mask = random_rect_mask(self.cfg.resolution, self.cfg.seed, 0, 0)
            self._val_image = Image.fromarray(((pixels.permute(1, 2, 0) + 1) * 127.5)
                                              .round().clamp(0, 255).byte().numpy())
            self._val_mask = Image.fromarray((mask[0] * 255).byte().numpy())
        return pipe

    def _validate(self, step: int) -> Path | None:
        cfg = self.cfg
        if not cfg.validation_prompts:
            return None
        pipe = self._validation_pipeline()
        out = self.work_dir / "validation" / f"step-{step}"
        out.mkdir(parents=True, exist_ok=True)
        modules = [self.unet] + ([self.text_encoder] if self.train_te else [])
        for m in modules:
            m.eval()
        try:
            for i, prompt in enumerate(cfg.validation_prompts):
                kwargs: dict[str, Any] = dict(
                    prompt=prompt, num_inference_steps=cfg.validation_inference_steps,
                    height=cfg.resolution, width=cfg.resolution,
                    generator=torch.Generator("cpu").manual_seed(cfg.seed + i))
                if self.inpaint:
                    kwargs.update(image=self._val_image, mask_image=self._val_mask, strength=1.0)
                with torch.no_grad(), self.accelerator.autocast():
                    image = pipe(**kwargs).images[0]
                image.save(out / f"{i}.png")
        finally:
            for m in modules:
                m.train()
        return out

    # -- output ---------------------------------------------------------------------------------
    def _save_output(self) -> None:
        out = self.cfg.output
        out.parent.mkdir(parents=True, exist_ok=True)
        if self.cfg.method == "lora":
            self._save_lora(out)
        else:
            self._save_full(out)

    def _save_lora(self, out: Path) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import get_peft_model_state_dict

        cfg = self.cfg
        # The file carries no alpha: fold alpha/rank into B so that loaders, which assume
        # alpha == rank for diffusers-layout files, apply the trained scale.
        scale = (cfg.lora_alpha or cfg.rank) / cfg.rank

        def lora_sd(model, prefix: str = "") -> dict[str, torch.Tensor]:
            module = self.accelerator.unwrap_model(model)
            sd = get_peft_model_state_dict(module)
            return {prefix + k: (v * scale if ".lora_B." in k and scale != 1 else v)
                    .detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}

        unet_sd = convert_state_dict_to_diffusers(lora_sd(self.unet))
        te_sd = None
        if self.train_te:
            # transformers 5 dropped CLIPTextModel's ``text_model`` level; LoRA files (and
            # diffusers' loader) keep it.
            te = lora_sd(self.text_encoder)
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

    def _save_full(self, out: Path) -> None:
        cfg, index = self.cfg, self.parts.index
        trained = {"unet": self.unet}
        if self.train_te:
            trained["text_encoder"] = self.text_encoder
        with replacing_folder(out, prefix=f".{out.name}.") as tmp:
            shutil.copy2(cfg.base / "model_index.json", tmp / "model_index.json")
            for name, spec in index.items():
                if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                    continue
                if name not in trained and (cfg.base / name).is_dir():
                    shutil.copytree(cfg.base / name, tmp / name)
            for name, model in trained.items():
                module = self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
                module.save_pretrained(tmp / name)

    # -- the loop -------------------------------------------------------------------------------
    def execute(self, started: float) -> TrainResult:
        cfg = self.cfg
        self._setup()
        acc = self.accelerator
        global_step, resumed = self._resume()
        self.log = _Log(self.work_dir / LOG_NAME, append=resumed is not None,
                        on_step=self.on_step)
        accum, bs = cfg.gradient_accumulation_steps, cfg.train_batch_size
        self.log.write({
            "event": "start", "config": _config_dict(cfg), "device": str(self.device),
            "examples": len(self.examples), "trainable_params": self.trainable_count,
            "prediction_type": self.prediction_type, "from_scratch": cfg.from_scratch,
            "cached_latents": self.cache_latents, "cached_text": self.text_cache is not None,
            "resumed_from": str(resumed) if resumed else None, "global_step": global_step,
            "batches_per_epoch": self.plan.batches_per_epoch,
            "setup_seconds": round(time.perf_counter() - started, 3)})
        if cfg.progress:
            from tqdm import tqdm

            self.progress = tqdm(total=cfg.max_train_steps, initial=global_step, file=sys.stderr,
                                 desc=f"train {cfg.method}", dynamic_ncols=True)
        validation_dir: Path | None = None
        loop_start = time.perf_counter()
        window_start, window_images, window_losses = loop_start, 0, []
        images = start_images = global_step * accum * bs  # consumed, resumed runs included
        step_loss, last_loss = 0.0, self.resumed_loss
        epoch = self.plan.locate(global_step * accum)[0]
        for micro, (epoch, encoded, caption_idx) in enumerate(
                self._batches(global_step * accum, cfg.max_train_steps * accum),
                start=global_step * accum):
            acc.step = micro  # accumulate() counts from here: sync on every accum-th batch
            with acc.accumulate(*self.models):
                loss = self._loss(micro, encoded, caption_idx)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            n = int(caption_idx.shape[0])
            images += n
            window_images += n
            step_loss += float(loss.detach().item()) / accum
            if not acc.sync_gradients:
                continue
            lr = self.lr_scheduler.get_last_lr()[0]
            if not acc.optimizer_step_was_skipped:
                self.lr_scheduler.step()
            global_step += 1
            last_loss, step_loss = step_loss, 0.0
            window_losses.append(last_loss)
            if self.progress is not None:
                self.progress.update(1)
                self.progress.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            if global_step % cfg.log_every == 0 or global_step == cfg.max_train_steps:
                now = time.perf_counter()
                self.log.write({
                    "step": global_step, "epoch": epoch,
                    "loss": sum(window_losses) / len(window_losses), "lr": lr,
                    "seconds": round(now - loop_start, 4),
                    "images_per_s": round(window_images / max(now - window_start, 1e-9), 3),
                    "images": images})
                window_start, window_images, window_losses = now, 0, []
            paused = time.perf_counter()
            if cfg.checkpointing_steps and global_step % cfg.checkpointing_steps == 0:
                self._save_checkpoint(global_step, last_loss)
            if (cfg.validation_steps and global_step % cfg.validation_steps == 0
                    and global_step < cfg.max_train_steps):
                validation_dir = self._validate(global_step) or validation_dir
            window_start += time.perf_counter() - paused  # keep saves out of images/s
        if cfg.validation_prompts:
            validation_dir = self._validate(global_step) or validation_dir
        self._save_output()
        seconds = time.perf_counter() - started
        trained_images = images - start_images
        loop_seconds = time.perf_counter() - loop_start
        self.log.write({
            "event": "done", "steps": global_step, "epoch": epoch, "final_loss": last_loss,
            "seconds": round(seconds, 3), "images": images,
            "images_per_s": round(trained_images / max(loop_seconds, 1e-9), 3),
            "output": str(cfg.output),
            "validation_dir": str(validation_dir) if validation_dir else None})
        return TrainResult(output=cfg.output, steps=global_step, final_loss=last_loss,
                           seconds=seconds, log_path=self.log.path, validation_dir=validation_dir)


def _checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-<n>`` folders in ``folder``, oldest (smallest n) first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name.removeprefix("checkpoint-").isdigit() and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def latest_checkpoint(work_dir: Path) -> Path | None:
    found = _checkpoints(Path(work_dir) / "checkpoints")
    return found[-1] if found else None


__all__ = ["TrainConfig", "TrainResult", "train", "default_work_dir", "latest_checkpoint"]
