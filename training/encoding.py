"""What each micro batch trains on, encoded once where that is exact.

* :class:`CaptionEncoder`: captions tokenized once (one row per distinct caption); with a
  frozen text encoder its outputs are computed once per caption, when they fit
  ``CACHE_BUDGET_MB`` and the run reads at least as many samples as there are captions.
* :class:`LatentBatches`: the micro batches :class:`~training._data.BatchPlan` fixes, as
  VAE latent distributions (mean and std; the latents themselves are sampled per step).
  With centre crops (and, for inpainting, masks from the dataset) every image's
  distribution is computed once, both orientations when flipping, under the same budget;
  otherwise images are decoded per batch (in ``dataloader_num_workers`` processes) and
  encoded per step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from training._data import BatchPlan, Example, ImageDataset, Transform, collate, flip_of
from training.config import TrainConfig

# Caches of VAE latents and text-encoder outputs stay below this (MiB, per cache).
CACHE_BUDGET_MB = int(os.environ.get("BILDWERK_TRAIN_CACHE_MB", "2048"))
_ENCODE_CHUNK = 16  # images per VAE call when caching (fixed: results never depend on order)
_TEXT_CHUNK = 64


def total_samples(cfg: TrainConfig) -> int:
    """The samples a complete run reads."""
    return cfg.max_train_steps * cfg.gradient_accumulation_steps * cfg.train_batch_size


class CaptionEncoder:
    """Text-encoder hidden states of the examples' captions.

    ``encoder`` is the module to call (as prepared for training), ``config`` its config;
    with ``trains`` its outputs keep their gradients and are never cached."""

    def __init__(self, cfg: TrainConfig, examples: list[Example], tokenizer,
                 encoder: torch.nn.Module, config, *, trains: bool, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.encoder = encoder
        self.trains = trains
        self.device = device
        captions = [ex.text for ex in examples]
        unique = list(dict.fromkeys(captions))
        position = {c: i for i, c in enumerate(unique)}
        self.caption_of = torch.tensor([position[c] for c in captions], dtype=torch.long)
        tokens = tokenizer(unique, max_length=tokenizer.model_max_length,
                           padding="max_length", truncation=True, return_tensors="pt")
        self.token_ids = tokens.input_ids.to(device)
        # As the pipelines encode prompts: an attention mask only for encoders that want it.
        self.use_attention_mask = bool(getattr(config, "use_attention_mask", False))
        if self.use_attention_mask:
            self.token_mask = tokens.attention_mask.to(device)
        self.cache: torch.Tensor | None = None
        if not trains:
            nbytes = len(unique) * self.token_ids.shape[1] * config.hidden_size * \
                torch.finfo(dtype).bits // 8
            if nbytes <= CACHE_BUDGET_MB << 20 and len(unique) <= total_samples(cfg):
                chunks = [self._encode(torch.arange(i, min(i + _TEXT_CHUNK, len(unique))))
                          for i in range(0, len(unique), _TEXT_CHUNK)]
                self.cache = torch.cat(chunks)

    def _encode(self, caption_idx: torch.Tensor) -> torch.Tensor:
        caption_idx = caption_idx.to(self.device)
        ids = self.token_ids[caption_idx]
        kwargs = {"attention_mask": self.token_mask[caption_idx]} \
            if self.use_attention_mask else {}
        if self.trains:
            return self.encoder(ids, return_dict=False, **kwargs)[0]
        with torch.no_grad():
            return self.encoder(ids, return_dict=False, **kwargs)[0]

    def hidden_states(self, caption_idx: torch.Tensor) -> torch.Tensor:
        """The encoder's output for captions ``caption_idx`` (from the cache if built)."""
        if self.cache is not None:
            return self.cache[caption_idx.to(self.device)]
        return self._encode(caption_idx)


