"""The memory budget for resident models: VRAM on CUDA, RAM on the CPU."""

from __future__ import annotations

import os

import torch

from app.pipelines.device import Runtime


def default_budget_bytes(runtime: Runtime) -> int:
    """90% of the GPU's memory on CUDA; half of the machine's RAM on the CPU (the rest is
    for activations, the OS and the server)."""
    if runtime.device.type == "cuda":
        return int(torch.cuda.get_device_properties(runtime.device).total_memory * 0.9)
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * page_size * 0.5)


def module_bytes(*modules: torch.nn.Module | None) -> int:
    """Bytes held by the parameters and buffers of distinct modules (shared ones once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        if module is None or not isinstance(module, torch.nn.Module):
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            key = tensor.data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def pipeline_bytes(pipe) -> int:
    return module_bytes(*(getattr(pipe, name, None) for name in pipe.components))
