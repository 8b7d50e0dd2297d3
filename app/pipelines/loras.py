"""LoRA adapters: discovering ``.safetensors`` LoRA files, probing them from their headers,
checking they fit a model, and applying them per request to a loaded model's shared modules.

Probing reads only the safetensors header (key names, tensor shapes, metadata); no tensor
is loaded. Two on-disk layouts are recognised:

- ``diffusers``: keys such as ``unet.<module>.lora_A.weight`` (PEFT),
  ``unet.<module>.lora.down.weight`` (older diffusers) or
  ``text_encoder.<module>.lora_linear_layer.down.weight``;
- ``kohya``: keys such as ``lora_unet_<module_with_underscores>.lora_down.weight``,
  ``.lora_up.weight`` and ``.alpha``, plus ``lora_te_``/``lora_te1_``/``lora_te2_`` for the
  text encoders (what A1111, ComfyUI and the kohya trainer write).

Both load through ``pipe.load_lora_weights(path, adapter_name=...)``.

How adapters live on a model: all requests on one model share its UNet and text encoder
(``LoadedModel.request_pipeline`` only shallow-copies the pipeline), so a LoRA is loaded
once into those shared modules as a named PEFT adapter and stays resident, up to
``max_resident`` per model (least recently used evicted). Each request then activates
exactly the adapters it asked for with their weights (``set_adapters``); ``reset`` disables
every LoRA layer (``disable_lora``), which makes each wrapped layer call only its original
base layer, so a request without LoRAs computes exactly what the pristine model computes
(bit-identical, checked in tests/pipelines/test_loras.py).

Thread-safety: ``LoraManager.apply``/``reset``/``unload_all`` mutate the shared modules and
are called only from the device worker thread, which runs one job at a time; they take no
locks. ``discover_loras``/``probe_lora``/``check_compatible`` are pure and safe anywhere.

Hotswap (CUDA only, by default): when a model's adapter slots are full, diffusers/PEFT can
overwrite an evicted adapter's weights in place (``load_lora_weights(..., hotswap=True)``)
instead of deleting it and wrapping layers anew, which avoids recompiling a
``torch.compile``d UNet. It needs ``enable_lora_hotswap`` before the model's first adapter,
works only for UNet-only LoRAs (text-encoder hotswap is unsupported in diffusers) of rank
<= ``hotswap_target_rank``, and we fall back to delete-and-load on any failure. It cannot
be exercised for its real benefit (no recompilation) on a CPU-only machine; the tests only
force it on CPU to check it still produces the right images.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.errors import InvalidInput, ModelLoadFailed

log = logging.getLogger("bildwerk.loras")

# PEFT warns on every second adapter loaded into a module; several resident adapters per
# model is exactly what we want.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute",
                        category=UserWarning)

LoraFormat = Literal["diffusers", "kohya"]

# Cross-attention (context) width of each family's UNet.
FAMILY_CONTEXT_DIM: dict[str, int] = {"sd15": 768, "sd21": 1024, "sdxl": 2048}
_CONTEXT_TO_FAMILY = {dim: fam for fam, dim in FAMILY_CONTEXT_DIM.items()}

_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_DOWN_SUFFIXES = (".lora_down.weight", ".lora.down.weight", ".lora_A.weight",
                  ".lora_linear_layer.down.weight")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class LoraEntry:
    """What we know about one LoRA file without loading it."""

    id: str                       # the file stem; what clients name in a request
    path: Path
    format: LoraFormat
    family: str | None            # "sd15" | "sd21" | "sdxl" | None (unknown, e.g. tiny models)
    targets: tuple[str, ...]      # subset of ("unet", "text_encoder", "text_encoder_2")
    rank: int                     # largest rank among its layers
    size_bytes: int
    context_dim: int | None       # cross-attention width it was made for (None: can't tell)
    mtime_ns: int = field(default=0, compare=False)

    @property
    def adapter_name(self) -> str:
        """The PEFT adapter name: the id when it is a plain identifier (PEFT puts adapter
        names into parameter paths, so dots and spaces are not safe), else a sanitized id
        with a short hash so distinct ids never collide."""
        if _SAFE_NAME.match(self.id):
            return self.id
        digest = hashlib.sha1(self.id.encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_-]', '_', self.id)}-{digest}"

    @property
    def unet_only(self) -> bool:
        return self.targets == ("unet",)


def _component_of(key: str, fmt: LoraFormat) -> str | None:
    if fmt == "kohya":
        if key.startswith("lora_unet_"):
            return "unet"
        if key.startswith(("lora_te_", "lora_te1_")):
            return "text_encoder"
        if key.startswith("lora_te2_"):
            return "text_encoder_2"
        return None
    head = key.split(".", 1)[0]
    if head in ("unet", "text_encoder", "text_encoder_2"):
        return head
    if head in ("down_blocks", "up_blocks", "mid_block", "conv_in", "time_embedding"):
        return "unet"  # very old diffusers files saved UNet keys without a prefix
    if head == "transformer":
        return "transformer"
    return None


def _is_context_key(key: str, fmt: LoraFormat) -> bool:
    """The down (A) weight of a cross-attention key projection: its in-features are the
    text-embedding width the UNet cross-attends to."""
    if fmt == "kohya":
        return key.startswith("lora_unet_") and key.endswith("attn2_to_k.lora_down.weight")
    return ("attn2.to_k." in key or "attn2.processor.to_k_lora." in key) and \
        key.endswith(("lora_A.weight", "lora.down.weight", "down.weight"))


def probe_lora(path: Path) -> LoraEntry:
    """Probe a LoRA ``.safetensors`` file from its header. Raises ``ValueError`` when it is
    not a LoRA we understand."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        metadata = fh.metadata() or {}
        if not keys:
            raise ValueError("empty safetensors file")
        if any(k.startswith(_KOHYA_PREFIXES) for k in keys):
            fmt: LoraFormat = "kohya"
        elif any(k.endswith(_DOWN_SUFFIXES) or ".lora_B." in k for k in keys):
            fmt = "diffusers"
        else:
            raise ValueError("no LoRA keys (expected lora_unet_*/lora_te_* or *.lora_A.*)")
        down_keys = [k for k in keys if k.endswith(_DOWN_SUFFIXES)]
        if not down_keys:
            raise ValueError("no LoRA down/A weights")
        ranks = [fh.get_slice(k).get_shape()[0] for k in down_keys]
        context_key = next((k for k in down_keys if _is_context_key(k, fmt)), None)
        context_dim = int(fh.get_slice(context_key).get_shape()[-1]) if context_key else None
    targets = sorted({c for k in down_keys if (c := _component_of(k, fmt))},
                     key=["unet", "text_encoder", "text_encoder_2", "transformer"].index)
    if "transformer" in targets:
        raise ValueError("a transformer (DiT) LoRA; only UNet (SD1.x/2.x/XL) LoRAs are supported")
    if not targets:
        raise ValueError("LoRA keys name no UNet or text encoder module")
    family = _CONTEXT_TO_FAMILY.get(context_dim) if context_dim else None
    if family is None and "text_encoder_2" in targets:
        family = "sdxl"
    if family is None and context_dim is None:
        family = _family_from_metadata(metadata)
    stat = path.stat()
    return LoraEntry(id=path.stem, path=path, format=fmt, family=family, targets=tuple(targets),
                     rank=int(max(ranks)), size_bytes=stat.st_size, context_dim=context_dim,
                     mtime_ns=stat.st_mtime_ns)


