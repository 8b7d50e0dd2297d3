"""Read single-file checkpoints safely: tensor names and shapes, never pickled code.

``.safetensors`` files are read from their JSON header only (no tensor data).
``.ckpt``/``.pt``/``.pth`` files are pickles; they are opened with
``torch.load(weights_only=True)``, whose restricted unpickler only rebuilds tensors and
plain containers and refuses every other global, so a pickle whose ``__reduce__`` would
run code raises :class:`UnsafeCheckpointError` before anything runs. Zip-format files
(every ``torch.save`` since torch 1.6) are memory-mapped, so shapes are read without
reading the weights.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"


class UnsafeCheckpointError(ValueError):
    """A pickle checkpoint that needs more than tensors and containers to unpickle."""


def _unwrap(obj: object) -> dict:
    """LDM/Lightning files nest the weights under ``state_dict`` (sometimes twice)."""
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    return obj


def load_pickle_state_dict(path: Path | str) -> dict:
    """``torch.load`` a pickle checkpoint with ``weights_only=True`` (memory-mapped if zip).

    Raises :class:`UnsafeCheckpointError` when the file needs arbitrary globals
    (code execution, or Lightning callback objects in some old training checkpoints:
    convert those to ``.safetensors`` in a sandbox first).
    """
    import torch

    path = Path(path)
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path.name}: refused to unpickle: the file needs more than tensors to load "
            f"(it may run code). Only weights-only checkpoints are accepted; convert it to "
            f".safetensors in a sandbox. Details: {str(exc).splitlines()[0]}") from exc
    return _unwrap(obj)


def read_tensor_shapes(path: Path | str) -> dict[str, tuple[int, ...]]:
    """Map every tensor name in a single-file checkpoint to its shape, loading no weights
    (``.safetensors``) or only memory-mapped ones (zip ``.ckpt``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    if suffix in PICKLE_SUFFIXES:
        state = load_pickle_state_dict(path)
        return {key: tuple(getattr(value, "shape", ())) for key, value in state.items()}
    raise ValueError(f"unsupported checkpoint format {path.suffix!r}")
