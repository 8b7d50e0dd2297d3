"""Prompt accuracy of the micro model (the embedded default): does it draw what it is asked?

For each prompt "a {colour} {shape} on a {background} background" and each seed, generate
at the native size with the server's defaults (euler_a, 25 steps, guidance 7), read the
picture back (training/micro/analyse.py: background = the border's median colour,
foreground = pixels far from it, colour = nearest palette colour, shape = fill ratio of the
foreground's bounding box) and count matches.

    .venv/bin/python bench/micro_model.py --seeds 4            # 24 prompts x 4 seeds
    .venv/bin/python bench/micro_model.py --seeds 4 --all      # all 168 combinations

Prints colour, shape and background accuracy and writes JSON to
bench/results/micro_model.json (or --out).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import write_result  # noqa: E402

DEFAULT_MODEL = ROOT / "app" / "pipelines" / "micro" / "bildwerk-micro"


def prompts(all_combinations: bool) -> list[tuple[str, str, str]]:
    """(colour, shape, background) triples: every colour x shape with a cycled background,
    or all combinations."""
    from training.micro.shapes import COLOURS, SHAPES

    if all_combinations:
        return [(c, s, b) for c, s, b in itertools.product(COLOURS, SHAPES, COLOURS) if b != c]
    triples = []
    for i, (colour, shape) in enumerate(itertools.product(COLOURS, SHAPES)):
        others = [b for b in COLOURS if b != colour]
        triples.append((colour, shape, others[(i * 3) % len(others)]))
    return triples


def load(model: Path, scheduler: str, threads: int):
    import torch
    from diffusers import StableDiffusionPipeline

    from app.pipelines.schedulers import build_scheduler

    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True,
                                                   dtype=torch.float32)
    pipe.scheduler = build_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompt: str, seeds: list[int], steps: int, guidance: float,
             size: int | None = None):
    import torch

    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe([prompt] * len(seeds), num_inference_steps=steps, guidance_scale=guidance,
                generator=generators, width=size, height=size).images


def run(model: Path, seeds: int, steps: int, guidance: float, scheduler: str,
        all_combinations: bool, threads: int, save_dir: Path | None = None) -> dict:
    from training.micro.analyse import read_scene

    pipe = load(model, scheduler, threads)
    per_colour: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_shape: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    hits = {"colour": 0, "shape": 0, "background": 0, "all": 0}
    samples = []
    n = 0
    start = time.monotonic()
    for colour, shape, background in prompts(all_combinations):
        prompt = f"a {colour} {shape} on a {background} background".replace(
            "a orange", "an orange")
        images = generate(pipe, prompt, list(range(seeds)), steps, guidance)
        for seed, image in enumerate(images):
            r = read_scene(image)
            ok = {"colour": r.colour == colour, "shape": r.shape == shape,
                  "background": r.background == background}
            ok["all"] = all(ok.values())
            for key, value in ok.items():
                hits[key] += value
            per_colour[colour][0] += ok["colour"]
            per_colour[colour][1] += 1
            per_shape[shape][0] += ok["shape"]
            per_shape[shape][1] += 1
            n += 1
            samples.append({"prompt": prompt, "seed": seed, "read": {
                "colour": r.colour, "shape": r.shape, "background": r.background,
                "fill": r.fill, "foreground_fraction": r.foreground_fraction}, **ok})
            if save_dir is not None:
                save_dir.mkdir(parents=True, exist_ok=True)
                image.save(save_dir / f"{colour}-{shape}-on-{background}-{seed}.png")
    seconds = time.monotonic() - start
    accuracy = {k: round(v / n, 4) for k, v in hits.items()}
    return {
        "model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"seeds": seeds, "steps": steps, "guidance_scale": guidance,
                     "scheduler": scheduler, "prompts": n // seeds, "images": n,
                     "all_combinations": all_combinations, "threads": threads},
        "accuracy": accuracy,
        "per_colour": {c: round(a / t, 3) for c, (a, t) in per_colour.items()},
        "per_shape": {s: round(a / t, 3) for s, (a, t) in per_shape.items()},
        "seconds": round(seconds, 1),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--scheduler", default="euler_a")
    parser.add_argument("--all", action="store_true", help="all colour/shape/background triples")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--save-images", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "micro_model.json")
    args = parser.parse_args(argv)
    result = run(args.model, args.seeds, args.steps, args.guidance, args.scheduler, args.all,
                 args.threads, args.save_images)
    acc = result["accuracy"]
    print(f"micro model: {result['settings']['images']} images "
          f"({result['settings']['prompts']} prompts x {args.seeds} seeds) "
          f"in {result['seconds']} s")
    print(f"colour accuracy     {acc['colour']:.1%}")
    print(f"shape accuracy      {acc['shape']:.1%}")
    print(f"background accuracy {acc['background']:.1%}")
    print(f"all three           {acc['all']:.1%}")
    print("per colour:", result["per_colour"])
    print("per shape: ", result["per_shape"])
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