def _family_from_metadata(metadata: dict[str, str]) -> str | None:
    """kohya's trainer writes ``ss_base_model_version`` (e.g. ``sd_v1``, ``sd_v2``,
    ``sdxl_base_v1-0``); only a hint, used when the tensor shapes cannot tell."""
    version = metadata.get("ss_base_model_version", "").lower()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2"):
        return "sd21"
    if version.startswith("sd_v1"):
        return "sd15"
    return None


def discover_loras(folder: Path) -> list[LoraEntry]:
    """Every readable LoRA ``*.safetensors`` directly in ``folder``, sorted by id. Anything
    unreadable or not a LoRA is logged and skipped; other file types are ignored (pickled
    ``.ckpt``/``.pt`` files are never opened)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries: list[LoraEntry] = []
    for path in sorted(folder.glob("*.safetensors")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            entries.append(probe_lora(path))
        except Exception as exc:  # one broken file must not hide the others
            log.warning("skipping LoRA %s: %s", path, exc)
    return entries


def check_compatible(entry: LoraEntry, unet_cross_attention_dim: int,
                     family: str | None = None) -> None:
    """Raise ``InvalidInput(param="loras")`` when ``entry`` was made for a model with a
    different cross-attention width than this one (e.g. an SDXL LoRA, 2048, on SD1.5, 768).
    A LoRA whose width cannot be read from its header (no ``attn2.to_k`` layer) passes."""
    if entry.context_dim is None or entry.context_dim == unet_cross_attention_dim:
        return
    lora_kind = f"{entry.family} " if entry.family else ""
    model_kind = f"{family} " if family else ""
    raise InvalidInput(
        f"LoRA {entry.id!r} was made for a {lora_kind}model with cross-attention width "
        f"{entry.context_dim}, but this {model_kind}model has width "
        f"{unet_cross_attention_dim}; pick a LoRA made for this model's family",
        param="loras")


# -- applying ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One resident adapter: its PEFT name and the file it currently holds."""

    adapter_name: str
    entry: LoraEntry


