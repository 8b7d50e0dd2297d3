"""Applying LoRA adapters to a loaded model's shared modules, per request.

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
locks.

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

import logging
import math
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidInput, ModelLoadFailed
from app.pipelines.lora_files import LoraEntry, check_compatible

log = logging.getLogger("bildwerk.loras")

# PEFT warns on every second adapter loaded into a module; several resident adapters per
# model is exactly what we want.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute",
                        category=UserWarning)


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


__all__ = ["ApplyStats", "LoraManager"]
