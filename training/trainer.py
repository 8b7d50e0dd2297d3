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

This module holds the run itself (setup, the loss of one micro batch, the loop and its
log). The rest lives beside it: :mod:`training.config` (``TrainConfig``, ``TrainResult``,
the checks), :mod:`training.base_model` (loading the base), :mod:`training.encoding`
(captions and latents, cached where exact), :mod:`training.checkpoints` (saving and
resuming), :mod:`training.validation` (validation images) and :mod:`training.output`
(writing the LoRA file or model folder). ``torch.set_num_threads`` is left alone.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from training._data import derived_seed, read_examples
from training.base_model import load_base_parts, model_index, moved
from training.checkpoints import Checkpoints
from training.config import TrainConfig, TrainResult, checked_config, config_dict
from training.encoding import CaptionEncoder, LatentBatches
from training.output import save_output
from training.validation import ValidationImages

UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LOG_NAME = "train_log.jsonl"


def train(cfg: TrainConfig, on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LoRA or fine-tune a model as ``cfg`` says; see the module docstring.

    Writes ``cfg.output`` (a LoRA ``.safetensors`` or a diffusers folder) and, under the
    work dir, ``train_log.jsonl`` (one JSON object per line: an ``{"event": "start"}``
    line, a step line every ``log_every`` optimizer steps, an ``{"event": "done"}`` line;
    ``on_step`` gets each of them), ``checkpoints/checkpoint-<step>`` and
    ``validation/step-<n>/<i>.png``. Raises ``ValueError`` for unusable configurations.
    """
    started = time.perf_counter()
    cfg = checked_config(cfg)
    run = _Run(cfg, on_step)
    try:
        return run.execute(started)
    finally:
        run.close()


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
        model_index(cfg.base)
        unet_config = json.loads((cfg.base / "unet" / "config.json").read_text())
        in_channels = unet_config.get("in_channels", 4)
        if cfg.task == "inpaint" and in_channels != 9:
            raise ValueError(f"task 'inpaint' needs an inpaint base (9-channel UNet); "
                             f"{cfg.base} has a {in_channels}-channel UNet")
        if cfg.task == "txt2img" and in_channels != 4:
            raise ValueError(f"{cfg.base} is an inpaint model ({in_channels}-channel UNet); "
                             "train it with task='inpaint'")
        vae_config = json.loads((cfg.base / "vae" / "config.json").read_text())
        vae_scale = 2 ** (len(vae_config.get("block_out_channels", [0] * 4)) - 1)
        if cfg.resolution % vae_scale:
            raise ValueError(f"resolution must be a multiple of {vae_scale} "
                             f"(the VAE's downsampling), not {cfg.resolution}")
        self.examples = read_examples(cfg.dataset)
        parts = load_base_parts(cfg.base)

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
        self.captions = CaptionEncoder(
            cfg, self.examples, parts.tokenizer, self.text_encoder, parts.text_encoder.config,
            trains=self.train_te, device=self.device, dtype=self.weight_dtype)
        self.latents = LatentBatches(cfg, self.examples, parts.vae, vae_scale=vae_scale,
                                     inpaint=self.inpaint, device=self.device,
                                     dtype=self.weight_dtype)
        self.validation = ValidationImages(
            cfg, acc, parts, unet=self.unet, text_encoder=self.text_encoder,
            train_te=self.train_te, inpaint=self.inpaint, example=self.examples[0],
            transform=self.latents.transform)

    def _setup_models(self) -> None:
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        cfg, acc, parts = self.cfg, self.accelerator, self.parts
        unet, te, vae = parts.unet, parts.text_encoder, parts.vae
        vae.requires_grad_(False)
        vae.eval()
        moved(vae, self.device, self.weight_dtype)
        self.train_te = cfg.train_text_encoder
        alpha = cfg.lora_alpha or cfg.rank
        if cfg.method == "lora":
            unet.requires_grad_(False)
            te.requires_grad_(False)
            # Frozen weights in the compute dtype; the adapters are added after, in fp32.
            moved(unet, self.device, self.weight_dtype)
            moved(te, self.device, self.weight_dtype)
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
            moved(unet, self.device)  # trained weights stay fp32 (autocast does the rest)
            moved(te, self.device, torch.float32 if self.train_te else self.weight_dtype)
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
        self.optimizer = prepared[-1]
        self.unet = self.models[0]
        self.text_encoder = self.models[1] if self.train_te else te
        acc.register_for_checkpointing(self.lr_scheduler)
        self.checkpoints = Checkpoints(cfg, acc, ["unet", "text_encoder"][:len(self.models)],
                                       self.device)

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
        hidden = self.captions.hidden_states(caption_idx)
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

    def _save_output(self) -> None:
        trained = {"unet": self.unet}
        if self.train_te:
            trained["text_encoder"] = self.text_encoder
        save_output(self.cfg, self.accelerator, self.parts.index, trained)

    # -- the loop -------------------------------------------------------------------------------
    def execute(self, started: float) -> TrainResult:
        cfg = self.cfg
        self._setup()
        acc = self.accelerator
        global_step, resumed, resumed_loss = self.checkpoints.resume()
        self.log = _Log(self.work_dir / LOG_NAME, append=resumed is not None,
                        on_step=self.on_step)
        accum, bs = cfg.gradient_accumulation_steps, cfg.train_batch_size
        self.log.write({
            "event": "start", "config": config_dict(cfg), "device": str(self.device),
            "examples": len(self.examples), "trainable_params": self.trainable_count,
            "prediction_type": self.prediction_type, "from_scratch": cfg.from_scratch,
            "cached_latents": self.latents.cached,
            "cached_text": self.captions.cache is not None,
            "resumed_from": str(resumed) if resumed else None, "global_step": global_step,
            "batches_per_epoch": self.latents.plan.batches_per_epoch,
            "setup_seconds": round(time.perf_counter() - started, 3)})
        if cfg.progress:
            from tqdm import tqdm

            self.progress = tqdm(total=cfg.max_train_steps, initial=global_step, file=sys.stderr,
                                 desc=f"train {cfg.method}", dynamic_ncols=True)
        validation_dir: Path | None = None
        loop_start = time.perf_counter()
        window_start, window_images, window_losses = loop_start, 0, []
        images = start_images = global_step * accum * bs  # consumed, resumed runs included
        step_loss, last_loss = 0.0, resumed_loss
        epoch = self.latents.plan.locate(global_step * accum)[0]
        for micro, (epoch, encoded, example_idx) in enumerate(
                self.latents.batches(global_step * accum, cfg.max_train_steps * accum),
                start=global_step * accum):
            caption_idx = self.captions.caption_of[example_idx]
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
                self.checkpoints.save(global_step, last_loss)
            if (cfg.validation_steps and global_step % cfg.validation_steps == 0
                    and global_step < cfg.max_train_steps):
                validation_dir = self.validation.render(global_step, self.work_dir) \
                    or validation_dir
            window_start += time.perf_counter() - paused  # keep saves out of images/s
        if cfg.validation_prompts:
            validation_dir = self.validation.render(global_step, self.work_dir) or validation_dir
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


__all__ = ["LOG_NAME", "train"]
