"""Tiny model upscalers for tests, built offline from their key layouts with seeded
random weights: ESRGAN (RRDBNet, in the original "old" and BasicSR's "new" key naming)
and Real-ESRGAN Compact (SRVGGNetCompact). The shapes are written out here rather than
taken from spandrel, so the tests check that spandrel detects files as users have them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

ESRGAN_GROWTH = 32  # RRDBNet's growth channels; spandrel assumes 32


def esrgan_state_dict(scale: int = 4, *, num_feat: int = 8, num_blocks: int = 1,
                      naming: str = "new", seed: int = 0) -> dict[str, torch.Tensor]:
    """An RRDBNet (ESRGAN) state dict for ×1, ×2 or ×4.

    ``naming="new"`` is BasicSR's / Real-ESRGAN's layout (``conv_first``, ``body.N.rdbK``);
    its ×2 and ×1 models pixel-unshuffle the input (12 or 48 input channels) in front of
    the ×4 body, as Real-ESRGAN's ``RealESRGAN_x2plus`` does. ``naming="old"`` is the
    original ESRGAN layout (``model.0``, ``model.1.sub.N.RDBK``), one upsampling conv per ×2.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = (_esrgan_new_shapes(scale, num_feat, num_blocks) if naming == "new"
              else _esrgan_old_shapes(scale, num_feat, num_blocks))
    state = {key: _init(shape, gen) for key, shape in shapes.items()}
    *_, last_weight, last_bias = state  # the output conv: centred in [0, 1], unsaturated
    state[last_weight].mul_(0.1)
    state[last_bias].fill_(0.5)
    return state


