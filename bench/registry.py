"""Model registry costs: model switches (cold from disk, warm from cache), LoRA apply and
remove, and resident memory over 50 LoRA switches (the leak check).

Everything runs through the registry and LoRA catalog the server uses, on two models of
the chosen architecture with different seeded weights and three LoRAs (two resident at
most, so switches also evict adapters).

    .venv/bin/python bench/registry.py --switches 50

Prints a summary and writes JSON to bench/results/registry.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import add_common_args, machine_info, write_result  # noqa: E402


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _ms(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values) * 1000, 3),
            "min_ms": round(min(values) * 1000, 3), "max_ms": round(max(values) * 1000, 3),
            "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ROOT / "bench" / "results" / "registry.json")
    parser.add_argument("--switches", type=int, default=50)
    parser.set_defaults(runs=10, warmup=1, steps=4)
    args = parser.parse_args()

    import torch
    from diffusers.utils import logging as dlog

    from app.pipelines.device import resolve_runtime
    from app.pipelines.embedded import build_tiny_sd15
    from app.pipelines.lora_catalog import LoraCatalog
    from app.pipelines.progress import StepReporter
    from app.pipelines.registry import ModelRegistry
    from app.pipelines.requests import Txt2ImgInput
    from app.pipelines.txt2img import Txt2ImgPipeline
    from bench._common import build_model
    from tests.utils.loras import write_tiny_lora

    dlog.set_verbosity_error()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bildwerk-bench-"))
    models = work / "models"
    build_model(args.arch, models / "model-a")
    if args.arch == "tiny":
        build_tiny_sd15(models / "model-b", seed=7)
        (models / "model-b" / "bildwerk_embedded.json").unlink()
    else:
        import shutil

        shutil.copytree(models / "model-a", models / "model-b")
    for i, name in enumerate(("ink", "neon", "moss")):
        write_tiny_lora(models / "model-a", models / "loras", name, seed=i + 1)
    runtime = resolve_runtime(args.device)
    registry = ModelRegistry(models, work / "embedded", "embedded", runtime,
                             budget_bytes=64 * 2**30)
    registry.refresh()
    catalog = LoraCatalog(models, max_resident=2)
    catalog.refresh()
    reporter = StepReporter(report=lambda *a: None, cancelled=lambda: False)

    def generate(model_id: str) -> None:
        loaded = registry.load(model_id)
        Txt2ImgPipeline(loaded)(Txt2ImgInput(
            prompt="a lighthouse", negative_prompt="", width=args.size, height=args.size,
            steps=args.steps, guidance_scale=7.0, seeds=[1], scheduler=args.scheduler),
            reporter)

    # 1. Model switches at the registry: cold (unloaded -> loaded) and warm (cached).
    cold, warm = [], []
    for _ in range(args.runs):
        registry.unload("model-b")
        t0 = time.perf_counter()
        registry.load("model-b")
        cold.append(time.perf_counter() - t0)
        registry.load("model-a")
        t0 = time.perf_counter()
        registry.load("model-b")
        warm.append(time.perf_counter() - t0)

    # 2. The same at request level: alternating two cached models vs staying on one.
    for _ in range(args.warmup):
        generate("model-a")
        generate("model-b")
    same, alternating = [], []
    for _ in range(args.runs):
        for model_id, bucket in (("model-a", same), ("model-a", same),
                                 ("model-b", alternating), ("model-a", alternating)):
            t0 = time.perf_counter()
            generate(model_id)
            bucket.append(time.perf_counter() - t0)

    # 3. LoRA apply (cold: loaded from disk; warm: resident) and remove.
    entries = {e.id: e for e in catalog.list()}
    pipe = registry.load("model-a").main
    # Repeats hit resident adapters (warm); "moss" forces an eviction and a reload (cold).
    order = ["ink-diffusers", "neon-kohya", "ink-diffusers", "neon-kohya", "moss-diffusers"]
    apply_cold, apply_warm, remove = [], [], []
    rss_first = None
    rss = []
    for i in range(args.switches):
        entry = entries[order[i % len(order)]]
        resident = entry.id in catalog.manager.resident("model-a")
        t0 = time.perf_counter()
        catalog.manager.apply(pipe, "model-a", [(entry, 0.8)])
        (apply_warm if resident else apply_cold).append(time.perf_counter() - t0)
        generate("model-a")
        t0 = time.perf_counter()
        catalog.manager.reset(pipe)
        remove.append(time.perf_counter() - t0)
        rss.append(_rss())
        if rss_first is None:
            rss_first = rss[-1]

    result = {
        "benchmark": "registry", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args),
        "params": {"arch": args.arch, "size": args.size, "steps": args.steps,
                   "runs": args.runs, "switches": args.switches, "max_resident_loras": 2},
        "model_switch_cold": _ms(cold), "model_switch_warm": _ms(warm),
        "request_same_model": _ms(same), "request_alternating_models": _ms(alternating),
        "request_switch_overhead_ms": round(
            (statistics.median(alternating) - statistics.median(same)) * 1000, 3),
        "lora_apply_cold": _ms(apply_cold) if apply_cold else None,
        "lora_apply_warm": _ms(apply_warm) if apply_warm else None,
        "lora_remove": _ms(remove),
        "rss_after_first_switch_mb": round(rss_first / 2**20, 1),
        "rss_after_last_switch_mb": round(rss[-1] / 2**20, 1),
        "rss_growth_ratio": round(rss[-1] / rss_first, 4),
    }
    write_result(args.out, result)
    print(f"model switch cold {result['model_switch_cold']['median_ms']:.1f} ms, "
          f"warm {result['model_switch_warm']['median_ms']:.3f} ms")
    print(f"request on same model {result['request_same_model']['median_ms']:.1f} ms, "
          f"alternating {result['request_alternating_models']['median_ms']:.1f} ms "
          f"(switch overhead {result['request_switch_overhead_ms']:.1f} ms)")
    print(f"LoRA apply cold {result['lora_apply_cold']['median_ms']:.1f} ms "
          f"(n={result['lora_apply_cold']['n']}), warm "
          f"{result['lora_apply_warm']['median_ms']:.1f} ms "
          f"(n={result['lora_apply_warm']['n']}), remove "
          f"{result['lora_remove']['median_ms']:.1f} ms")
    print(f"RSS after first switch {result['rss_after_first_switch_mb']} MB, after "
          f"{args.switches}: {result['rss_after_last_switch_mb']} MB "
          f"(ratio {result['rss_growth_ratio']})  -> {args.out}")


if __name__ == "__main__":
    main()
