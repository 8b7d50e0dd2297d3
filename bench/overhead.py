"""End-to-end HTTP latency of POST /txt2img against the raw diffusers call.

Both sides run the same model (``--arch``: the embedded ``micro`` model by default, or the
random ``tiny`` one, or the full ``sd15`` architecture), scheduler, size, steps, seed and
thread count. The raw side is exactly the worker's call, in this process: the model
loaded by the registry with the server's fast path, ``Txt2ImgPipeline`` with a step
reporter, under ``torch.inference_mode``. The server runs as a real uvicorn process on
127.0.0.1. Runs alternate (raw, http, raw, http …) so machine noise hits both alike, and
the ratio of medians is reported: what HTTP, admission, the record and the PNG add.

    .venv/bin/python bench/overhead.py --runs 30 --size 64 --steps 20

Prints a summary and writes JSON to bench/results/overhead.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    add_common_args,
    machine_info,
    start_server,
    worker_model,
    write_result,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ROOT / "bench" / "results" / "overhead.json")
    parser.set_defaults(runs=30, warmup=3, arch="micro", threads=None)
    args = parser.parse_args()

    import torch

    from app.pipelines.progress import StepReporter
    from app.pipelines.requests import Txt2ImgInput
    from app.pipelines.txt2img import Txt2ImgPipeline

    # The raw side is exactly the worker's call: the model loaded by the registry with the
    # server's fast path for these settings, Txt2ImgPipeline with a step reporter, under
    # inference_mode, with the thread count the server uses (BILDWERK_TORCH_THREADS).
    work, models_dir, loaded, runtime = worker_model(args)
    body = {"prompt": "a lighthouse", "width": args.size, "height": args.size,
            "steps": args.steps, "seed": 1234, "scheduler": args.scheduler}
    request = Txt2ImgInput(prompt="a lighthouse", negative_prompt="", width=args.size,
                           height=args.size, steps=args.steps, guidance_scale=7.0,
                           seeds=[1234], scheduler=args.scheduler)

    def raw_call() -> float:
        reporter = StepReporter(report=lambda *_: None, cancelled=lambda: False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            Txt2ImgPipeline(loaded)(request, reporter)
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
    print(f"model {args.arch}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.threads} thread(s)")
    print(f"raw (worker's call) median {raw_med * 1000:8.1f} ms  (n={args.runs})")
    print(f"HTTP /txt2img  median {http_med * 1000:8.1f} ms  (n={args.runs})")
    print(f"ratio {result['ratio']:.4f}  overhead {result['overhead_median_ms']:.1f} ms  "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