def compact_state_dict(scale: int = 4, *, num_feat: int = 8, num_conv: int = 2,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """A Real-ESRGAN Compact (SRVGGNetCompact, PReLU) state dict; ``scale=1`` makes a
    restoration model, which is no upscaler."""
    gen = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {}
    _conv(shapes, "body.0", num_feat, 3)
    shapes["body.1.weight"] = (num_feat,)
    for i in range(num_conv):
        _conv(shapes, f"body.{2 * i + 2}", num_feat, num_feat)
        shapes[f"body.{2 * i + 3}.weight"] = (num_feat,)
    last = f"body.{2 * num_conv + 2}"
    _conv(shapes, last, 3 * scale * scale, num_feat)
    state = {key: _init(shape, gen) for key, shape in shapes.items()}
    state[f"{last}.weight"].mul_(0.1)  # a small correction on top of the nearest upscale
    for key, shape in shapes.items():
        if len(shape) == 1 and key.endswith(".weight"):  # PReLU slopes
            state[key] = torch.full(shape, 0.25)
    return state


def save_state_dict(state: dict[str, torch.Tensor], path: Path, *,
                    wrap: str | None = None) -> Path:
    """Write ``state`` as ``.safetensors`` or (any other suffix) ``torch.save``;
    ``wrap="params_ema"`` nests it the way Real-ESRGAN's release files do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path


class NotWeights:
    """Pickled as a class reference: a file holding it carries code, not tensors."""

    def __init__(self) -> None:
        self.payload = "pretend this runs something on load"


def build_upscalers_dir(root: Path) -> Path:
    """An upscalers folder with every case the catalog and loader must handle.

    - ``4x-TinyESRGAN.pth``: ESRGAN ×4, new naming, nested under ``params_ema``
    - ``ESRGAN/2x-TinyESRGAN-old.safetensors``: ESRGAN ×2, old naming, in a subfolder
    - ``TinyRealESRGAN_x2.safetensors``: ESRGAN ×2, new naming, pixel-unshuffled input
    - ``RealESRGAN_x4-tiny-compact.safetensors`` / ``tiny-compact-x2.pth``: Compact ×4/×2
    - ``1x-restore.pth``: Compact ×1, a restoration model (refused)
    - ``garbage.pth``, ``unknown-keys.safetensors``, ``pickled-code.pth``,
      ``torchscript.pt``: unreadable, no known architecture, pickled code, TorchScript
      (all refused)
    """
    folder = root / "upscalers"
    save_state_dict(esrgan_state_dict(4, seed=1), folder / "4x-TinyESRGAN.pth",
                    wrap="params_ema")
    save_state_dict(esrgan_state_dict(2, naming="old", seed=2),
                    folder / "ESRGAN" / "2x-TinyESRGAN-old.safetensors")
    save_state_dict(esrgan_state_dict(2, seed=6), folder / "TinyRealESRGAN_x2.safetensors")
    save_state_dict(compact_state_dict(4, seed=3),
                    folder / "RealESRGAN_x4-tiny-compact.safetensors")
    save_state_dict(compact_state_dict(2, seed=4), folder / "tiny-compact-x2.pth")
    save_state_dict(compact_state_dict(1, seed=5), folder / "1x-restore.pth")
    (folder / "garbage.pth").write_bytes(b"\x00not a model" * 64)
    save_state_dict({"encoder.weight": torch.zeros(4, 4)}, folder / "unknown-keys.safetensors")
    torch.save({"model": NotWeights()}, folder / "pickled-code.pth")
    torch.jit.script(torch.nn.Conv2d(3, 12, 3)).save(str(folder / "torchscript.pt"))
    (folder / "notes.txt").write_text("not a model file, not listed")
    return folder


def _esrgan_new_shapes(scale: int, nf: int, nb: int) -> dict[str, tuple[int, ...]]:
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]  # ×2 / ×1 models unshuffle into the ×4 body
    shapes: dict[str, tuple[int, ...]] = {}
    _conv(shapes, "conv_first", nf, 3 * unshuffle * unshuffle)
    for block in range(nb):
        for rdb in (1, 2, 3):
            _rdb(shapes, f"body.{block}.rdb{rdb}", "", nf)
    _conv(shapes, "conv_body", nf, nf)
    _conv(shapes, "conv_up1", nf, nf)
    _conv(shapes, "conv_up2", nf, nf)
    _conv(shapes, "conv_hr", nf, nf)
    _conv(shapes, "conv_last", 3, nf)
    return shapes


def _esrgan_old_shapes(scale: int, nf: int, nb: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    _conv(shapes, "model.0", nf, 3)
    for block in range(nb):
        for rdb in (1, 2, 3):
            _rdb(shapes, f"model.1.sub.{block}.RDB{rdb}", ".0", nf)
    _conv(shapes, f"model.1.sub.{nb}", nf, nf)
    index = 1
    for _ in range(int(math.log2(scale))):  # Upsample, conv, LeakyReLU per ×2
        index += 3
        _conv(shapes, f"model.{index - 1}", nf, nf)
    _conv(shapes, f"model.{index + 1}", nf, nf)  # HR conv (+ LeakyReLU)
    _conv(shapes, f"model.{index + 3}", 3, nf)
    return shapes


def _rdb(shapes: dict, prefix: str, inner: str, nf: int) -> None:
    """A residual dense block: five convs, each seeing the input and all earlier outputs."""
    for k in range(1, 6):
        out = nf if k == 5 else ESRGAN_GROWTH
        _conv(shapes, f"{prefix}.conv{k}{inner}", out, nf + (k - 1) * ESRGAN_GROWTH)


def _conv(shapes: dict, name: str, out_ch: int, in_ch: int) -> None:
    shapes[f"{name}.weight"] = (out_ch, in_ch, 3, 3)
    shapes[f"{name}.bias"] = (out_ch,)


def _init(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Seeded He-initialised weights and small biases: outputs follow the input and vary
    from pixel to pixel, so a wrongly stitched tile would show."""
    if len(shape) == 1:
        return torch.randn(shape, generator=gen) * 0.01
    fan_in = shape[1] * shape[2] * shape[3]
    return torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