@dataclass
class _ModelState:
    unet: weakref.ref            # the shared UNet the adapters live in
    slots: OrderedDict[str, _Slot] = field(default_factory=OrderedDict)  # id -> slot, LRU first
    hotswap_ready: bool = False


@dataclass
class ApplyStats:
    """What the last ``apply`` did, for logs and tests."""

    loaded: list[str] = field(default_factory=list)
    hotswapped: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    seconds: float = 0.0


class LoraManager:
    """Keeps LoRA adapters resident in loaded models and switches them per request.

    Only the device worker thread may call ``apply``, ``reset`` and ``unload_all`` (one job
    at a time), since they mutate modules that every request on the model shares.
    """

    def __init__(self, max_resident: int = 8, *, hotswap: bool | None = None,
                 hotswap_target_rank: int = 128) -> None:
        if max_resident < 1:
            raise ValueError("max_resident must be at least 1")
        self.max_resident = max_resident
        self._hotswap = hotswap  # None: use it where the UNet is on CUDA
        self.hotswap_target_rank = hotswap_target_rank
        self._models: dict[str, _ModelState] = {}
        self.last = ApplyStats()

    # -- public -----------------------------------------------------------------------------
    def resident(self, model_key: str) -> list[str]:
        """Ids of the LoRAs resident in ``model_key``, least recently used first."""
        state = self._models.get(model_key)
        return list(state.slots) if state else []

    def apply(self, pipe: Any, model_key: str, loras: list[tuple[LoraEntry, float]], *,
              family: str | None = None) -> ApplyStats:
        """Make ``pipe`` run with exactly ``loras`` (entry, weight) active.

        Loads missing adapters into the model's shared modules (evicting the least recently
        used beyond ``max_resident``), then activates the requested ones with their weights.
        An empty list is the same as ``reset``. Caller mistakes raise ``InvalidInput``.
        """
        started = time.perf_counter()
        stats = ApplyStats()
        self.last = stats
        if not loras:
            self.reset(pipe)
            stats.seconds = time.perf_counter() - started
            return stats
        self._validate(pipe, loras, family)
        state = self._state(pipe, model_key)
        wanted = {entry.id for entry, _ in loras}
        for entry, _ in loras:
            slot = state.slots.get(entry.id)
            if slot is not None and _same_file(slot.entry, entry):
                state.slots.move_to_end(entry.id)
                continue
            if slot is not None:  # the file changed on disk since it was loaded
                self._delete(pipe, state, entry.id)
                stats.evicted.append(entry.id)
            self._load(pipe, state, entry, wanted, stats)
        names = [state.slots[entry.id].adapter_name for entry, _ in loras]
        weights = [float(weight) for _, weight in loras]
        _set_lora_enabled(pipe, True)
        pipe.set_adapters(names, adapter_weights=weights)
        stats.seconds = time.perf_counter() - started
        log.debug("LoRAs on %s: %s (%.3fs)", model_key,
                  ", ".join(f"{e.id}:{w:g}" for e, w in loras), stats.seconds)
        return stats

    def reset(self, pipe: Any) -> None:
        """Turn every LoRA layer of ``pipe``'s shared modules off: the model computes exactly
        what it computed before any LoRA was loaded. Adapters stay resident."""
        _set_lora_enabled(pipe, False)

    def unload_all(self, pipe: Any | None, model_key: str) -> None:
        """Forget (and, given the pipeline, delete) every adapter of ``model_key``; call when
        the model is unloaded. Pass ``pipe=None`` when its modules are being dropped anyway."""
        state = self._models.pop(model_key, None)
        if pipe is None or state is None or not state.slots:
            return
        try:
            pipe.delete_adapters([slot.adapter_name for slot in state.slots.values()])
        except Exception as exc:  # the modules are going away; never fail an unload
            log.warning("could not delete LoRA adapters of %s: %s", model_key, exc)

    # -- internals --------------------------------------------------------------------------
    def _validate(self, pipe: Any, loras: list[tuple[LoraEntry, float]],
                  family: str | None) -> None:
        if len(loras) > self.max_resident:
            raise InvalidInput(f"at most {self.max_resident} LoRAs can be used at once, "
                               f"got {len(loras)}", param="loras")
        seen: set[str] = set()
        for entry, weight in loras:
            if entry.id in seen:
                raise InvalidInput(f"LoRA {entry.id!r} is listed twice", param="loras")
            seen.add(entry.id)
            if not math.isfinite(float(weight)):
                raise InvalidInput(f"LoRA {entry.id!r} has a non-finite weight", param="loras")
            cross = getattr(pipe.unet.config, "cross_attention_dim", None)
            if isinstance(cross, int):
                check_compatible(entry, cross, family)
            if "text_encoder_2" in entry.targets and getattr(pipe, "text_encoder_2", None) is None:
                raise InvalidInput(f"LoRA {entry.id!r} is for a model with two text encoders "
                                   f"(SDXL), this model has one", param="loras")

    def _state(self, pipe: Any, model_key: str) -> _ModelState:
        state = self._models.get(model_key)
        if state is None or state.unet() is not pipe.unet:
            # New model, or the model was reloaded under the same key: new modules, no adapters.
            state = _ModelState(unet=weakref.ref(pipe.unet))
            self._models[model_key] = state
        return state

    def _use_hotswap(self, pipe: Any) -> bool:
        if not hasattr(pipe, "enable_lora_hotswap"):
            return False
        if self._hotswap is not None:
            return self._hotswap
        return getattr(pipe.unet, "device", None) is not None and pipe.unet.device.type == "cuda"

    def _load(self, pipe: Any, state: _ModelState, entry: LoraEntry, wanted: set[str],
              stats: ApplyStats) -> None:
        hotswap = self._use_hotswap(pipe)
        if hotswap and not state.slots and not state.hotswap_ready and not _has_adapters(pipe):
            try:
                pipe.enable_lora_hotswap(target_rank=self.hotswap_target_rank,
                                         check_compiled="warn")
                state.hotswap_ready = True
            except Exception as exc:
                log.info("LoRA hotswap unavailable, loading adapters normally: %s", exc)
        victim = None
        if len(state.slots) >= self.max_resident:
            victim = next(i for i in state.slots if i not in wanted)  # LRU not needed now
        if victim is not None and state.hotswap_ready and self._hotswap_into(
                pipe, state, victim, entry):
            stats.evicted.append(victim)
            stats.hotswapped.append(entry.id)
            return
        if victim is not None:
            self._delete(pipe, state, victim)
            stats.evicted.append(victim)
        # A hotswapped slot keeps its first adapter's name, so that name may be taken.
        taken = {slot.adapter_name for slot in state.slots.values()}
        name, n = entry.adapter_name, 1
        while name in taken:
            n += 1
            name = f"{entry.adapter_name}-{n}"
        if name in _adapter_names(pipe):  # a stale adapter of that name (e.g. a failed load)
            pipe.delete_adapters([name])
        try:
            pipe.load_lora_weights(str(entry.path), adapter_name=name)
        except Exception as exc:
            if name in _adapter_names(pipe):
                pipe.delete_adapters([name])
            raise ModelLoadFailed(f"LoRA {entry.id!r} could not be loaded: {exc}",
                                  param="loras") from exc
        state.slots[entry.id] = _Slot(adapter_name=name, entry=entry)
        stats.loaded.append(entry.id)

    def _hotswap_into(self, pipe: Any, state: _ModelState, victim: str,
                      entry: LoraEntry) -> bool:
        """Overwrite the victim adapter's weights with ``entry``'s in place. Only UNet-only
        LoRAs replacing UNet-only LoRAs, within the prepared rank; False means not done."""
        slot = state.slots[victim]
        if not (entry.unet_only and slot.entry.unet_only
                and entry.rank <= self.hotswap_target_rank):
            return False
        try:
            pipe.load_lora_weights(str(entry.path), adapter_name=slot.adapter_name,
                                   hotswap=True)
        except Exception as exc:
            # PEFT checks before it copies (same target modules, rank), so the victim's
            # weights are normally untouched; drop it anyway to never run half-swapped.
            log.info("LoRA hotswap of %s into %s failed, loading normally: %s",
                     entry.id, victim, exc)
            self._delete(pipe, state, victim)
            return False
        del state.slots[victim]
        state.slots[entry.id] = _Slot(adapter_name=slot.adapter_name, entry=entry)
        return True

    def _delete(self, pipe: Any, state: _ModelState, lora_id: str) -> None:
        slot = state.slots.pop(lora_id)
        if slot.adapter_name in _adapter_names(pipe):
            pipe.delete_adapters([slot.adapter_name])


