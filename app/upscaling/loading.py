"""Load model upscalers through spandrel, and keep the last one or two loaded.

spandrel detects the architecture (ESRGAN, Real-ESRGAN Compact, SwinIR, HAT, DAT, …) and
its hyperparameters from the state dict's keys and shapes. The file itself is read here,
not by spandrel's ``load_from_file``, so that it follows the rules of the rest of
Bildwerk: ``.pth``/``.pt``/``.ckpt`` through ``torch.load(weights_only=True)`` (tensors and
plain containers only; pickled code and TorchScript are refused), ``.safetensors`` through
safetensors. Only super-resolution models are upscalers: a restoration (scale 1), face or
inpainting model is refused with a message that says what it is.

Precision: fp16 (else bf16) on CUDA where the architecture supports it, fp32 on the CPU.

Thread-safety: :class:`UpscalerModels` loads one model at a time (threads asking for
the same file share one load) and guards its index with a lock held only briefly, so
listing never waits for a load. Each :class:`LoadedUpscaler` carries its own run lock:
one model runs one image at a time, and its weights are never changed after loading. An
evicted model that is still running stays alive until that run ends.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.errors import InvalidInput, ModelLoadFailed
from app.pipelines.device import Runtime, free_memory
from app.upscaling.catalog import UpscalerEntry
from app.upscaling.spandrel_import import import_spandrel

log = logging.getLogger("bildwerk.upscaling")

DEFAULT_CACHE_SIZE = 1  # loaded model upscalers kept; ESRGAN-size models are ~64 MB
_REASON_CHARS = 300  # of a reader's error message quoted back
_UNPICKLER = "WeightsUnpickler error:"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class LoadedUpscaler:
    """A model upscaler ready to run: spandrel's descriptor on the runtime's device."""

    entry: UpscalerEntry
    descriptor: object  # spandrel.ImageModelDescriptor (spandrel is imported lazily)
    scale: int
    architecture: str
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    signature: tuple = ()  # (mtime_ns, size) of the file when it was read
    run_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def align(self) -> int:
        """Tiles start on multiples of this (spandrel's ``size_requirements.multiple_of``),
        so a model that unshuffles pixels or works in windows sees the same grid."""
        requirements = getattr(self.descriptor, "size_requirements", None)
        return max(1, int(getattr(requirements, "multiple_of", 1)))

    @property
    def tiles_internally(self) -> bool:
        """spandrel says the model needs the whole image (it tiles internally)."""
        tiling = getattr(self.descriptor, "tiling", None)
        return getattr(tiling, "name", "") == "INTERNAL"


def load_upscaler(entry: UpscalerEntry, runtime: Runtime) -> LoadedUpscaler:
    """Read ``entry``'s file, let spandrel build the model, refuse what is no upscaler,
    and move it to ``runtime``'s device in the precision it supports.

    Raises:
        InvalidInput: the file cannot be read as a state dict, spandrel knows no
            architecture for it, or the model is not an RGB super-resolution model.
        ModelLoadFailed: spandrel itself cannot be imported (e.g. a broken torchvision).
    """
    if entry.kind != "model" or entry.path is None:
        raise ValueError(f"{entry.name} is a built-in upscaler; there is nothing to load")
    started = time.perf_counter()
    signature = file_signature(entry.path)
    state_dict = read_state_dict(entry)
    descriptor = _build(entry, state_dict)
    del state_dict
    dtype = pick_dtype(descriptor, runtime)
    descriptor.to(device=runtime.device, dtype=dtype)
    descriptor.eval()
    loaded = LoadedUpscaler(entry, descriptor, int(descriptor.scale),
                            descriptor.architecture.name, runtime.device, dtype,
                            time.perf_counter() - started, signature)
    log.info("loaded upscaler %s (%s, x%d, %s on %s) in %.2fs", entry.name,
             loaded.architecture, loaded.scale, str(dtype).removeprefix("torch."),
             runtime.device, loaded.load_seconds)
    return loaded


def read_state_dict(entry: UpscalerEntry) -> Mapping:
    """The tensors of ``entry``'s file, on the CPU; :class:`InvalidInput` when the file
    cannot be read (damaged, not a model file, pickled code, TorchScript)."""
    path = entry.path
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # "looks like a TorchScript archive"
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except FileNotFoundError as exc:
        raise InvalidInput(f"upscaler {entry.name!r}: {path.name} is gone; refresh the "
                           "list of upscalers", param="upscaler") from exc
    except Exception as exc:
        raise InvalidInput(
            f"upscaler {entry.name!r}: {path.name} cannot be read as model weights "
            f"({_reason(exc)}); .pth/.pt/.ckpt files must hold a plain state dict "
            "(pickled code and TorchScript are refused), .safetensors files must be intact",
            param="upscaler") from exc
    if not isinstance(state, Mapping):
        raise InvalidInput(f"upscaler {entry.name!r}: {path.name} holds a "
                           f"{type(state).__name__}, not a state dict", param="upscaler")
    return state


def pick_dtype(descriptor, runtime: Runtime) -> torch.dtype:
    """fp32 on the CPU; on an accelerator the runtime's half dtype where the architecture
    supports it, else the other half dtype, else fp32."""
    if runtime.device.type == "cpu" or runtime.dtype == torch.float32:
        return torch.float32
    supported = []
    if descriptor.supports_half:
        supported.append(torch.float16)
    if descriptor.supports_bfloat16 and _bf16_works(runtime.device):
        supported.append(torch.bfloat16)
    if runtime.dtype in supported:
        return runtime.dtype
    return supported[0] if supported else torch.float32


def file_signature(path: Path) -> tuple:
    """Changes when the file is replaced: a cached model of an older file is reloaded."""
    try:
        stat = path.stat()
    except OSError:
        return ()
    return (stat.st_mtime_ns, stat.st_size)


class UpscalerModels:
    """Loaded model upscalers, least recently used first, at most ``capacity`` of them.

    Args:
        runtime (`Runtime`):
            Device and preferred dtype (``app.pipelines.device.resolve_runtime``).
        capacity (`int`, *optional*, defaults to 1):
            Models kept loaded between requests. ``0`` loads for each request and keeps
            nothing.
    """

    def __init__(self, runtime: Runtime, capacity: int = DEFAULT_CACHE_SIZE) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.runtime = runtime
        self.capacity = capacity
        self._loaded: OrderedDict[Path, LoadedUpscaler] = OrderedDict()
        self._lock = threading.Lock()  # guards _loaded; held only briefly
        self._load_lock = threading.Lock()  # one load at a time: no double loads

    def get(self, entry: UpscalerEntry) -> LoadedUpscaler:
        """``entry``'s model, loaded now unless a loaded copy of the same file is kept."""
        cached = self._cached(entry)
        if cached is not None:
            return cached
        with self._load_lock:
            cached = self._cached(entry)  # another thread may have loaded it meanwhile
            if cached is not None:
                return cached
            # make room first: the peak is one model more than the capacity, never two
            with self._lock:
                victims = [self._loaded.popitem(last=False)[1]
                           for _ in range(len(self._loaded) - max(self.capacity - 1, 0))]
            self._free(victims)
            loaded = load_upscaler(entry, self.runtime)
            if self.capacity > 0:
                with self._lock:
                    self._loaded[entry.path] = loaded
            return loaded

    def loaded(self) -> list[str]:
        """Names of the models kept loaded, least recently used first."""
        with self._lock:
            return [loaded.name for loaded in self._loaded.values()]

    def loaded_scales(self) -> dict[str, int]:
        """{name: the loaded model's own scale} of the models kept loaded."""
        with self._lock:
            return {loaded.name: loaded.scale for loaded in self._loaded.values()}

    def unload(self, name: str) -> bool:
        """Drop the model called ``name`` (any letter case); ``False`` if none was loaded."""
        with self._lock:
            victims = [self._loaded.pop(path) for path, loaded in list(self._loaded.items())
                       if loaded.name.lower() == name.strip().lower()]
        found = bool(victims)
        self._free(victims)
        return found

    def clear(self) -> int:
        """Drop every loaded model and give the memory back; returns how many."""
        with self._lock:
            victims = list(self._loaded.values())
            self._loaded.clear()
        count = len(victims)
        self._free(victims)
        return count

    def _cached(self, entry: UpscalerEntry) -> LoadedUpscaler | None:
        """The kept model of ``entry``'s file, unless the file was replaced since."""
        with self._lock:
            cached = self._loaded.get(entry.path)
            if cached is None:
                return None
            if cached.signature == file_signature(entry.path):
                self._loaded.move_to_end(entry.path)
                return cached
            del self._loaded[entry.path]
        victims = [cached]
        del cached  # no reference may outlive the free below
        self._free(victims)
        return None

    def _free(self, victims: list[LoadedUpscaler]) -> None:
        """Forget ``victims`` (the caller's list is emptied, so that this is the last
        reference) and return their memory; a model still running elsewhere stays alive
        until that run ends."""
        if not victims:
            return
        log.info("unloaded upscaler(s) %s", ", ".join(v.name for v in victims))
        victims.clear()
        free_memory(self.runtime)


def _build(entry: UpscalerEntry, state_dict: Mapping):
    """spandrel's descriptor for ``state_dict`` (on the CPU), refused unless it is an
    RGB super-resolution model."""
    try:
        spandrel = import_spandrel()
    except Exception as exc:
        raise ModelLoadFailed(
            f"model upscalers need spandrel, which cannot be imported ({_reason(exc)}); "
            "see docs/upscaling.md") from exc
    try:
        descriptor = spandrel.ModelLoader("cpu").load_from_state_dict(dict(state_dict))
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except spandrel.UnsupportedModelError as exc:
        raise InvalidInput(
            f"upscaler {entry.name!r}: {entry.path.name} is no model architecture spandrel "
            "knows (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, … are)", param="upscaler") from exc
    except Exception as exc:
        raise InvalidInput(
            f"upscaler {entry.name!r}: spandrel could not build a model from "
            f"{entry.path.name} ({_reason(exc)})", param="upscaler") from exc
    _check_is_upscaler(entry, descriptor, spandrel)
    return descriptor


def _check_is_upscaler(entry: UpscalerEntry, descriptor, spandrel) -> None:
    architecture = descriptor.architecture.name
    purpose = descriptor.purpose
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or purpose != "SR":
        what = {"Restoration": "a restoration model (scale 1: denoise, deblur, JPEG)",
                "FaceSR": "a face restoration model",
                "Inpainting": "an inpainting model"}.get(purpose, f"a {purpose} model")
        raise InvalidInput(f"upscaler {entry.name!r}: {entry.path.name} is {what} "
                           f"({architecture}), not a super-resolution model",
                           param="upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise InvalidInput(
            f"upscaler {entry.name!r}: {architecture} model with "
            f"{descriptor.input_channels} input and {descriptor.output_channels} output "
            "channels; only RGB (3-channel) upscalers are supported", param="upscaler")


def _bf16_works(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def _reason(exc: BaseException) -> str:
    """The informative part of a reader's error, on one line: torch's weights-only
    refusal is a page of advice around one sentence that names what was refused."""
    text = _ANSI.sub("", str(exc))
    if _UNPICKLER in text:
        text = text.split(_UNPICKLER, 1)[1].split("Please use", 1)[0].split("Check the", 1)[0]
    text = text.split(" In PyTorch 2.6", 1)[0]  # advice to load unsafely: not for us
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "…"
