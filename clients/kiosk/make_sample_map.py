"""Draw the kiosk's sample map: a made-up satellite-style view (fields, a forest, a river
with a bridge, roads and a small town). Deterministic: the same PNG every run.

    .venv/bin/python clients/kiosk/make_sample_map.py            # writes sample-map.png
    .venv/bin/python clients/kiosk/make_sample_map.py out.png --size 256

Nothing here is a real place; it only has to look plausible under a visitor's brush.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SEED = 1984

FIELD_COLOURS = [  # crops, meadows, bare soil, stubble (RGB)
    (112, 138, 64), (134, 156, 78), (96, 122, 58), (158, 150, 96), (142, 122, 84),
    (120, 146, 90), (170, 164, 112), (88, 112, 60), (150, 140, 80), (104, 130, 76),
]


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid, bilinearly upscaled."""
    n = size // cell + 2
    coarse = rng.random((n, n)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8), "L")
    img = img.resize((n * cell, n * cell), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)[:size, :size] / 255.0


def _fields(rng: np.random.Generator, size: int) -> Image.Image:
    """Patchwork of fields: a jittered grid of quadrilaterals with furrow stripes."""
    base = Image.new("RGB", (size, size), FIELD_COLOURS[0])
    draw = ImageDraw.Draw(base)
    step = size // 7
    pts = {}
    for i in range(9):
        for j in range(9):
            jitter = rng.integers(-step // 4, step // 4 + 1, size=2)
            pts[i, j] = (int((i - 1) * step + jitter[0]), int((j - 1) * step + jitter[1]))
    for i in range(8):
        for j in range(8):
            quad = [pts[i, j], pts[i + 1, j], pts[i + 1, j + 1], pts[i, j + 1]]
            colour = FIELD_COLOURS[int(rng.integers(len(FIELD_COLOURS)))]
            draw.polygon(quad, fill=colour)
            # furrows: thin darker lines across the field, in one of two directions
            stripes = Image.new("L", (size, size), 0)
            sd = ImageDraw.Draw(stripes)
            sd.polygon(quad, fill=255)
            lines = Image.new("L", (size, size), 0)
            ld = ImageDraw.Draw(lines)
            if rng.random() < 0.5:
                for x in range(0, size, 5):
                    ld.line([(x, 0), (x + size // 3, size)], fill=255)
            else:
                for y in range(0, size, 5):
                    ld.line([(0, y), (size, y + size // 4)], fill=255)
            lines = Image.fromarray(np.minimum(np.asarray(lines), np.asarray(stripes)))
            shade = tuple(max(c - 14, 0) for c in colour)
            base.paste(shade, mask=lines)
            draw.line(quad + [quad[0]], fill=(84, 98, 56), width=2)  # hedgerows
    return base


def _forest(rng: np.random.Generator, size: int, img: np.ndarray) -> np.ndarray:
    """A dark, lumpy forest in the north-west corner."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    noise = _smooth_noise(rng, size, max(size // 16, 4))
    area = (np.hypot(xx - 0.05, yy - 0.1) + 0.18 * noise) < 0.42
    crowns = _smooth_noise(rng, size, 3) * 0.6 + _smooth_noise(rng, size, 7) * 0.4
    green = np.stack([34 + 30 * crowns, 64 + 42 * crowns, 36 + 22 * crowns], axis=-1)
    return np.where(area[..., None], green, img)


def _river(size: int) -> list[tuple[float, float]]:
    """A meandering river from the north-east to the south-west."""
    t = np.linspace(0.0, 1.0, 200)
    x = size * (0.92 - 0.8 * t + 0.07 * np.sin(t * 9.0))
    y = size * (-0.02 + 1.04 * t + 0.04 * np.cos(t * 13.0))
    return list(zip(x.tolist(), y.tolist(), strict=True))


def draw_map(size: int = 768, seed: int = SEED) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.asarray(_fields(rng, size), dtype=np.float32)
    img = _forest(rng, size, img)
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pic)
    s = size / 768

    # the river, with a lighter bank
    river = _river(size)
    draw.line(river, fill=(118, 128, 92), width=max(int(30 * s), 3), joint="curve")
    draw.line(river, fill=(46, 78, 86), width=max(int(20 * s), 2), joint="curve")
    draw.line(river, fill=(58, 94, 102), width=max(int(8 * s), 1), joint="curve")

    # roads: a main road west-east and one north-south, meeting in the town
    road = (176, 172, 160)
    main = [(0, 430 * s), (200 * s, 420 * s), (420 * s, 470 * s), (600 * s, 452 * s),
            (size, 470 * s)]
    cross = [(470 * s, 0), (452 * s, 200 * s), (430 * s, 470 * s), (410 * s, 620 * s),
             (360 * s, size)]
    lane = [(430 * s, 470 * s), (560 * s, 600 * s), (700 * s, size)]
    busy = Image.new("L", (size, size), 0)  # where no house may stand: water and roads
    ImageDraw.Draw(busy).line(river, fill=255, width=max(int(40 * s), 4), joint="curve")
    for line, width in ((main, 12), (cross, 10), (lane, 6)):
        draw.line(line, fill=(120, 116, 104), width=max(int((width + 4) * s), 2),
                  joint="curve")
        draw.line(line, fill=road, width=max(int(width * s), 1), joint="curve")
        ImageDraw.Draw(busy).line(line, fill=255, width=max(int((width + 16) * s), 4),
                                  joint="curve")
    busy_px = np.asarray(busy)

    # the town: blocks of houses around the crossing, red and grey roofs with shadows
    roofs = [(168, 84, 64), (150, 72, 58), (120, 116, 112), (184, 100, 76), (96, 92, 90)]
    cx, cy = 440 * s, 455 * s
    for _ in range(int(260 * s * s) + 40):
        r = abs(rng.normal(0, 95 * s))
        a = rng.uniform(0, 2 * np.pi)
        x, y = cx + r * np.cos(a), cy + r * np.sin(a)
        w, h = rng.uniform(9, 20) * s, rng.uniform(7, 14) * s
        if rng.random() < 0.5:
            w, h = h, w
        if not (0 <= x < size and 0 <= y < size) or busy_px[int(y), int(x)]:
            continue
        box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        draw.rectangle([box[0] + 2 * s, box[1] + 2 * s, box[2] + 2 * s, box[3] + 2 * s],
                       fill=(60, 62, 52))  # shadow
        colour = roofs[int(rng.integers(len(roofs)))]
        draw.rectangle(box, fill=colour)
        draw.line([(box[0], (box[1] + box[3]) / 2), (box[2], (box[1] + box[3]) / 2)],
                  fill=tuple(max(c - 30, 0) for c in colour), width=1)  # ridge
    # a church and a market square
    draw.rectangle([cx + 14 * s, cy - 64 * s, cx + 44 * s, cy - 40 * s], fill=(158, 154, 146))
    draw.rectangle([cx + 20 * s, cy + 22 * s, cx + 56 * s, cy + 50 * s], fill=(190, 184, 170))
    # a sports ground in the south-east
    draw.rectangle([600 * s, 600 * s, 690 * s, 660 * s], fill=(92, 150, 74))
    draw.rectangle([610 * s, 610 * s, 680 * s, 650 * s], outline=(230, 230, 220), width=1)

    # a little haze and grain, as a satellite picture has
    pic = pic.filter(ImageFilter.GaussianBlur(0.6))
    arr = np.asarray(pic, dtype=np.float32)
    grain = (_smooth_noise(rng, size, 2) - 0.5) * 10
    arr = np.clip(arr + grain[..., None], 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=HERE / "sample-map.png")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    draw_map(args.size, args.seed).save(args.out, optimize=True)
    print(f"{args.out}: {args.size}x{args.size}, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