class LatentBatches:
    """The run's micro batches as encoded images; see the module docstring."""

    def __init__(self, cfg: TrainConfig, examples: list[Example], vae: torch.nn.Module, *,
                 vae_scale: int, inpaint: bool, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.cfg = cfg
        self.examples = examples
        self.vae = vae
        self.vae_scale = vae_scale
        self.inpaint = inpaint
        self.device = device
        self.dtype = dtype
        self.transform = Transform(cfg.resolution, cfg.center_crop, cfg.random_flip, cfg.seed)
        self.dataset = ImageDataset(examples, self.transform, inpaint=inpaint)
        self.plan = BatchPlan(cfg.seed, len(examples), cfg.train_batch_size)
        has_masks = all(ex.mask is not None for ex in examples)
        views = 2 if cfg.random_flip else 1
        latent = cfg.resolution // vae_scale
        channels = vae.config.latent_channels
        per_view = 2 * channels * latent * latent * 4  # mean and std, fp32
        if inpaint:
            per_view = per_view * 2 + latent * latent * 4
        n_views = len(examples) * views
        self.cached = (cfg.center_crop and (not inpaint or has_masks)
                       and n_views * per_view <= CACHE_BUDGET_MB << 20
                       and n_views <= total_samples(cfg))
        self.cache: dict[str, torch.Tensor] = {}
        if self.cached:
            self._build_cache(views)

    def _loader(self, keys_batches, workers: int) -> Iterator[dict]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=keys_batches, collate_fn=collate,
            num_workers=workers, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def _build_cache(self, views: int) -> None:
        n = len(self.examples)
        keys = [[(0, i, bool(v)) for i in range(start, min(start + _ENCODE_CHUNK, n))]
                for v in range(views) for start in range(0, n, _ENCODE_CHUNK)]
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in self._loader(keys, self.cfg.dataloader_num_workers):
            encoded = self._encode_batch(batch)
            for key, value in encoded.items():
                parts.setdefault(key, []).append(value)
        for key, chunks in parts.items():
            stacked = torch.cat(chunks)  # views * n in key order: view-major
            self.cache[key] = stacked.view(views, n, *stacked.shape[1:]).transpose(0, 1) \
                .contiguous()

    def _encode_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """VAE latent distributions (mean, std) of a batch's images (and masked images),
        and the mask at latent size."""
        out = {"image": self._moments(batch["pixel_values"])}
        if self.inpaint:
            out["masked"] = self._moments(batch["masked_pixel_values"])
            latent = self.cfg.resolution // self.vae_scale
            out["mask"] = F.interpolate(batch["mask"].to(self.device, torch.float32),
                                        size=(latent, latent))
        return out

    @torch.no_grad()
    def _moments(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        dist = self.vae.encode(pixels).latent_dist
        return torch.cat([dist.mean, dist.std], dim=1).float()

    def batches(self, start: int, stop: int) -> Iterator[tuple[int, dict[str, torch.Tensor],
                                                               torch.Tensor]]:
        """(epoch, encoded batch, example indices) for micro batches ``start`` …
        ``stop-1``."""
        cfg = self.cfg
        if self.cached:
            for epoch, indices in self.plan.batches(start, stop):
                idx = torch.tensor(indices, dtype=torch.long)
                view = torch.tensor([int(flip_of(cfg.seed, epoch, i, cfg.random_flip))
                                     for i in indices], dtype=torch.long)
                dev_idx, dev_view = idx.to(self.device), view.to(self.device)
                encoded = {k: v[dev_idx, dev_view] for k, v in self.cache.items()}
                yield epoch, encoded, idx
            return
        plan = list(self.plan.batches(start, stop))
        keys = [[(epoch, i, None) for i in indices] for epoch, indices in plan]
        for (epoch, _), batch in zip(plan, self._loader(keys, cfg.dataloader_num_workers),
                                     strict=True):
            yield epoch, self._encode_batch(batch), batch["index"]


__all__ = ["CACHE_BUDGET_MB", "CaptionEncoder", "LatentBatches", "total_samples"]
