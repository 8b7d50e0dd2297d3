"""LoRA files: what a ``.safetensors`` LoRA is, read from its header alone (no tensor is
loaded): its format, targets, rank and the cross-attention width it was made for, hence
its family; finding them in a folder; and checking that one fits a model.

Two on-disk layouts are recognised:

- ``diffusers``: keys such as ``unet.<module>.lora_A.weight`` (PEFT),
  ``unet.<module>.lora.down.weight`` (older diffusers) or
  ``text_encoder.<module>.lora_linear_layer.down.weight``;
- ``kohya``: keys such as ``lora_unet_<module_with_underscores>.lora_down.weight``,
  ``.lora_up.weight`` and ``.alpha``, plus ``lora_te_``/``lora_te1_``/``lora_te2_`` for the
  text encoders (what A1111, ComfyUI and the kohya trainer write).

Both load through ``pipe.load_lora_weights(path, adapter_name=...)``
(:mod:`app.pipelines.lora_weights`). Everything here is pure and safe from any thread.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from app.errors import InvalidInput
from app.pipelines.families import FAMILY_CONTEXT_DIM

log = logging.getLogger("bildwerk.loras")

LoraFormat = Literal["diffusers", "kohya"]

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


__all__ = ["LoraEntry", "LoraFormat", "check_compatible", "discover_loras", "probe_lora"]
