"""Seconds per frame of POST /img2seq against N raw diffusers img2img calls.

Both sides make the same loopback sequence: the same tiny pipeline, scheduler, size,
steps, strength and per-frame seeds, each frame starting from the previous output.
The server runs as a real uvicorn process on 127.0.0.1; the raw calls run in this
process. Runs alternate (raw, http, raw, http …) and the ratio of medians is reported.

    .venv/bin/python bench/img2seq.py --frames 8 --runs 7

Prints a summary and writes JSON to bench/results/img2seq.json (or --out).
"""

from __future__ import annotations

import argparse
import base64
import io
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
    add_common_args(parser, ROOT / "bench" / "results" / "img2seq.json")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.set_defaults(runs=7, warmup=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    from diffusers.utils import logging as dlog
    from PIL import Image

    from app.pipelines.device import resolve_runtime
    from app.pipelines.schedulers import build_scheduler

    dlog.set_verbosity_error()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bildwerk-bench-"))
    model_dir = build_model(args.arch, work / "models" / "bench-model")
    runtime = resolve_runtime(args.device)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False,
        dtype=runtime.dtype).to(runtime.device)
    pipe.set_progress_bar_config(disable=True)

    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    init.save(buf, format="PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "prompt": "a lighthouse",
            "frames": args.frames, "steps": args.steps, "strength": args.strength,
            "seed": 1234, "seed_policy": "increment", "mode": "loopback",
            "width": args.size, "height": args.size, "scheduler": args.scheduler}

    def raw_sequence() -> float:
        t0 = time.perf_counter()
        image = init
        for i in range(args.frames):
            pipe.scheduler = build_scheduler(args.scheduler, pipe.scheduler.config)
            image = pipe(prompt="a lighthouse", negative_prompt="", image=image,
                         strength=args.strength, num_inference_steps=args.steps,
                         guidance_scale=7.0,
                         generator=[torch.Generator("cpu").manual_seed(1234 + i)]).images[0]
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.frames

    proc, base = start_server(work / "models", work / "data", "bench-model", args.threads,
                              args.device)
    client = httpx.Client(base_url=base, timeout=600)

    def http_sequence() -> float:
        t0 = time.perf_counter()
        r = client.post("/img2seq", json=body)
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        assert len(r.json()["frames"]) == args.frames
        return elapsed / args.frames

    try:
        for _ in range(args.warmup):
            raw_sequence()
            http_sequence()
        raw, http = [], []
        for _ in range(args.runs):
            raw.append(raw_sequence())
            http.append(http_sequence())
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)

    raw_med, http_med = statistics.median(raw), statistics.median(http)
    result = {
        "benchmark": "img2seq", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args),
        "params": {"arch": args.arch, "frames": args.frames, "size": args.size,
                   "steps": args.steps, "strength": args.strength,
                   "scheduler": args.scheduler, "runs": args.runs, "warmup": args.warmup},
        "raw_s_per_frame_median": round(raw_med, 5),
        "http_s_per_frame_median": round(http_med, 5),
        "ratio": round(http_med / raw_med, 4),
        "raw_s_per_frame": [round(x, 5) for x in raw],
        "http_s_per_frame": [round(x, 5) for x in http],
    }
    write_result(args.out, result)
    print(f"raw img2img x{args.frames}  median {raw_med * 1000:8.1f} ms/frame  (n={args.runs})")
    print(f"HTTP /img2seq     median {http_med * 1000:8.1f} ms/frame  (n={args.runs})")
    print(f"ratio {result['ratio']:.4f}  -> {args.out}")


if __name__ == "__main__":
    main()
