"""Step previews: what the image looks like part way through denoising, without the VAE.

A latent of Stable Diffusion's VAE is close to a linear map of RGB at 1/8 the size, so a
4×3 matrix per VAE turns it into a rough picture in a few milliseconds (AUTOMATIC1111's
"Approx cheap"). The factors are least-squares fits of latents to their decoded images
(SD 1.x/2.x share one VAE; SDXL has its own). A preview is kept at the latent's size and
scaled up ×8 (:func:`full_size`) to the size the final image will have when a client asks
for it, so it can be shown in its place.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

_SD_FACTORS = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                            [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])
_SDXL_FACTORS = torch.tensor([[0.3920, 0.4054, 0.4549], [-0.2634, -0.0196, 0.0653],
                              [0.0568, 0.1687, -0.0755], [-0.3112, -0.2359, -0.2076]])
VAE_SCALE = 8


FULL_SIZE = "bildwerk_full_size"  # PIL info flag: a preview already at the image's size
TAESD_FOLDERS = {"sdxl": "taesdxl"}  # else "taesd" (SD 1.x/2.x): in BILDWERK_MODELS_DIR


def latent_preview(pipe, latents: torch.Tensor) -> Image.Image | None:
    """The first image of the batch as a preview: decoded by TAESD when the pipeline has
    one (``pipe.preview_decoder``, at the image's size), else by the linear map at the
    latent's size. None for a latent this does not know (not four channels)."""
    if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
        return None
    decoder = getattr(pipe, "preview_decoder", None)
    if decoder is not None:
        return _taesd_preview(decoder, latents)
    factors = _SDXL_FACTORS if "XL" in type(pipe).__name__ else _SD_FACTORS
    latent = latents[0].detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent, factors)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def _taesd_preview(decoder, latents: torch.Tensor) -> Image.Image:
    with torch.inference_mode():
        sample = decoder.decode(latents[:1].to(decoder.device, decoder.dtype)).sample
    pixels = ((sample[0].float().permute(1, 2, 0) + 1.0) * 127.5).clamp(0, 255)
    image = Image.fromarray(np.ascontiguousarray(pixels.to(torch.uint8).cpu().numpy()), "RGB")
    image.info[FULL_SIZE] = True
    return image


def load_taesd(models_dir, family: str, runtime):
    """TAESD for ``family`` from ``models_dir/taesd`` (``taesdxl`` for SDXL), diffusers'
    ``AutoencoderTiny`` layout; None when it is not there."""
    folder = models_dir / TAESD_FOLDERS.get(family, "taesd")
    if not (folder / "config.json").is_file():
        return None
    from diffusers import AutoencoderTiny

    decoder = AutoencoderTiny.from_pretrained(folder, local_files_only=True,
                                              torch_dtype=runtime.dtype)
    return decoder.to(runtime.device).eval()


def full_size(preview: Image.Image) -> Image.Image:
    """A latent-size preview at the size of the image it will become (TAESD's already is)."""
    if preview.info.get(FULL_SIZE):
        return preview
    return preview.resize((preview.width * VAE_SCALE, preview.height * VAE_SCALE),
                          Image.Resampling.BILINEAR)


def preview_steps(total: int, count: int) -> frozenset[int]:
    """The 1-based steps of a ``total``-step run at which ``count`` previews fall, spread
    evenly and never on the last step (the finished image follows it)."""
    if count <= 0 or total <= 1:
        return frozenset()
    count = min(count, total - 1)
    return frozenset(max(1, round(total * (i + 1) / (count + 1))) for i in range(count))
