"""VAEs users bring: diffusers ``AutoencoderKL`` folders or single files under
``<models_dir>/vae/``, loaded once per device and swapped into a request's pipeline."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL

from app.errors import InvalidInput, ModelLoadFailed
from app.pipelines.device import Runtime

log = logging.getLogger("bildwerk.vaes")
VAE_DIR_NAMES = ("vae", "vaes", "VAE")


@dataclass
class VaeEntry:
    id: str
    path: Path
    format: str  # "diffusers" | "single_file"
    latent_channels: int | None
    scaling_factor: float | None
    size_bytes: int


def discover_vaes(models_dir: Path) -> list[VaeEntry]:
    entries: list[VaeEntry] = []
    for name in VAE_DIR_NAMES:
        folder = models_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            try:
                entry = _probe(path)
            except Exception as exc:
                log.warning("skipping VAE %s: %s", path, exc)
                continue
            if entry is not None:
                entries.append(entry)
    return entries


def _probe(path: Path) -> VaeEntry | None:
    if path.is_dir() and (path / "config.json").exists():
        config = AutoencoderKL.load_config(path)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return VaeEntry(path.name, path, "diffusers", config.get("latent_channels"),
                        config.get("scaling_factor"), size)
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            conv = next((k for k in keys if k.endswith("quant_conv.weight")
                         and "post" not in k), None)
            latent = fh.get_slice(conv).get_shape()[0] // 2 if conv else None
        return VaeEntry(path.stem, path, "single_file", latent, None, path.stat().st_size)
    return None


class VaeCache:
    """Loaded VAEs, keyed by id; only the worker thread loads."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._loaded: dict[str, AutoencoderKL] = {}
        self._lock = threading.Lock()

    def get(self, entry: VaeEntry, config_dir: Path | None) -> AutoencoderKL:
        vae = self._loaded.get(entry.id)
        if vae is not None:
            return vae
        try:
            if entry.format == "diffusers":
                vae = AutoencoderKL.from_pretrained(entry.path, torch_dtype=self.runtime.dtype)
            else:
                vae = AutoencoderKL.from_single_file(
                    str(entry.path), config=str(config_dir) if config_dir else None,
                    subfolder="vae" if config_dir else None, local_files_only=True,
                    torch_dtype=self.runtime.dtype)
        except Exception as exc:
            raise ModelLoadFailed(f"VAE {entry.id!r} failed to load: {exc}",
                                  param="vae") from exc
        vae.to(self.runtime.device).eval()
        with self._lock:
            self._loaded[entry.id] = vae
        return vae

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()

    @property
    def resident_bytes(self) -> int:
        from app.pipelines.memory import module_bytes

        with self._lock:
            return module_bytes(*self._loaded.values())

    def is_loaded(self, vae_id: str) -> bool:
        return vae_id in self._loaded


def check_vae(entry: VaeEntry, unet_latent_channels: int, model_id: str) -> None:
    if entry.latent_channels is not None and entry.latent_channels != unet_latent_channels:
        raise InvalidInput(
            f"VAE {entry.id!r} has {entry.latent_channels} latent channels but model "
            f"{model_id!r} works on {unet_latent_channels}", param="vae")
