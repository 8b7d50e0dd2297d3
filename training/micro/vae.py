"""A small VAE loop for the micro model (the project's trainers train UNet + text encoder).

AutoencoderKL with three levels (scale factor 4: 64 px pictures -> 16x16x4 latents),
trained on random 32 px crops of 64 px scenes drawn on the fly by
:mod:`training.micro.shapes` (the VAE has no attention, so it is fully convolutional and
crops are 4x cheaper on a CPU) with an L1 + MSE
reconstruction loss and a small KL term. Afterwards ``scaling_factor`` is set to
1 / std of the latents, as for Stable Diffusion's VAE, so the diffusion model sees
unit-variance latents.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
    block_out_channels=(16, 32, 32), layers_per_block=1, mid_block_add_attention=False,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
)


@dataclass
class VaeResult:
    steps: int
    seconds: float
    final_loss: float
    final_l1: float
    scaling_factor: float
    parameters: int


def _batch(rng: random.Random, size: int, resolution: int, crop: int | None = None):
    import numpy as np
    import torch

    from training.micro.shapes import render_scene, sample_scene

    arrays = []
    for _ in range(size):
        array = np.asarray(render_scene(sample_scene(rng, resolution), resolution))
        if crop:  # random crop: the VAE is fully convolutional (no attention)
            top, left = rng.randrange(resolution - crop + 1), rng.randrange(resolution - crop + 1)
            array = array[top:top + crop, left:left + crop]
        arrays.append(array)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def train_vae(out_dir: Path, *, steps: int = 1000, batch_size: int = 16, resolution: int = 64,
              crop: int = 32, learning_rate: float = 2e-3, kl_weight: float = 1e-5, seed: int = 0,
              progress: bool = True) -> VaeResult:
    """Train the VAE from scratch and save it (diffusers layout) into ``out_dir``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    vae = AutoencoderKL(sample_size=resolution, **VAE_CONFIG)
    params = sum(p.numel() for p in vae.parameters())
    opt = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    vae.train()
    start = time.monotonic()
    ema = None
    ema_l1 = None
    for step in range(steps):
        x = _batch(rng, batch_size, resolution, crop)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        l1 = (recon - x).abs().mean()
        mse = ((recon - x) ** 2).mean()
        kl = posterior.kl().mean() / (x.shape[-1] * x.shape[-2])
        loss = l1 + mse + kl_weight * kl * x.shape[-1] * x.shape[-2]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        ema_l1 = l1.item() if ema_l1 is None else 0.98 * ema_l1 + 0.02 * l1.item()
        if progress and (step % 50 == 0 or step == steps - 1):
            print(f"vae step {step + 1}/{steps} loss {ema:.4f} l1 {ema_l1:.4f} "
                  f"kl {kl.item():.3f} {time.monotonic() - start:.0f}s", flush=True)
    seconds = time.monotonic() - start
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(_batch(rng, 64, resolution)).latent_dist.sample()
                             for _ in range(4)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    out_dir = Path(out_dir)
    vae.save_pretrained(out_dir, safe_serialization=True)
    result = VaeResult(steps=steps, seconds=round(seconds, 1), final_loss=round(ema, 5),
                       final_l1=round(ema_l1, 5), scaling_factor=round(scaling, 5),
                       parameters=params)
    (out_dir / "training.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
    return result
