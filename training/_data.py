"""Training data for the trainers: an image-folder dataset read without 🤗 datasets.

Layout (Hugging Face ``imagefolder``): image files plus ``metadata.jsonl`` (or
``metadata.csv``) with the columns ``file_name`` and ``text`` and, for inpainting,
optionally ``mask_file_name`` (white = the region to repaint). Paths are relative to the
folder. A CSV cell's formula-escaping ``'`` (see :mod:`app.csv_cells`) is removed.

Every random choice is a pure function of ``(seed, epoch, index)`` (the epoch's order, a
sample's crop, flip and random mask), so a run resumed from a checkpoint sees exactly the
batches the uninterrupted run saw, and the work can be split between DataLoader workers
without any shared random state.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.csv_cells import restore_cell

CAPTION_COLUMNS = ("text", "caption", "prompt")


@dataclass(frozen=True)
class Example:
    image: Path
    text: str
    mask: Path | None = None


def read_examples(folder: Path) -> list[Example]:
    """The examples listed in ``folder``'s ``metadata.jsonl`` (or ``metadata.csv``).
    Raises ``ValueError`` naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"dataset {folder} is not a folder")
    jsonl, csv_path = folder / "metadata.jsonl", folder / "metadata.csv"
    rows: list[dict]
    if jsonl.is_file():
        rows = []
        for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{jsonl}:{n}: not JSON: {exc}") from exc
        source = jsonl
    elif csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8") as fh:
            rows = [{key: restore_cell(value) for key, value in row.items()}
                    for row in csv.DictReader(fh)]
        source = csv_path
    else:
        raise ValueError(f"dataset {folder} has neither metadata.jsonl nor metadata.csv "
                         "(imagefolder layout: file_name, text[, mask_file_name])")
    examples: list[Example] = []
    missing: list[str] = []
    for n, row in enumerate(rows, 1):
        name = row.get("file_name")
        if not name:
            raise ValueError(f"{source}: row {n} has no file_name")
        caption = next((row[c] for c in CAPTION_COLUMNS if row.get(c) is not None), None)
        if caption is None:
            raise ValueError(f"{source}: row {n} ({name}) has no text column")
        if isinstance(caption, list):  # several captions: the first one (deterministic)
            caption = caption[0] if caption else ""
        image = folder / name
        mask_name = row.get("mask_file_name")
        mask = folder / mask_name if mask_name else None
        for path in (image, mask):
            if path is not None and not path.is_file():
                missing.append(str(path.relative_to(folder)))
        examples.append(Example(image=image, text=str(caption), mask=mask))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise ValueError(f"dataset {folder}: files listed in {source.name} are missing: {shown}")
    if not examples:
        raise ValueError(f"dataset {folder} is empty ({source.name} lists no rows)")
    return examples


# -- deterministic randomness ---------------------------------------------------------------


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _rng(seed: int, what: str, epoch: int, index: int) -> random.Random:
    return random.Random(derived_seed(seed, what, epoch, index))


def flip_of(seed: int, epoch: int, index: int, random_flip: bool) -> bool:
    return random_flip and _rng(seed, "flip", epoch, index).random() < 0.5


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    gen = torch.Generator().manual_seed(derived_seed(seed, "order", epoch))
    return torch.randperm(n, generator=gen).tolist()


@dataclass(frozen=True)
class BatchPlan:
    """Which examples each micro batch holds: epoch ``e`` is a seeded permutation cut into
    ``ceil(n / batch_size)`` batches (the last one may be smaller)."""

    seed: int
    n: int
    batch_size: int

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def locate(self, micro: int) -> tuple[int, int]:
        return divmod(micro, self.batches_per_epoch)

    def batches(self, start: int, stop: int) -> Iterator[tuple[int, list[int]]]:
        """(epoch, indices) of micro batches ``start`` … ``stop - 1``."""
        order: list[int] = []
        cached_epoch = -1
        for micro in range(start, stop):
            epoch, pos = self.locate(micro)
            if epoch != cached_epoch:
                order, cached_epoch = epoch_order(self.seed, epoch, self.n), epoch
            yield epoch, order[pos * self.batch_size:(pos + 1) * self.batch_size]


