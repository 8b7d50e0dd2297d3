"""The model registry: discovers checkpoints, probes what they are, loads them within a
memory budget.

Discovery covers ``BILDWERK_MODELS_DIR`` (diffusers folders, single-file ``.safetensors``
and ``.ckpt`` checkpoints; VAEs under ``vae/`` and LoRAs under ``loras/``) plus the
embedded default model. A loaded checkpoint holds one set of weights; its txt2img,
img2img and inpaint pipelines are made from it with ``from_pipe`` and share every
component. Loaded models are kept least-recently-used first within the budget (VRAM on
CUDA, RAM on the CPU) and evicted whole.

Thread-safety: models are loaded, run and evicted only on the device worker thread (one
job at a time per device), so pipelines are never mutated by two jobs at once. Listing
is safe from any thread.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from diffusers import DiffusionPipeline

from app.errors import BildwerkError, InvalidInput, ModelLoadFailed
from app.observability.metrics import model_loaded
from app.pipelines.device import Runtime, free_memory
from app.pipelines.embedded import embedded_description, ensure_embedded_model, is_embedded
from app.pipelines.families import (
    FAMILIES,
    FAMILY_CONTEXT_DIM,
    SIDECAR_SUFFIX,
    Family,
    probe_diffusers_folder,
    probe_single_file,
    sidecar_config,
)
from app.pipelines.hashes import HashCache
from app.pipelines.hub import hub_snapshot
from app.pipelines.memory import pipeline_bytes
from app.pipelines.schedulers import build_scheduler
from app.pipelines.vaes import VAE_DIR_NAMES, VaeCache, VaeEntry, check_vae, discover_vaes
from app.tasks import Task

log = logging.getLogger("bildwerk.registry")

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
RESERVED_DIRS = {*VAE_DIR_NAMES, "loras", "lora", "Lora", "upscalers"}


class MemoryBudgetExceeded(BildwerkError):
    status_code = 503
    code = "memory_budget_exceeded"


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
    context_dim: int | None = None  # the UNet's cross-attention width (768, 1024, 2048 …)
    repo_id: str | None = None  # set for Hugging Face hub models
    load_bytes: int = 0  # what loading will take (the weights that load), 0 = unknown
    text_layers: int | None = None  # the (smallest) text encoder's depth, for clip_skip

    @property
    def family_spec(self) -> Family:
        return FAMILIES[self.family]


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipelines: dict[Task, DiffusionPipeline] = field(default_factory=dict)
    resident_bytes: int = 0
    load_seconds: float = 0.0
    optimizations: list[str] = field(default_factory=list)  # app/pipelines/fast_path.py

    @property
    def main(self) -> DiffusionPipeline:
        return next(iter(self.pipelines.values()))

    def request_pipeline(self, task: Task, scheduler: str,
                         vae=None) -> DiffusionPipeline:
        """A pipeline object for one request: shares all weights, owns its scheduler and
        its per-call state (interrupt flag, callbacks); ``vae`` swaps in another VAE for
        this request only."""
        base = self.pipelines.get(task)
        if base is None:  # resolve_for refused this when the request was checked
            raise BildwerkError(
                f"model {self.entry.id!r} ({self.entry.variant}) cannot run {task}")
        pipe = copy.copy(base)
        pipe.scheduler = build_scheduler(scheduler, base.scheduler.config)
        if vae is not None:
            pipe.vae = vae
        return pipe


def _is_sidecar(path: Path) -> bool:
    """``<name>.config/`` next to ``<name>.safetensors`` holds that file's configs."""
    if not (path.is_dir() and path.name.endswith(SIDECAR_SUFFIX)):
        return False
    stem = path.name.removesuffix(SIDECAR_SUFFIX)
    return any(path.with_name(stem + s).exists() for s in CHECKPOINT_SUFFIXES)


def main_task(entry: ModelEntry) -> Task:
    """What a checkpoint loads as: inpaint models inpaint, SDXL refiners refine
    (img2img), base models generate (and derive img2img and inpaint from that)."""
    return {"inpaint": "inpaint", "refiner": "img2img"}.get(entry.variant, "txt2img")


def tasks_of(entry: ModelEntry) -> tuple[Task, ...]:
    if entry.variant == "base":
        return ("txt2img", "img2img", "inpaint")
    return (main_task(entry),)


def config_source(entry: ModelEntry) -> Path:
    """Where a checkpoint's diffusers configs live: its folder, its sidecar, or the
    configs shipped for its family."""
    if entry.format == "diffusers":
        return entry.path
    return sidecar_config(entry.path) or entry.family_spec.config_dir()


