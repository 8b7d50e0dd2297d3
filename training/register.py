"""Put a trainer's output where the server discovers it, and tell a running server.

Layout (see ``app/pipelines/registry.py`` and ``app/pipelines/lora_catalog.py``):

- a LoRA: ``<models_dir>/loras/<name>.safetensors`` (its id is ``<name>``);
- a fine-tuned model: ``<models_dir>/<name>/`` (a diffusers folder; its id is ``<name>``).

Files are copied (or moved) under a hidden temporary name in the destination folder and
renamed into place, so a server scanning at the same moment never sees half a model (the
registry and the LoRA catalogue skip names starting with a dot). A running server picks
them up on ``POST /models/refresh`` (admin scope), which rescans models and LoRAs.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from training.config import TrainResult

Kind = Literal["lora", "full"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LORA_DIR = "loras"


def registered_path(models_dir: Path, kind: Kind, name: str) -> Path:
    models_dir = Path(models_dir)
    if kind == "lora":
        return models_dir / LORA_DIR / f"{name}.safetensors"
    return models_dir / name


def register_output(result: TrainResult | Path, models_dir: Path, kind: Kind, *,
                    name: str | None = None, overwrite: bool = False,
                    move: bool = False) -> Path:
    """Copy (``move=True``: move) a trained LoRA file or model folder into ``models_dir``
    and return where it now lives. ``name`` defaults to the output's stem (LoRA) or folder
    name (model). Raises ``FileExistsError`` when something answers to that name already
    (unless ``overwrite``), ``ValueError`` when the output is not what ``kind`` says."""
    from app.pipelines.families import probe_diffusers_folder
    from app.pipelines.lora_files import probe_lora

    src = Path(result.output if isinstance(result, TrainResult) else result)
    models_dir = Path(models_dir)
    if kind not in ("lora", "full"):
        raise ValueError(f"kind must be 'lora' or 'full', not {kind!r}")
    name = name or (src.stem if kind == "lora" else src.name)
    if not _NAME.match(name):
        raise ValueError(f"name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(starting with a letter or digit)")
    if kind == "lora":
        if not src.is_file():
            raise ValueError(f"{src} is not a LoRA file")
        probe_lora(src)  # raises ValueError when it is no LoRA the server can read
    else:
        if not (src / "model_index.json").is_file():
            raise ValueError(f"{src} is not a diffusers model folder")
        probe_diffusers_folder(src)
    dest = registered_path(models_dir, kind, name)
    if src.resolve() == dest.resolve():
        return dest
    check_name_free(models_dir, kind, name, overwrite=overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{name}.incoming-", dir=dest.parent))
    try:
        staged = tmp_parent / dest.name
        if move:
            shutil.move(str(src), staged)
        elif src.is_dir():
            shutil.copytree(src, staged)
        else:
            shutil.copy2(src, staged)
        if dest.is_dir():
            old = tmp_parent / ".old"
            dest.rename(old)
        os.replace(staged, dest)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return dest


def check_name_free(models_dir: Path, kind: Kind, name: str, *, overwrite: bool = False
                    ) -> None:
    """Raise ``FileExistsError`` when registering ``name`` would clash with what is in
    ``models_dir`` (with ``overwrite``: only with something of another kind or place).
    The CLI calls this before training, so a long run does not end in a refusal."""
    if not _NAME.match(name):
        raise ValueError(f"name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(starting with a letter or digit)")
    dest = registered_path(models_dir, kind, name)
    clash = _clash(Path(models_dir), kind, name)
    if clash is not None and not overwrite:
        raise FileExistsError(f"{clash} already exists; pick another name or overwrite it")
    if clash is not None and clash != dest:
        raise FileExistsError(f"{clash} already answers to {name!r} (another kind of model "
                              "or folder); pick another name")


def _clash(models_dir: Path, kind: Kind, name: str) -> Path | None:
    """What already answers to ``name`` where ``kind`` is registered."""
    if kind == "lora":
        from app.pipelines.lora_catalog import LORA_DIR_NAMES

        return next((p for sub in LORA_DIR_NAMES
                     if (p := models_dir / sub / f"{name}.safetensors").exists()), None)
    from app.pipelines.families import SIDECAR_SUFFIX

    for suffix in ("", ".safetensors", ".ckpt", SIDECAR_SUFFIX):
        path = models_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def refresh_server(url: str, api_key: str | None = None, timeout: float = 120.0) -> dict:
    """``POST <url>/models/refresh`` on a running server (admin key). Returns
    ``{"models": [ids], "loras": [ids]}``; raises ``RuntimeError`` with the server's
    message when it refuses."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = url.rstrip("/")
    with httpx.Client(timeout=timeout, headers=headers) as client:
        r = client.post(f"{base}/models/refresh")
        if r.status_code != 200:
            try:
                message = r.json()["error"]["message"]
            except Exception:
                message = r.text[:300]
            raise RuntimeError(f"POST {base}/models/refresh answered {r.status_code}: {message}")
        models = [m["id"] for m in r.json()]
        loras = client.get(f"{base}/loras")
        return {"models": models,
                "loras": [entry["id"] for entry in loras.json()] if loras.status_code == 200
                else []}
