"""End-to-end HTTP latency of POST /txt2img against the raw diffusers call.

Both sides use the same tiny pipeline (the embedded model's architecture and weights),
the same scheduler, size, steps and seed. The server runs as a real uvicorn process
on 127.0.0.1; the raw call runs in this process. Runs alternate (raw, http, raw, http …)
so machine noise hits both alike, and the ratio of medians is reported.

    .venv/bin/python bench/overhead.py --runs 30 --size 64 --steps 20

Prints a summary and writes JSON to bench/results/overhead.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    add_common_args,
    build_model,
    machine_info,
    start_server,
    write_result,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ROOT / "bench" / "results" / "overhead.json")
    parser.set_defaults(runs=30, warmup=3)
    args = parser.parse_args()

    import torch

    from app.pipelines.device import resolve_runtime
    from app.pipelines.schedulers import build_scheduler

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bildwerk-bench-"))
    models_dir = work / "models"
    model_dir = build_model(args.arch, models_dir / "bench-model")
    runtime = resolve_runtime(args.device)

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False,
        dtype=runtime.dtype).to(runtime.device)
    pipe.set_progress_bar_config(disable=True)
    body = {"prompt": "a lighthouse", "width": args.size, "height": args.size,
            "steps": args.steps, "seed": 1234, "scheduler": args.scheduler}

    def raw_call() -> float:
        pipe.scheduler = build_scheduler(args.scheduler, pipe.scheduler.config)
        t0 = time.perf_counter()
        pipe(prompt=["a lighthouse"], negative_prompt=[""], width=args.size,
             height=args.size, num_inference_steps=args.steps, guidance_scale=7.0,
             generator=[torch.Generator("cpu").manual_seed(1234)])
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    proc, base = start_server(models_dir, work / "data", "bench-model", args.threads,
                               args.device)
    client = httpx.Client(base_url=base, timeout=120)

    def http_call() -> float:
        t0 = time.perf_counter()
        r = client.post("/txt2img", json=body)
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        return elapsed

    try:
        for _ in range(args.warmup):
            raw_call()
            http_call()
        raw, http = [], []
        for _ in range(args.runs):
            raw.append(raw_call())
            http.append(http_call())
        server_timings = client.post("/txt2img", json=body).json()["timings"]
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)

    raw_med, http_med = statistics.median(raw), statistics.median(http)
    result = {
        "benchmark": "overhead", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args),
        "params": {"arch": args.arch, "size": args.size, "steps": args.steps,
                   "scheduler": args.scheduler, "runs": args.runs, "warmup": args.warmup},
        "raw_median_s": round(raw_med, 5), "http_median_s": round(http_med, 5),
        "ratio": round(http_med / raw_med, 4),
        "overhead_median_ms": round((http_med - raw_med) * 1000, 2),
        "raw_s": [round(x, 5) for x in raw], "http_s": [round(x, 5) for x in http],
        "last_server_timings": server_timings,
    }
    write_result(args.out, result)
    print(f"raw diffusers  median {raw_med * 1000:8.1f} ms  (n={args.runs})")
    print(f"HTTP /txt2img  median {http_med * 1000:8.1f} ms  (n={args.runs})")
    print(f"ratio {result['ratio']:.4f}  overhead {result['overhead_median_ms']:.1f} ms  "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
