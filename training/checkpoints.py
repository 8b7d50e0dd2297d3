"""Checkpoints of a run and resuming from them.

A checkpoint is ``<work dir>/checkpoints/checkpoint-<step>``: accelerate's
``save_state`` (optimizer, LR scheduler, random states) plus, through save/load hooks,
only the weights that train (``<model>.trainable.safetensors``: the LoRA weights, or the
fine-tuned modules), and ``trainer_state.json`` (the step, its loss and the run's
structure). It is written under a hidden ``.partial`` name and renamed into place, so a
crash never leaves half a checkpoint that ``latest`` would pick. A resume refuses a
checkpoint written by a run of another structure (method, task, rank, …).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from training.config import TrainConfig

STATE_NAME = "trainer_state.json"


def list_checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-<n>`` folders in ``folder``, oldest (smallest n) first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name.removeprefix("checkpoint-").isdigit() and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def latest_checkpoint(work_dir: Path) -> Path | None:
    found = list_checkpoints(Path(work_dir) / "checkpoints")
    return found[-1] if found else None


def run_structure(cfg: TrainConfig) -> dict:
    """What a checkpoint must share with the run that resumes it."""
    return {"method": cfg.method, "task": cfg.task,
            "train_text_encoder": cfg.train_text_encoder,
            "rank": cfg.rank if cfg.method == "lora" else None,
            "lora_alpha": (cfg.lora_alpha or cfg.rank) if cfg.method == "lora" else None}


class Checkpoints:
    """Saving and resuming one run's checkpoints through its accelerator.

    Registers the hooks that keep checkpoints to the trainable weights of ``models``
    (prepared by the accelerator, named ``model_names``)."""

    def __init__(self, cfg: TrainConfig, accelerator, model_names: list[str],
                 device: torch.device) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.model_names = model_names
        self.device = device
        self.folder: Path = cfg.work_dir / "checkpoints"  # type: ignore[operator]
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    def save(self, step: int, loss: float) -> Path:
        """Write ``checkpoint-<step>`` and drop the oldest beyond the configured limit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"checkpoint-{step}"
        partial = self.folder / f".checkpoint-{step}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.save_state(str(partial))
        cfg = self.cfg
        (partial / STATE_NAME).write_text(json.dumps({
            "global_step": step, "loss": loss if math.isfinite(loss) else None,
            **run_structure(cfg), "seed": cfg.seed,
            "train_batch_size": cfg.train_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "resolution": cfg.resolution, "base": str(cfg.base)}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        limit = cfg.checkpoints_total_limit
        if limit is not None:
            for old in list_checkpoints(self.folder)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def resume(self) -> tuple[int, Path | None, float]:
        """Load the checkpoint ``resume_from_checkpoint`` names ("latest" or a path) into
        the accelerator: (its step, its folder, its loss); ``(0, None, nan)`` when there
        is nothing to resume."""
        wanted = self.cfg.resume_from_checkpoint
        if not wanted:
            return 0, None, float("nan")
        if wanted == "latest":
            found = list_checkpoints(self.folder)
            if not found:
                return 0, None, float("nan")  # nothing saved yet: a fresh run (as diffusers)
            path = found[-1]
        else:
            path = Path(wanted).expanduser()
            if not path.exists() and (self.folder / wanted).exists():
                path = self.folder / wanted
            if not (path / STATE_NAME).is_file():
                raise ValueError(f"resume_from_checkpoint: {wanted} is not a checkpoint of this "
                                 f"trainer (no {STATE_NAME})")
        state = json.loads((path / STATE_NAME).read_text())
        ours = run_structure(self.cfg)
        differs = [k for k, v in ours.items() if state.get(k) != v]
        if differs:
            raise ValueError(f"checkpoint {path} was written by a run with other "
                             + ", ".join(f"{k}={state.get(k)!r} (now {ours[k]!r})"
                                         for k in differs))
        self.accelerator.load_state(str(path))
        loss = float(state["loss"]) if state.get("loss") is not None else float("nan")
        return int(state["global_step"]), path, loss

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


__all__ = ["STATE_NAME", "Checkpoints", "latest_checkpoint", "list_checkpoints",
           "run_structure"]
