"""The fast path: what a loaded pipeline is made to run with, chosen from the settings and
the device, and reported (``GET /models``: ``optimizations``; ``bildwerk doctor``).

* **SDPA** (PyTorch's fused attention) is diffusers' default on torch 2: only reported.
* **channels_last** memory format for the UNet and VAE (``BILDWERK_CHANNELS_LAST``): on by
  default on CUDA; opt-in on the CPU, where it changes pixels slightly.
* **torch.compile** of the UNet (``BILDWERK_COMPILE=off|default|max-autotune``), warmed up
  at load with one step at the model's native size, its cache kept under the data dir
  (``<data_dir>/compile-cache``) so a restart reuses it.
* **bf16 on the CPU** (``BILDWERK_CPU_DTYPE=bf16``), on CPUs with native bf16
  (AVX512-BF16 or AMX); refused at start elsewhere. Its error is measured by
  ``bench/fast_path.py`` and documented in docs/performance.md.
* **On CUDA**: fp16 weights (bf16 with ``BILDWERK_CUDA_DTYPE=bf16``), TF32 matmuls, VAE
  slicing, and VAE tiling for images whose side exceeds ``BILDWERK_VAE_TILE_ABOVE``; SDXL's
  VAE, which overflows in fp16, decodes upcast to fp32 (its config's ``force_upcast``).

Fused QKV projections are left out on purpose: the per-request LoRAs wrap ``to_q``,
``to_k`` and ``to_v``, which a fused attention bypasses, so a LoRA would silently not apply.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("bildwerk.fastpath")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


@dataclass(frozen=True)
class FastPath:
    channels_last: bool = False
    compile: str = "off"  # off | default | max-autotune
    compile_cache: Path | None = None
    vae_tile_above: int = 0  # CUDA: VAE tiling for a side above this (0: never)
    torch_threads: int | None = None  # fixed by BILDWERK_TORCH_THREADS; None: by model size
    workers: int = 1  # server processes sharing the cores (BILDWERK_WORKERS)
    taesd_previews: bool = False  # decode step previews with TAESD when models/taesd exists

    @classmethod
    def from_settings(cls, settings, runtime) -> FastPath:
        cuda = runtime.device.type == "cuda"
        channels_last = settings.channels_last == "on" or (
            settings.channels_last == "auto" and cuda)
        return cls(channels_last=channels_last, compile=settings.compile,
                   compile_cache=settings.data_dir / "compile-cache",
                   vae_tile_above=settings.vae_tile_above if cuda else 0,
                   torch_threads=settings.torch_threads, workers=settings.workers,
                   taesd_previews=settings.taesd_previews == "on" or (
                       settings.taesd_previews == "auto" and cuda))

    def use_threads(self, model_bytes: int, runtime, images: int = 1) -> int:
        """Set the torch threads for a pipeline call on a model of ``model_bytes``: a job
        alone, or a batch of several jobs with ``images`` images (CPU only; the device
        worker runs one call at a time, so the process-wide setting is its own)."""
        if runtime.device.type != "cpu":
            return torch.get_num_threads()
        threads = self.torch_threads or choose_threads(model_bytes, usable_cores(),
                                                       self.workers, images)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def apply(self, pipe, runtime, native: int | None = None) -> list[str]:
        """Make ``pipe`` (just loaded) run the fast path; returns what is active."""
        active = []
        if _uses_sdpa(pipe.unet):
            active.append("sdpa")
        if runtime.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            active += [f"{_dtype_name(runtime.dtype)} weights", "tf32"]
            vae = getattr(pipe, "vae", None)
            if vae is not None and hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
                active.append("vae slicing")
            if vae is not None and self.vae_tile_above and hasattr(vae, "enable_tiling"):
                vae.enable_tiling()
                vae.tile_sample_min_size = self.vae_tile_above
                vae.tile_latent_min_size = self.vae_tile_above // 8
                active.append(f"vae tiling above {self.vae_tile_above}px")
            if vae is not None and getattr(vae.config, "force_upcast", False) \
                    and runtime.dtype == torch.float16:
                active.append("vae decodes in fp32")
        elif runtime.dtype == torch.bfloat16:
            active.append("bf16 weights")
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            if getattr(pipe, "vae", None) is not None:
                pipe.vae.to(memory_format=torch.channels_last)
            active.append("channels_last")
        if self.compile != "off":
            active.append(self._compile(pipe, native))
        return active

    def _compile(self, pipe, native: int | None) -> str:
        if self.compile_cache is not None:
            self.compile_cache.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.compile_cache))
            os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        pipe.unet = torch.compile(pipe.unet, mode=None if self.compile == "default"
                                  else self.compile, dynamic=False)
        started = time.perf_counter()
        side = native or 512
        with torch.inference_mode():  # warm-up: compile now, not in the first request
            pipe(prompt="", num_inference_steps=1, width=side, height=side,
                 guidance_scale=1.0, output_type="latent",
                 generator=torch.Generator("cpu").manual_seed(0))
        took = time.perf_counter() - started
        log.info("compiled the UNet (%s) in %.1fs", self.compile, took)
        return f"torch.compile ({self.compile}, warmed up in {took:.0f}s)"


def choose_threads(model_bytes: int, cores: int, workers: int = 1, images: int = 1) -> int:
    """torch threads for one worker's pipeline call: all of its share of the cores for large
    models, and for a batch of several jobs (``images``: its images); one for a job alone on
    a small model, whose steps are too short to split well (bench figures in
    docs/performance.md). Never more than ``cores // workers``."""
    share = max(1, cores // max(1, workers))
    if model_bytes and model_bytes < SMALL_MODEL_BYTES and images <= 1:
        return 1
    return share


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


SMALL_MODEL_BYTES = 200 * 2**20  # the embedded micro model is ~50 MB; SD1.5 ~2 GB in fp16


def _uses_sdpa(unet) -> bool:
    try:
        processors = unet.attn_processors.values()
    except Exception:
        return False
    return bool(processors) and all("2_0" in type(p).__name__ for p in processors)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(
        dtype, str(dtype))