def load_pipeline(entry: ModelEntry, runtime: Runtime) -> DiffusionPipeline:
    """Load a checkpoint's main pipeline (txt2img, or inpaint for inpaint variants) onto
    the runtime's device and dtype, offline, through the same code path for every use."""
    family = entry.family_spec
    main_cls = family.pipeline_classes[main_task(entry)]
    if entry.format == "diffusers":
        pipe = main_cls.from_pretrained(entry.path, local_files_only=True, dtype=runtime.dtype,
                                        **family.load_kwargs)
    else:
        from app.pipelines.single_file.loader import load_single_file

        pipe = load_single_file(entry.path, config_dir=config_source(entry),
                                torch_dtype=runtime.dtype, pipeline_cls=main_cls)
    pipe.to(runtime.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _context_dim(config_dir: Path) -> int | None:
    import json

    unet = config_dir / "unet" / "config.json"
    return json.loads(unet.read_text()).get("cross_attention_dim") if unet.exists() else None


def _text_layers(config_dir: Path) -> int | None:
    import json

    depths = [json.loads(cfg.read_text()).get("num_hidden_layers")
              for cfg in (config_dir / "text_encoder" / "config.json",
                          config_dir / "text_encoder_2" / "config.json") if cfg.exists()]
    depths = [d for d in depths if isinstance(d, int)]
    return min(depths) if depths else None


_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors",
                 "diffusion_pytorch_model.bin", "pytorch_model.bin")


