"""Pick the torch device and dtype: CUDA with fp16 when present, else CPU with fp32."""

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


def resolve_runtime(requested: str) -> Runtime:
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
        return Runtime(torch.device("cuda"), torch.float16)
    if requested == "mps":
        return Runtime(torch.device("mps"), torch.float16)
    return Runtime(torch.device("cpu"), torch.float32)


def free_memory(runtime: Runtime) -> None:
    """Return cached allocator memory after a job fails, is cancelled or a model unloads."""
    import gc

    gc.collect()
    if runtime.device.type == "cuda":
        torch.cuda.empty_cache()
    elif runtime.device.type == "mps":
        torch.mps.empty_cache()
