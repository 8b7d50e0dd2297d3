"""What upscalers exist: the built-in resamplers and the model files in one folder.

Names follow AUTOMATIC1111: the built-ins are ``Lanczos`` and ``Nearest``; a model
upscaler is named by its file's stem (``4x-UltraSharp.pth`` is ``4x-UltraSharp``). Listing
never loads a file, as in AUTOMATIC1111: a folder of large models lists instantly, and a
file that turns out not to be an upscaler is refused when it is first used. The scale is
read from the name where the name says it (``4x-…``, ``…_x2``); the model itself decides
once it is loaded.

Thread-safety: :meth:`UpscalerCatalog.refresh` builds a new index and swaps it in whole,
so listing and resolving are safe from any thread while a refresh runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from app.errors import NotFound

log = logging.getLogger("bildwerk.upscaling")

MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
# Pillow filters of the built-in upscalers, by their AUTOMATIC1111 names.
BUILTIN_RESAMPLERS = {"Lanczos": Image.Resampling.LANCZOS,
                      "Nearest": Image.Resampling.NEAREST}
_LISTED_IN_ERRORS = 20  # names an unknown-name error lists before "and N more"
# "4x-UltraSharp", "4xNomos8k", "2x_foo" / "RealESRGAN_x4plus", "realesr-general-x4v3",
# "SwinIR-M_x4_GAN", "ESRGAN_4x": a 1-8 with an x on one side, not inside another word.
_SCALE_BEFORE_X = re.compile(r"(?:^|[^a-z0-9])([1-8])x")
_SCALE_AFTER_X = re.compile(r"(?:^|[^a-z0-9])x([1-8])(?![0-9])")


@dataclass(frozen=True)
class UpscalerEntry:
    """One upscaler a request may name.

    ``scale`` is what the model file's name promises (``None`` when it says nothing, and
    for the built-ins, which resize to any scale); the loaded model has the final word.
    """

    name: str
    kind: Literal["builtin", "model"]
    path: Path | None = None
    scale: int | None = None
    size_bytes: int | None = None

    @property
    def resample(self) -> Image.Resampling | None:
        """The Pillow filter of a built-in upscaler; ``None`` for a model."""
        return BUILTIN_RESAMPLERS.get(self.name) if self.kind == "builtin" else None


BUILTIN_UPSCALERS = tuple(UpscalerEntry(name, "builtin") for name in BUILTIN_RESAMPLERS)


def scale_from_name(stem: str) -> int | None:
    """The scale a model file's name states (``4x-UltraSharp`` → 4), or ``None``."""
    lowered = stem.lower()
    for pattern in (_SCALE_BEFORE_X, _SCALE_AFTER_X):
        match = pattern.search(lowered)
        if match:
            return int(match.group(1))
    return None


class UpscalerCatalog:
    """The built-in upscalers plus the model files under ``models_dir`` (searched
    recursively, so AUTOMATIC1111's ``ESRGAN/``, ``RealESRGAN/``, ``SwinIR/`` subfolders
    can be copied in as they are).

    Args:
        models_dir (`Path`, *optional*):
            The folder of upscaler model files, e.g. ``BILDWERK_MODELS_DIR/upscalers``. A
            missing folder (or ``None``) leaves only the built-ins.
    """

    def __init__(self, models_dir: Path | None) -> None:
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self._by_key: dict[str, UpscalerEntry] = {}
        self.refresh()

    def refresh(self) -> list[UpscalerEntry]:
        """Rescan the folder (files added, removed or replaced); returns the new list."""
        index: dict[str, UpscalerEntry] = {e.name.lower(): e for e in BUILTIN_UPSCALERS}
        for entry in _scan(self.models_dir):
            key = entry.name.lower()
            if key in index:
                log.warning("upscaler %s: the name %r is taken (by %s); file ignored",
                            entry.path, entry.name, index[key].path or "a built-in")
                continue
            index[key] = entry
        self._by_key = index
        return self.entries()

    def entries(self) -> list[UpscalerEntry]:
        """Every upscaler: the built-ins first, then the model files by name."""
        return list(self._by_key.values())

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def resolve(self, name: str) -> UpscalerEntry:
        """The upscaler called ``name`` (any letter case; an unknown name rescans the folder
        once), or :class:`NotFound` that lists the names that exist."""
        key = name.strip().lower()
        entry = self._by_key.get(key)
        if entry is None and self.models_dir is not None:
            self.refresh()  # a file added since the last scan
            entry = self._by_key.get(key)
        if entry is not None:
            return entry
        names = self.names()
        listed = ", ".join(names[:_LISTED_IN_ERRORS])
        if len(names) > _LISTED_IN_ERRORS:
            listed += f" and {len(names) - _LISTED_IN_ERRORS} more"
        # the folder's name only: the server's paths are none of a client's business
        where = (f"; model files go into the {self.models_dir.name}/ folder of the models "
                 "dir" if self.models_dir is not None else "")
        raise NotFound(f"unknown upscaler {name!r}; available: {listed}{where}",
                       param="upscaler")


def _scan(models_dir: Path | None) -> list[UpscalerEntry]:
    if models_dir is None or not models_dir.is_dir():
        return []
    found = []
    for path in sorted(models_dir.rglob("*"), key=lambda p: (len(p.parts), str(p).lower())):
        if path.suffix.lower() not in MODEL_SUFFIXES:
            continue
        if any(part.startswith(".") for part in path.relative_to(models_dir).parts):
            continue  # hidden files and folders (editor backups, .cache/, .trash/)
        try:
            if not path.is_file():
                continue
            size = path.stat().st_size
        except OSError as exc:  # vanished or unreadable while scanning
            log.warning("skipping upscaler %s: %s", path, exc)
            continue
        found.append(UpscalerEntry(path.stem, "model", path, scale_from_name(path.stem),
                                   size))
    found.sort(key=lambda e: e.name.lower())
    return found