def _load_bytes(path: Path) -> int:
    """The size of the weights that will load: one file per component (no .bin twins,
    fp16 variants or EMA copies); a single file's size."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for component in (p for p in path.iterdir() if p.is_dir()):
        chosen = next((component / n for n in _WEIGHT_NAMES if (component / n).exists()), None)
        if chosen is not None:
            total += chosen.stat().st_size
    return total


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelRegistry:
    def __init__(self, models_dir: Path, embedded_dir: Path, embedded_id: str,
                 runtime: Runtime, default_model: str | None = None,
                 budget_bytes: int | None = None, hash_cache: HashCache | None = None,
                 hub_repos: tuple[str, ...] = (), hub_cache_dir: Path | None = None,
                 fast_path=None) -> None:
        from app.pipelines.fast_path import FastPath
        from app.pipelines.memory import default_budget_bytes

        self.models_dir = models_dir
        self.embedded_dir = embedded_dir
        self.embedded_id = embedded_id
        self.runtime = runtime
        self.budget_bytes = budget_bytes or default_budget_bytes(runtime)
        self.hashes = hash_cache
        self.hub_repos = hub_repos
        self.hub_cache_dir = hub_cache_dir
        self.vae_cache = VaeCache(runtime)
        self.fast_path = fast_path or FastPath()  # what loaded pipelines run with
        self._default = default_model
        self._entries: dict[str, ModelEntry] = {}
        self._vaes: dict[str, VaeEntry] = {}
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # LRU: oldest first
        self._lock = threading.RLock()
        self.on_unload: list = []  # callbacks(model_id, loaded) e.g. to drop LoRA adapters

    # -- discovery ----------------------------------------------------------------------
    def refresh(self) -> list[ModelEntry]:
        """Re-scan the models dir (and build the embedded model on first start)."""
        entries: dict[str, ModelEntry] = {}
        ensure_embedded_model(self.embedded_dir)
        entries[self.embedded_id] = self._probe(self.embedded_id, self.embedded_dir)
        if self.models_dir.is_dir():
            for path in sorted(self.models_dir.iterdir()):
                model_id = path.stem if path.is_file() else path.name
                if (model_id.startswith(".") or model_id in entries or _is_sidecar(path)
                        or (path.is_dir() and path.name in RESERVED_DIRS)):
                    continue
                try:
                    entry = self._probe(model_id, path)
                except Exception as exc:  # one broken model must not stop the server
                    log.warning("skipping %s: %s", path, exc)
                    continue
                if entry is not None:
                    entries[model_id] = entry
        for repo_id in self.hub_repos:
            snapshot = hub_snapshot(repo_id, self.hub_cache_dir, weights=False)
            if snapshot is None or repo_id in entries:
                continue
            try:
                entry = self._probe(repo_id, snapshot)
            except Exception as exc:
                log.warning("skipping Hugging Face model %s: %s", repo_id, exc)
                continue
            if entry is not None:
                entry.repo_id = repo_id
                entries[repo_id] = entry
        vaes = {v.id: v for v in discover_vaes(self.models_dir)} \
            if self.models_dir.is_dir() else {}
        with self._lock:
            self._entries, self._vaes = entries, vaes
            stale = [mid for mid, loaded in self._loaded.items()
                     if mid not in entries or entries[mid].path != loaded.entry.path
                     or entries[mid].size_bytes != loaded.entry.size_bytes]
        for model_id in stale:
            log.info("unloading %s: its files are gone or changed", model_id)
            self.unload(model_id)
        if self.hashes is not None:
            self.hashes.compute_in_background([e.path for e in entries.values()
                                               if e.repo_id is None])
        log.info("models: %s", ", ".join(entries))
        return list(entries.values())

    def _probe(self, model_id: str, path: Path) -> ModelEntry | None:
        if path.is_dir() and (path / "model_index.json").exists():
            probe = probe_diffusers_folder(path)
            fmt = "diffusers"
        elif path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
            probe = probe_single_file(path)
            fmt = "single_file"
        else:
            return None
        embedded = is_embedded(path)
        config_dir = path if fmt == "diffusers" else sidecar_config(path)
        context_dim = _context_dim(config_dir) if config_dir else \
            FAMILY_CONTEXT_DIM.get(probe.family)
        layers_dir = config_dir or FAMILIES[probe.family].config_dir()
        return ModelEntry(
            id=model_id, path=path, format=fmt, family=probe.family, variant=probe.variant,
            prediction_type=probe.prediction_type, native_resolution=probe.native_resolution,
            size_bytes=_folder_size(path), load_bytes=_load_bytes(path), embedded=embedded,
            description=embedded_description(path) if embedded else "", context_dim=context_dim,
            text_layers=_text_layers(layers_dir))

    # -- lookup -------------------------------------------------------------------------
    def list(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def vaes(self) -> list[VaeEntry]:
        with self._lock:
            return list(self._vaes.values())

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._loaded

    def loaded_info(self, model_id: str) -> LoadedModel | None:
        with self._lock:
            return self._loaded.get(model_id)

    def content_hash(self, entry: ModelEntry) -> str | None:
        return self.hashes.get(entry.path) if self.hashes is not None else None

    @property
    def resident_bytes(self) -> int:
        """Models (with their resident LoRA adapters) plus cached VAEs."""
        with self._lock:
            return sum(m.resident_bytes for m in self._loaded.values()) + \
                self.vae_cache.resident_bytes

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

    def resolve_for(self, model_id: str | None, task: Task) -> ModelEntry:
        """Like :meth:`resolve`, and a clear 422 when the model cannot run ``task``."""
        entry = self.resolve(model_id)
        if task not in tasks_of(entry):
            hint = {"inpaint": "use /inpaint", "img2img": "use /img2seq"}.get(
                main_task(entry), "")
            raise InvalidInput(f"model {entry.id!r} is a {entry.family} {entry.variant} model "
                               f"and cannot run {task}" + (f"; {hint}" if hint else ""),
                               param="model")
        return entry

    def resolve_vae(self, vae_id: str, model: ModelEntry) -> VaeEntry:
        with self._lock:
            entry = self._vaes.get(vae_id)
        if entry is None:
            known = ", ".join(sorted(self._vaes)) or "none"
            raise InvalidInput(f"unknown VAE {vae_id!r}; known VAEs: {known}", param="vae")
        check_vae(entry, 4, model.id)
        return entry

    # -- loading (worker thread only) ---------------------------------------------------
    def load(self, model_id: str) -> LoadedModel:
        entry = self.resolve(model_id)
        with self._lock:
            loaded = self._loaded.get(entry.id)
            if loaded is not None:
                self._loaded.move_to_end(entry.id)  # most recently used
                return loaded
        estimate = entry.load_bytes if entry.repo_id is None else 0
        if estimate > self.budget_bytes:
            raise MemoryBudgetExceeded(
                f"model {entry.id!r} needs about {estimate >> 20} MB but the memory "
                f"budget is {self.budget_bytes >> 20} MB (BILDWERK_MEMORY_BUDGET_MB)",
                param="model")
        self._evict_until(self.budget_bytes - estimate)
        started = time.perf_counter()
        try:
            loaded = self._load(entry)
        except BildwerkError:
            free_memory(self.runtime)
            raise
        except Exception as exc:
            free_memory(self.runtime)
            raise ModelLoadFailed(f"model {entry.id!r} failed to load: {exc}",
                                  param="model") from exc
        loaded.load_seconds = time.perf_counter() - started
        model_loaded(entry.id, loaded.load_seconds)  # the metric, and a log line
        loaded.resident_bytes = pipeline_bytes(loaded.main)
        with self._lock:
            self._loaded[entry.id] = loaded
        self._evict_until(self.budget_bytes, keep=entry.id)
        return loaded

    def fit_budget(self, keep: str | None = None) -> None:
        """Unload least-recently-used models (never ``keep``) until what is resident fits
        the memory budget again, e.g. after adapters were added to a loaded model."""
        self._evict_until(self.budget_bytes, keep=keep)

    def _evict_until(self, allowed_bytes: int, keep: str | None = None) -> None:
        """Unload least-recently-used models until the resident total fits."""
        while self.resident_bytes > allowed_bytes:
            with self._lock:
                victim = next((mid for mid in self._loaded if mid != keep), None)
            if victim is None:
                if self.vae_cache.resident_bytes:
                    self.vae_cache.clear()
                    free_memory(self.runtime)
                    continue
                return
            log.info("evicting %s to stay within the memory budget", victim)
            self.unload(victim)

    def _load(self, entry: ModelEntry) -> LoadedModel:
        family = entry.family_spec
        if entry.repo_id is not None:  # fetch the weights now (or find them in the cache)
            snapshot = hub_snapshot(entry.repo_id, self.hub_cache_dir, weights=True)
            if snapshot is None:
                raise ModelLoadFailed(f"the weights of {entry.repo_id!r} are neither cached "
                                      "nor downloadable now", param="model")
            entry.path = snapshot
        pipe = load_pipeline(entry, self.runtime)
        optimizations = self.fast_path.apply(pipe, self.runtime, entry.native_resolution)
        from app.pipelines.preview import load_taesd

        pipe.preview_decoder = load_taesd(self.models_dir, entry.family, self.runtime) \
            if self.fast_path.taesd_previews else None
        if pipe.preview_decoder is not None:
            optimizations.append("taesd previews")
        pipelines: dict[Task, DiffusionPipeline] = {main_task(entry): pipe}
        tasks: tuple[Task, ...] = ("img2img", "inpaint") if entry.variant == "base" else ()
        for task in tasks:
            # from_pipe casts the shared modules to its dtype, fp32 unless told: without
            # it, fp16 weights on CUDA (bf16 on a CPU) became fp32 for every task.
            derived = family.pipeline_classes[task].from_pipe(pipe, dtype=self.runtime.dtype)
            derived.preview_decoder = pipe.preview_decoder
            derived.set_progress_bar_config(disable=True)
            pipelines[task] = derived
        return LoadedModel(entry=entry, pipelines=pipelines, optimizations=optimizations)

    def unload(self, model_id: str) -> bool:
        with self._lock:
            loaded = self._loaded.pop(model_id, None)
        if loaded is None:
            return False
        for callback in self.on_unload:
            callback(model_id, loaded)
        loaded.pipelines.clear()
        del loaded
        free_memory(self.runtime)
        return True

    def unload_all(self) -> int:
        with self._lock:
            ids = list(self._loaded)
        for model_id in ids:
            self.unload(model_id)
        self.vae_cache.clear()
        return len(ids)

    def after_oom(self, keep: str | None = None) -> None:
        """After an out-of-memory error: drop every other model and cached VAE."""
        with self._lock:
            ids = [mid for mid in self._loaded if mid != keep]
        for model_id in ids:
            self.unload(model_id)
        self.vae_cache.clear()
        free_memory(self.runtime)


def build_registry(settings, runtime: Runtime) -> ModelRegistry:
    """The registry as ``settings`` describe it (models dir, embedded model, hub repos,
    memory budget, hash cache, fast path): one construction for the server and every CLI
    command."""
    from app.pipelines.fast_path import FastPath
    return ModelRegistry(
        settings.models_dir, settings.embedded_dir / settings.embedded_model_id,
        settings.embedded_model_id, runtime, settings.default_model,
        budget_bytes=settings.memory_budget_mb * 2**20 if settings.memory_budget_mb else None,
        hash_cache=HashCache(settings.data_dir / "model_hashes.json"),
        hub_repos=tuple(r.strip() for r in settings.hf_models.split(",") if r.strip()),
        hub_cache_dir=settings.hf_cache_dir,
        fast_path=FastPath.from_settings(settings, runtime))
