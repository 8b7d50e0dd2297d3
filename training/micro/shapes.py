"""Procedural dataset of simple scenes: one coloured shape on a plain coloured background.

Every picture is drawn from a seed, so the dataset is reproducible bit for bit:
``render_scene(scene)`` draws a :class:`Scene`, ``sample_scene(rng)`` draws a random one and
``write_imagefolder`` saves a Hugging Face imagefolder (PNGs + ``metadata.jsonl`` with
``file_name`` and ``text``) for :func:`training.trainer.train`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

# Well separated colours (RGB). The bench classifies by nearest palette colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (250, 230, 40),
    "orange": (240, 120, 10),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
# Templates: the full caption most of the time, short variants so short prompts work.
TEMPLATES = (
    ("a {colour} {shape} on a {background} background", 0.55),
    ("{colour} {shape} on {background}", 0.10),
    ("a {shape} in {colour} on {background}", 0.10),
    ("a {colour} {shape}", 0.08),
    ("{colour} {shape}", 0.04),
    ("a {shape} on a {background} background", 0.03),
)
EMPTY_CAPTION_RATE = 0.10  # unconditional samples, for classifier-free guidance
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    cx: float  # centre, in pixels
    cy: float
    size: float  # side of the square / diameter of the circle / side of the triangle

    def caption(self, template: str = TEMPLATES[0][0]) -> str:
        text = template.format(colour=self.colour, shape=self.shape, background=self.background)
        return _articles(text)


def _articles(text: str) -> str:
    """"a orange" -> "an orange"."""
    words = text.split()
    for i, word in enumerate(words[:-1]):
        if word == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def sample_scene(rng: random.Random, resolution: int = 64, *, colour: str | None = None,
                 shape: str | None = None, background: str | None = None) -> Scene:
    """A random scene: shape 35-65 % of the picture, fully inside it, background differs."""
    colour = colour or rng.choice(COLOURS)
    shape = shape or rng.choice(SHAPES)
    background = background or rng.choice([c for c in COLOURS if c != colour])
    size = rng.uniform(0.35, 0.65) * resolution
    margin = size / 2 + 2
    cx = rng.uniform(margin, resolution - margin)
    cy = rng.uniform(margin, resolution - margin)
    return Scene(colour, shape, background, cx, cy, size)


def render_scene(scene: Scene, resolution: int = 64) -> Image.Image:
    """Draw ``scene`` anti-aliased (supersampled) at ``resolution`` x ``resolution``."""
    s = SUPERSAMPLE
    image = Image.new("RGB", (resolution * s, resolution * s), PALETTE[scene.background])
    draw = ImageDraw.Draw(image)
    fill = PALETTE[scene.colour]
    cx, cy, r = scene.cx * s, scene.cy * s, scene.size * s / 2
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "triangle":  # upright, base at the bottom of the bounding square
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}")
    return image.resize((resolution, resolution), Image.Resampling.BOX)


def sample_caption(rng: random.Random, scene: Scene) -> str:
    if rng.random() < EMPTY_CAPTION_RATE:
        return ""
    templates, weights = zip(*TEMPLATES, strict=True)
    return scene.caption(rng.choices(templates, weights=weights)[0])


def generate(count: int, seed: int = 0, resolution: int = 64):
    """Yield ``(image, caption, scene)`` for ``count`` scenes drawn from ``seed``."""
    rng = random.Random(seed)
    for _ in range(count):
        scene = sample_scene(rng, resolution)
        yield render_scene(scene, resolution), sample_caption(rng, scene), scene


def write_imagefolder(dest: Path, count: int, seed: int = 0, resolution: int = 64) -> Path:
    """Write ``count`` scenes as PNGs plus ``metadata.jsonl`` (imagefolder layout)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with (dest / "metadata.jsonl").open("w", encoding="utf-8") as meta:
        for index, (image, caption, _) in enumerate(generate(count, seed, resolution)):
            name = f"{index:06d}.png"
            image.save(dest / name)
            meta.write(json.dumps({"file_name": name, "text": caption}) + "\n")
    return dest


def vocabulary() -> list[str]:
    """Every word our captions use (the tokenizer makes each one a single token)."""
    words: set[str] = set(COLOURS) | set(SHAPES) | {"an", "the", "with"}
    for template, _ in TEMPLATES:
        words |= {w for w in template.split() if not w.startswith("{")}
    return sorted(words)
