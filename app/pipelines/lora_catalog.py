"""The LoRA catalogue: the LoRA files users bring under ``<models_dir>/loras/`` (or
``lora/``, ``Lora/``), which the API lists and validates requests against, and the
per-request apply/reset around a job through a :class:`LoraManager`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.errors import InvalidInput
from app.pipelines.lora_files import LoraEntry, check_compatible, discover_loras
from app.pipelines.lora_weights import LoraManager

LORA_DIR_NAMES = ("loras", "lora", "Lora")


class LoraCatalog:
    def __init__(self, models_dir: Path, max_resident: int = 8) -> None:
        self.models_dir = models_dir
        self.manager = LoraManager(max_resident=max_resident)
        self._entries: dict[str, LoraEntry] = {}
        self._lock = threading.Lock()

    def refresh(self) -> list[LoraEntry]:
        entries: dict[str, LoraEntry] = {}
        for name in LORA_DIR_NAMES:
            folder = self.models_dir / name
            if folder.is_dir():
                for entry in discover_loras(folder):
                    entries.setdefault(entry.id, entry)
        with self._lock:
            self._entries = entries
        return list(entries.values())

    def list(self) -> list[LoraEntry]:
        with self._lock:
            return list(self._entries.values())

    def resolve(self, name: str, context_dim: int | None, family: str) -> LoraEntry:
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise InvalidInput(f"unknown LoRA {name!r}; known LoRAs: {known}", param="loras")
        if context_dim is not None:
            check_compatible(entry, context_dim, family)
        return entry

    @contextmanager
    def applied(self, pipe, model_id: str,
                loras: list[tuple[LoraEntry, float]]) -> Iterator[None]:
        """Apply ``loras`` to the model's shared modules for one job, then restore it."""
        if not loras:
            yield
            return
        try:
            self.manager.apply(pipe, model_id, loras)
            yield
        finally:
            self.manager.reset(pipe)

    def forget_model(self, model_id: str, pipe) -> None:
        self.manager.unload_all(pipe, model_id)


__all__ = ["LORA_DIR_NAMES", "LoraCatalog"]