# -- images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """Resize the shorter side to ``resolution``, crop a square (centre or random), flip
    (random, optional); images to [-1, 1], masks to {0, 1} (1 = repaint)."""

    resolution: int
    center_crop: bool = True
    random_flip: bool = False
    seed: int = 0

    def __call__(self, image: Image.Image, mask: Image.Image | None, epoch: int, index: int,
                 flip: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        res = self.resolution
        image = image.convert("RGB")
        w, h = image.size
        scale = res / min(w, h)
        size = (max(res, round(w * scale)), max(res, round(h * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        if self.center_crop:
            left, top = (size[0] - res) // 2, (size[1] - res) // 2
        else:
            rng = _rng(self.seed, "crop", epoch, index)
            left, top = rng.randint(0, size[0] - res), rng.randint(0, size[1] - res)
        box = (left, top, left + res, top + res)
        image = image.crop(box)
        if flip is None:
            flip = flip_of(self.seed, epoch, index, self.random_flip)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        pixels = pixels.permute(2, 0, 1) / 127.5 - 1.0
        if mask is None:
            return pixels.contiguous(), None
        mask = mask.convert("L").resize((w, h), Image.Resampling.NEAREST) \
            .resize(size, Image.Resampling.BILINEAR).crop(box)
        if flip:
            mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        binary = torch.from_numpy((np.asarray(mask) >= 128).astype(np.float32))[None]
        return pixels.contiguous(), binary


def random_rect_mask(resolution: int, seed: int, epoch: int, index: int) -> torch.Tensor:
    """A seeded rectangle covering 25-75 % of each side (1 = repaint), shape 1 x H x W."""
    rng = _rng(seed, "mask", epoch, index)
    w = rng.randint(resolution // 4, max(resolution // 4, 3 * resolution // 4))
    h = rng.randint(resolution // 4, max(resolution // 4, 3 * resolution // 4))
    x, y = rng.randint(0, resolution - w), rng.randint(0, resolution - h)
    mask = torch.zeros(1, resolution, resolution)
    mask[:, y:y + h, x:x + w] = 1.0
    return mask


class ImageDataset(torch.utils.data.Dataset):
    """Items are keyed ``(epoch, index, flip)`` (``flip=None``: drawn from the seed), so a
    batch sampler decides the order and each item's randomness is reproducible anywhere.
    An item: ``pixel_values`` and, with ``inpaint``, ``mask`` and ``masked_pixel_values``
    (the image with the repaint region zeroed, as the inpainting pipelines feed it)."""

    def __init__(self, examples: Sequence[Example], transform: Transform,
                 inpaint: bool = False) -> None:
        self.examples = list(examples)
        self.transform = transform
        self.inpaint = inpaint

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: tuple[int, int, bool | None]) -> dict:
        epoch, index, flip = key
        ex = self.examples[index]
        with Image.open(ex.image) as img:
            mask_img = None
            if self.inpaint and ex.mask is not None:
                with Image.open(ex.mask) as m:
                    mask_img = m.copy()
            pixels, mask = self.transform(img, mask_img, epoch, index, flip)
        item = {"index": index, "pixel_values": pixels}
        if self.inpaint:
            if mask is None:
                mask = random_rect_mask(self.transform.resolution, self.transform.seed,
                                        epoch, index)
            item["mask"] = mask
            item["masked_pixel_values"] = pixels * (mask < 0.5)
        return item


def collate(items: list[dict]) -> dict:
    out: dict = {"index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
    for key in items[0]:
        if key != "index":
            out[key] = torch.stack([it[key] for it in items]).contiguous()
    return out
