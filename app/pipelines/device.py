"""Pick the torch device and dtype: CUDA with fp16 (or bf16) when present, else CPU with
fp32 (or bf16 on CPUs that compute it natively: BILDWERK_CPU_DTYPE=bf16)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return self.device.type


def resolve_runtime(requested: str, *, cpu_dtype: str = "fp32",
                    cuda_dtype: str = "fp16") -> Runtime:
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("BILDWERK_DEVICE=cuda but no CUDA device is available")
        return Runtime(torch.device("cuda"),
                       torch.bfloat16 if cuda_dtype == "bf16" else torch.float16)
    if requested == "mps":
        return Runtime(torch.device("mps"), torch.float16)
    if cpu_dtype == "bf16":
        from app.pipelines.fast_path import cpu_has_bf16

        if not cpu_has_bf16():
            raise RuntimeError("BILDWERK_CPU_DTYPE=bf16 but this CPU has no native bf16 "
                               "(AVX512-BF16 or AMX); use fp32")
        return Runtime(torch.device("cpu"), torch.bfloat16)
    return Runtime(torch.device("cpu"), torch.float32)


def free_memory(runtime: Runtime) -> None:
    """Return cached allocator memory after a job fails, is cancelled or a model unloads."""
    import gc

    gc.collect()
    if runtime.device.type == "cuda":
        torch.cuda.empty_cache()
    elif runtime.device.type == "mps":
        torch.mps.empty_cache()
