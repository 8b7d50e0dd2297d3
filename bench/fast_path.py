"""The fast path on this machine: per-image time and pixel error of each option against
the default, side by side in one run (app/pipelines/fast_path.py, docs/performance.md).

For each model (the embedded ``bildwerk-micro`` by default, and with ``--arch sd15`` the
full SD1.5 architecture with random weights) it loads the pipeline exactly as the worker
does (``load_pipeline``, then ``FastPath.apply``) once per variant:

* ``default``: what the server runs on this device today;
* ``channels_last``;
* ``bf16`` (CPUs with native bf16 only);
* ``compile`` (``torch.compile``, default mode; its warm-up time is reported apart).

It alternates the variants ``--runs`` times on the same request (seeded generators), and
reports the median seconds per image, the ratio to ``default`` and the PSNR / largest pixel
difference of each variant's image against ``default``'s. Threads: as the server chooses
them for the model (``choose_threads``) unless ``--threads``.

    .venv/bin/python bench/fast_path.py                       # micro, 256², 20 steps
    .venv/bin/python bench/fast_path.py --arch sd15 --size 256 --steps 10 --runs 3

Writes JSON to bench/results/fast_path_<arch>.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import build_model, write_result  # noqa: E402


def model_folder(arch: str, work: Path) -> Path:
    from app.pipelines.embedded import install_micro

    if arch == "micro":
        return install_micro(work / "bildwerk-micro")
    return build_model(arch, work / arch)


def load(folder: Path, dtype: torch.dtype, fast):
    from app.pipelines.device import Runtime
    from app.pipelines.registry import ModelRegistry

    runtime = Runtime(torch.device("cpu"), dtype)
    registry = ModelRegistry(folder.parent / "none", folder, folder.name, runtime,
                             fast_path=fast)
    registry.refresh()
    loaded = registry.load(folder.name)
    return loaded.main, loaded.optimizations


def call(pipe, args) -> tuple[float, np.ndarray]:
    generator = torch.Generator("cpu").manual_seed(7)
    started = time.perf_counter()
    with torch.inference_mode():
        image = pipe(prompt="a red lighthouse by the sea", num_inference_steps=args.steps,
                     width=args.size, height=args.size, guidance_scale=7.0,
                     generator=generator).images[0]
    return time.perf_counter() - started, np.asarray(image.convert("RGB")).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    mse = float(np.mean((a - b) ** 2))
    return None if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2)


def preview_costs(pipe, args, step_s: float, repeats: int = 20) -> dict:
    """Seconds one step preview costs (the latent-to-RGB picture and its PNG, as a
    subscriber gets it), against one step: the linear map, and TAESD (its real architecture,
    random weights: the cost does not depend on them)."""
    import io

    from diffusers import AutoencoderTiny

    from app.pipelines.preview import full_size, latent_preview

    latents = torch.randn(1, 4, args.size // 8, args.size // 8,
                          generator=torch.Generator().manual_seed(0))
    out = {}
    for name, decoder in (("linear", None), ("taesd", AutoencoderTiny().eval())):
        pipe.preview_decoder = decoder
        started = time.perf_counter()
        for _ in range(repeats):
            image = full_size(latent_preview(pipe, latents))
            image.save(io.BytesIO(), format="PNG", compress_level=1)
        each = (time.perf_counter() - started) / repeats
        out[name] = {"seconds": round(each, 5), "of_a_step": round(each / step_s, 4)}
    pipe.preview_decoder = None
    return out


def main() -> None:
    from app.pipelines.fast_path import FastPath, choose_threads, cpu_has_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="micro", choices=["micro", "sd15"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"fast_path_{args.arch}.json"

    work = Path(tempfile.mkdtemp(prefix="bildwerk-fastpath-"))
    folder = model_folder(args.arch, work)
    size = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    import os

    threads = args.threads or choose_threads(size, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    variants = {"default": (torch.float32, FastPath()),
                "channels_last": (torch.float32, FastPath(channels_last=True))}
    if cpu_has_bf16():
        variants["bf16"] = (torch.bfloat16, FastPath())
    pipes, active, warmup = {}, {}, {}
    for name, (dtype, fast) in variants.items():
        pipes[name], active[name] = load(folder, dtype, fast)
    if not args.no_compile:
        started = time.perf_counter()
        pipes["compile"], active["compile"] = load(
            folder, torch.float32, FastPath(compile="default",
                                            compile_cache=work / "compile-cache"))
        warmup["compile"] = round(time.perf_counter() - started, 1)
    for name, pipe in pipes.items():  # first calls (and any remaining compilation)
        print(f"warming {name} ...", flush=True)
        call(pipe, args)
    times: dict[str, list[float]] = {name: [] for name in pipes}
    images: dict[str, np.ndarray] = {}
    for _ in range(args.runs):
        for name, pipe in pipes.items():  # alternated: the machine's noise hits all alike
            seconds, images[name] = call(pipe, args)
            times[name].append(seconds)
    base = statistics.median(times["default"])
    results = {}
    for name in pipes:
        median = statistics.median(times[name])
        diff = np.abs(images[name] - images["default"])
        results[name] = {"median_s": round(median, 4), "ratio": round(median / base, 3),
                         "psnr_db_vs_default": psnr(images[name], images["default"]),
                         "max_pixel_diff": int(diff.max()), "active": active[name]}
        if name in warmup:
            results[name]["load_and_warmup_s"] = warmup[name]
    step_s = base / args.steps
    previews = preview_costs(pipes["default"], args, step_s)
    result = {"bench": "fast_path", "at": datetime.now(UTC).isoformat(timespec="seconds"),
              "model": "bildwerk-micro (embedded)" if args.arch == "micro"
              else "SD1.5 architecture, random weights", "size": args.size,
              "steps": args.steps, "runs": args.runs, "threads": threads,
              "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__, "results": results,
              "preview_cost": previews, "step_s": round(step_s, 5)}
    write_result(out, result)
    print(f"{result['model']}, {args.size}x{args.size}, {args.steps} steps, {threads} "
          f"thread(s), median of {args.runs}")
    for name, r in results.items():
        print(f"  {name:14s} {r['median_s']:8.3f} s  x{r['ratio']:.3f}  PSNR "
              f"{r['psnr_db_vs_default'] or 'identical'}  max diff {r['max_pixel_diff']}"
              + (f"  (load+warm-up {r['load_and_warmup_s']} s)" if "load_and_warmup_s" in r
                 else ""))
    for name, cost in previews.items():
        print(f"  one {name} preview: {cost['seconds'] * 1000:.2f} ms = "
              f"{cost['of_a_step'] * 100:.2f}% of a step ({step_s * 1000:.1f} ms)")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
