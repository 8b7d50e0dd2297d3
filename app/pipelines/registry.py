"""The model registry: discovers checkpoints, probes what they are, loads them once.

Discovery covers ``BILDWERK_MODELS_DIR`` (diffusers folders and single-file
``.safetensors`` checkpoints) plus the embedded default model. A loaded checkpoint holds
one set of weights; its txt2img, img2img and inpaint pipelines are made from it with
``from_pipe`` and share every component.

Thread-safety: models are loaded and run only on the device worker thread (one job at a
time per device), so pipelines are never mutated by two jobs at once. Listing is safe
from any thread.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from diffusers import DiffusionPipeline

from app.errors import InvalidInput, ModelLoadFailed
from app.pipelines.device import Runtime, free_memory
from app.pipelines.embedded import EMBEDDED_DESCRIPTION, ensure_embedded_model, is_embedded
from app.pipelines.families import (
    FAMILIES,
    SIDECAR_SUFFIX,
    Family,
    probe_diffusers_folder,
    probe_single_file,
    sidecar_config,
)
from app.pipelines.schedulers import build_scheduler

log = logging.getLogger("bildwerk.registry")

Task = Literal["txt2img", "img2img", "inpaint"]


@dataclass
class ModelEntry:
    """What the registry knows about one checkpoint without loading it."""

    id: str
    path: Path
    format: Literal["diffusers", "single_file"]
    family: str
    variant: Literal["base", "inpaint", "refiner"]
    prediction_type: str
    native_resolution: int
    size_bytes: int
    embedded: bool = False
    description: str = ""

    @property
    def family_spec(self) -> Family:
        return FAMILIES[self.family]


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipelines: dict[Task, DiffusionPipeline] = field(default_factory=dict)

    def request_pipeline(self, task: Task, scheduler: str) -> DiffusionPipeline:
        """A pipeline object for one request: shares all weights, owns its scheduler and
        its per-call state (interrupt flag, callbacks)."""
        base = self.pipelines.get(task)
        if base is None:
            raise InvalidInput(
                f"model {self.entry.id!r} ({self.entry.variant}) cannot run {task}",
                param="model")
        pipe = copy.copy(base)
        pipe.scheduler = build_scheduler(scheduler, base.scheduler.config)
        return pipe


def _is_sidecar(path: Path) -> bool:
    """``<name>.config/`` next to ``<name>.safetensors`` holds that file's configs."""
    return path.is_dir() and path.name.endswith(SIDECAR_SUFFIX) and \
        path.with_name(path.name.removesuffix(SIDECAR_SUFFIX) + ".safetensors").exists()


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelRegistry:
    def __init__(self, models_dir: Path, embedded_dir: Path, embedded_id: str,
                 runtime: Runtime, default_model: str | None = None) -> None:
        self.models_dir = models_dir
        self.embedded_dir = embedded_dir
        self.embedded_id = embedded_id
        self.runtime = runtime
        self._default = default_model
        self._entries: dict[str, ModelEntry] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()

    # -- discovery ----------------------------------------------------------------------
    def refresh(self) -> list[ModelEntry]:
        """Re-scan the models dir (and build the embedded model on first start)."""
        entries: dict[str, ModelEntry] = {}
        ensure_embedded_model(self.embedded_dir)
        entries[self.embedded_id] = self._probe(self.embedded_id, self.embedded_dir)
        if self.models_dir.is_dir():
            for path in sorted(self.models_dir.iterdir()):
                model_id = path.stem if path.is_file() else path.name
                if model_id.startswith(".") or model_id in entries or _is_sidecar(path):
                    continue
                try:
                    entry = self._probe(model_id, path)
                except Exception as exc:  # one broken model must not stop the server
                    log.warning("skipping %s: %s", path, exc)
                    continue
                if entry is not None:
                    entries[model_id] = entry
        with self._lock:
            self._entries = entries
        log.info("models: %s", ", ".join(entries))
        return list(entries.values())

    def _probe(self, model_id: str, path: Path) -> ModelEntry | None:
        if path.is_dir() and (path / "model_index.json").exists():
            probe = probe_diffusers_folder(path)
            fmt = "diffusers"
        elif path.is_file() and path.suffix == ".safetensors":
            probe = probe_single_file(path)
            fmt = "single_file"
        else:
            return None
        embedded = is_embedded(path)
        return ModelEntry(
            id=model_id, path=path, format=fmt, family=probe.family, variant=probe.variant,
            prediction_type=probe.prediction_type, native_resolution=probe.native_resolution,
            size_bytes=_folder_size(path), embedded=embedded,
            description=EMBEDDED_DESCRIPTION if embedded else "")

    # -- lookup -------------------------------------------------------------------------
    def list(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    @property
    def default_id(self) -> str:
        with self._lock:
            if self._default and self._default in self._entries:
                return self._default
            user = [e.id for e in self._entries.values() if not e.embedded]
            return user[0] if user else self.embedded_id

    def resolve(self, model_id: str | None) -> ModelEntry:
        """The entry for ``model_id`` (or the default), or a 422 naming the field."""
        with self._lock:
            key = model_id or self.default_id
            entry = self._entries.get(key)
            if entry is None:
                known = ", ".join(sorted(self._entries)) or "none"
                raise InvalidInput(f"unknown model {key!r}; known models: {known}",
                                   param="model")
            return entry

    # -- loading (worker thread only) ---------------------------------------------------
    def load(self, model_id: str) -> LoadedModel:
        entry = self.resolve(model_id)
        loaded = self._loaded.get(entry.id)
        if loaded is not None:
            return loaded
        try:
            loaded = self._load(entry)
        except InvalidInput:
            raise
        except Exception as exc:
            free_memory(self.runtime)
            raise ModelLoadFailed(f"model {entry.id!r} failed to load: {exc}",
                                  param="model") from exc
        self._loaded[entry.id] = loaded
        return loaded

    def _load(self, entry: ModelEntry) -> LoadedModel:
        family = entry.family_spec
        main_task: Task = "inpaint" if entry.variant == "inpaint" else "txt2img"
        main_cls = family.pipeline_classes[main_task]
        kwargs = dict(dtype=self.runtime.dtype, **family.load_kwargs)
        if entry.format == "diffusers":
            pipe = main_cls.from_pretrained(entry.path, local_files_only=True, **kwargs)
        else:
            from app.pipelines.single_file.loader import load_single_file

            config_dir = sidecar_config(entry.path) or family.config_dir()
            pipe = load_single_file(entry.path, config_dir=config_dir,
                                    torch_dtype=self.runtime.dtype, pipeline_cls=main_cls)
        pipe.to(self.runtime.device)
        pipe.set_progress_bar_config(disable=True)
        pipelines: dict[Task, DiffusionPipeline] = {main_task: pipe}
        tasks: tuple[Task, ...] = ("img2img", "inpaint") if entry.variant != "inpaint" else ()
        for task in tasks:
            derived = family.pipeline_classes[task].from_pipe(pipe)
            derived.set_progress_bar_config(disable=True)
            pipelines[task] = derived
        return LoadedModel(entry=entry, pipelines=pipelines)

    def unload(self, model_id: str) -> bool:
        loaded = self._loaded.pop(model_id, None)
        if loaded is None:
            return False
        loaded.pipelines.clear()
        del loaded
        free_memory(self.runtime)
        return True


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