def _same_file(a: LoraEntry, b: LoraEntry) -> bool:
    return a.path == b.path and a.size_bytes == b.size_bytes and a.mtime_ns == b.mtime_ns


def _adapter_names(pipe: Any) -> set[str]:
    if not _has_adapters(pipe):
        return set()
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _set_lora_enabled(pipe: Any, enabled: bool) -> None:
    """``pipe.enable_lora()``/``disable_lora()``, but only on modules that carry adapters
    (diffusers raises for a UNet without any, e.g. when only a text-encoder LoRA is
    resident). A disabled LoRA layer calls just its base layer."""
    from diffusers.loaders.lora_base import (
        disable_lora_for_text_encoder,
        enable_lora_for_text_encoder,
    )
    from diffusers.models.modeling_utils import ModelMixin

    for component in getattr(pipe, "_lora_loadable_modules", ("unet", "text_encoder")):
        module = getattr(pipe, component, None)
        if module is None or not getattr(module, "peft_config", None):
            continue
        if isinstance(module, ModelMixin):
            if enabled:
                module.enable_lora()
            else:
                module.disable_lora()
        elif enabled:
            enable_lora_for_text_encoder(module)
        else:
            disable_lora_for_text_encoder(module)


def _has_adapters(pipe: Any) -> bool:
    """Whether any LoRA-loadable module of ``pipe`` carries PEFT adapters."""
    for component in getattr(pipe, "_lora_loadable_modules", ("unet", "text_encoder")):
        module = getattr(pipe, component, None)
        if module is not None and getattr(module, "peft_config", None):
            return True
    return False
