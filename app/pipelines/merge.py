"""Merge two (or three) checkpoints of one family into a new single-file checkpoint.

- ``weighted_sum``:   (1 - alpha) * A + alpha * B
- ``add_difference``: A + alpha * (B - C)   (e.g. A=custom, B=inpaint, C=base)

LoRAs can be fused into the result. The output is one ``.safetensors`` file in the
original (LDM) layout that AUTOMATIC1111 and ComfyUI read too; when the sources are not
standard-shaped, a ``<name>.config/`` sidecar with their configs is written beside it.
Merging runs on the CPU in fp32, away from the models serving requests.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from app.errors import Conflict, InvalidInput, ModelLoadFailed
from app.pipelines.device import Runtime
from app.pipelines.families import SIDECAR_SUFFIX
from app.pipelines.registry import ModelEntry, config_source, load_pipeline

Method = Literal["weighted_sum", "add_difference"]
_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@dataclass
class MergeSpec:
    a: ModelEntry
    b: ModelEntry
    method: Method
    alpha: float
    name: str
    c: ModelEntry | None = None
    loras: list = field(default_factory=list)  # [(LoraEntry, weight)]


def check_merge(spec: MergeSpec) -> None:
    sources = [spec.a, spec.b] + ([spec.c] if spec.c else [])
    families = {e.family for e in sources}
    if len(families) > 1:
        raise InvalidInput(f"models of different families cannot be merged: "
                           f"{', '.join(f'{e.id} ({e.family})' for e in sources)}", param="b")
    if spec.method == "add_difference" and spec.c is None:
        raise InvalidInput("add_difference needs a third model c (B - C is added to A)",
                           param="c")


def taken(out_dir: Path, name: str) -> bool:
    """Whether anything on disk already answers to ``name`` (registered or not)."""
    return any((out_dir / f"{name}{suffix}").exists()
               for suffix in ("", ".safetensors", ".ckpt", SIDECAR_SUFFIX, ".yaml"))


def _load_source(entry: ModelEntry, runtime: Runtime, param: str):
    try:
        return load_pipeline(entry, runtime)
    except Exception as exc:
        raise ModelLoadFailed(f"model {entry.id!r} failed to load: {exc}", param=param) from exc


def merge(spec: MergeSpec, out_dir: Path) -> Path:
    """Write the merged checkpoint to ``out_dir/<name>.safetensors`` and return its path.
    Never replaces anything: a name already on disk is a 409."""
    from app.pipelines.single_file.ldm_format import save_as_ldm_checkpoint

    check_merge(spec)
    if taken(out_dir, spec.name):
        raise Conflict(f"{spec.name!r} already exists in the models dir", param="name")
    cpu = Runtime(torch.device("cpu"), torch.float32)
    # 1. Load the sources through the same code path as serving, on the CPU in fp32.
    pipe_a = _load_source(spec.a, cpu, "a")
    pipe_b = _load_source(spec.b, cpu, "b")
    pipe_c = _load_source(spec.c, cpu, "c") if spec.c else None
    # 2. Merge every weight of every component, tensor by tensor.
    with torch.no_grad():
        for name in _COMPONENTS:
            module_a = getattr(pipe_a, name, None)
            if module_a is None:
                continue
            merged = _merge_state(module_a.state_dict(), getattr(pipe_b, name).state_dict(),
                                  getattr(pipe_c, name).state_dict() if pipe_c else None,
                                  spec, name)
            module_a.load_state_dict(merged)
    # 3. Fuse LoRAs into the merged weights.
    for lora, weight in spec.loras:
        pipe_a.load_lora_weights(str(lora.path), adapter_name=lora.adapter_name)
        pipe_a.fuse_lora(lora_scale=weight, adapter_names=[lora.adapter_name])
        pipe_a.unload_lora_weights()
    # 4. Write one file (and the configs of non-standard shapes), atomically.
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{spec.name}.safetensors"
    tmp = out_dir / f".{spec.name}.{os.getpid()}.safetensors.tmp"
    try:
        save_as_ldm_checkpoint(pipe_a, tmp)
        source_configs = config_source(spec.a)
        if source_configs != spec.a.family_spec.config_dir():
            shutil.copytree(source_configs, out_dir / f"{spec.name}{SIDECAR_SUFFIX}",
                            ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.ckpt",
                                                          "bildwerk_embedded.json"))
        try:
            os.link(tmp, target)  # fails if the name appeared meanwhile: never overwrite
        except FileExistsError:
            raise Conflict(f"{spec.name!r} already exists in the models dir",
                           param="name") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _merge_state(a: dict, b: dict, c: dict | None, spec: MergeSpec, component: str) -> dict:
    if a.keys() != b.keys() or (c is not None and c.keys() != a.keys()):
        raise InvalidInput(f"the models' {component} weights do not match", param="b")
    merged = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise InvalidInput(f"{component}.{key} has shape {tuple(ta.shape)} in "
                               f"{spec.a.id} but {tuple(tb.shape)} in {spec.b.id}", param="b")
        if not ta.is_floating_point():
            merged[key] = ta
        elif spec.method == "weighted_sum":
            merged[key] = torch.lerp(ta, tb, spec.alpha)
        else:
            merged[key] = ta + spec.alpha * (tb - c[key])
    return merged
