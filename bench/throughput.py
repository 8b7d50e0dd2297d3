"""Images per second under concurrent clients, with and without batching, against
sequential raw calls, in one run.

The model is ``--arch`` (the embedded ``micro`` model by default; ``sd15`` is the full SD1.5
architecture with random weights). Three parts, one after the other on the same machine:

1. **raw**: the worker's own call (``Txt2ImgPipeline`` on the model the registry loads with
   the server's fast path and thread count), one image at a time, ``--raw-images`` times;
   measured before and after each server part, which is compared with the mean of the
   two (these machines are shared; their speed drifts over minutes).
2. **server, batching off** (``BILDWERK_MAX_BATCH=1``): 1, 4 and 8 closed-loop HTTP clients
   (``--clients``), each sending ``--requests`` synchronous POST /txt2img one after the
   other (different prompts and seeds).
3. **server, batching on** (the defaults): the same clients.
4. with ``--workers N --postgres-url URL --redis-url URL``: ``bildwerk serve`` with
   ``BILDWERK_WORKERS=N`` (N server processes on one port, their threads ``cores // N``),
   batching off and on, on a fresh PostgreSQL database that is dropped afterwards.

For every part: images/s, its ratio to raw, and the p50 and p95 request latency.

    .venv/bin/python bench/throughput.py                     # micro, 64², 20 steps
    .venv/bin/python bench/throughput.py --arch sd15 --size 128 --steps 4 --requests 2

Prints a table and writes JSON to bench/results/throughput_<arch>.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
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

PROMPTS = ["a lighthouse at dusk", "a red barn in snow", "a harbour at night",
           "a windmill on a hill", "a forest path", "a city street in rain",
           "a mountain lake", "a desert road"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raw_part(args, loaded, runtime) -> dict:
    """One image per call, one call after another: the worker's exact call."""
    import torch

    from app.pipelines.progress import StepReporter
    from app.pipelines.requests import Txt2ImgInput
    from app.pipelines.txt2img import Txt2ImgPipeline

    times = []
    for i in range(args.raw_images):
        request = Txt2ImgInput(prompt=PROMPTS[i % len(PROMPTS)], negative_prompt="",
                               width=args.size, height=args.size, steps=args.steps,
                               guidance_scale=7.0, seeds=[1000 + i],
                               scheduler=args.scheduler)
        reporter = StepReporter(report=lambda *_: None, cancelled=lambda: False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            Txt2ImgPipeline(loaded)(request, reporter)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {"images": len(times), "seconds": round(total, 4),
            "images_per_s": round(len(times) / total, 4),
            "p50_s": round(percentile(times, 0.5), 4), "p95_s": round(percentile(times, 0.95), 4)}


def clients_part(args, base: str, clients: int) -> dict:
    """``clients`` threads, each sending ``--requests`` requests one after the other."""
    latencies: list[float] = []
    batched: list[int] = []
    server: list[dict] = []  # each response's timings
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            start.wait()
            for n in range(args.requests):
                body = {"prompt": PROMPTS[(index + n) % len(PROMPTS)], "width": args.size,
                        "height": args.size, "steps": args.steps, "scheduler": args.scheduler,
                        "seed": 10_000 * index + n}
                t0 = time.perf_counter()
                r = http.post("/txt2img", json=body)
                elapsed = time.perf_counter() - t0
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    latencies.append(elapsed)
                    server.append(r.json()["timings"])
                    batched.append(int(server[-1].get("batch_images", 1)))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {"clients": clients, "images": len(latencies), "seconds": round(wall, 4),
            "images_per_s": round(len(latencies) / wall, 4),
            "p50_s": round(percentile(latencies, 0.5), 4),
            "p95_s": round(percentile(latencies, 0.95), 4),
            "mean_batch_images": round(statistics.mean(batched), 2),
            "server_mean_s": {name: round(statistics.mean(t.get(name, 0.0) for t in server), 4)
                              for name in ("queued_s", "load_s", "inference_s", "save_s",
                                           "total_s")}}


def server_part(args, models_dir: Path, data_dir: Path, env: dict) -> list[dict]:
    # The server chooses its threads per call (BILDWERK_TORCH_THREADS unset): one for a
    # job alone on a small model, as the raw side; the cores for a batch. All clients
    # are one loopback caller, so the per-caller job limit is lifted.
    proc, base = start_server(models_dir, data_dir, "bench-model", args.threads,
                              args.device, env={"BILDWERK_TORCH_THREADS": "",
                                                "BILDWERK_MAX_QUEUED_PER_KEY": "0", **env},
                              serve="BILDWERK_WORKERS" in env)
    try:
        with httpx.Client(base_url=base, timeout=600) as http:  # load and warm up
            for i in range(args.warmup):
                http.post("/txt2img", json={"prompt": "warm up", "width": args.size,
                                            "height": args.size, "steps": args.steps,
                                            "seed": i}).raise_for_status()
        return [clients_part(args, base, clients) for clients in args.clients]
    finally:
        proc.terminate()
        proc.wait(60)


@contextmanager
def fresh_postgres(admin_url: str):
    """A new PostgreSQL database on ``admin_url``'s server (its URL), dropped afterwards."""
    import uuid

    import sqlalchemy

    name = f"bildwerk_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ROOT / "bench" / "results" / "throughput.json")
    parser.set_defaults(warmup=2, arch="micro", threads=None, out=None)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 8], help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=6,
                        help="requests each client sends, one after the other")
    parser.add_argument("--raw-images", type=int, default=12,
                        help="images the raw part makes (each time it runs)")
    parser.add_argument("--workers", type=int, default=0,
                        help="also run BILDWERK_WORKERS=N server processes (needs "
                        "--postgres-url and --redis-url)")
    parser.add_argument("--postgres-url",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server where a database may be created")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    args.out = args.out or ROOT / "bench" / "results" / f"throughput_{args.arch}.json"

    work, models_dir, loaded, runtime = worker_model(args)
    raw_part(args, loaded, runtime)  # warm up

    # Each server part runs between two raw parts, and is compared with their mean: these
    # machines are shared, and their speed drifts over minutes.
    parts = [("off", "http_batching_off", {"BILDWERK_MAX_BATCH": "1"}),
             ("on", "http_batching_on", {})]
    raws: list[dict] = []
    rows_of: dict[str, list[dict]] = {}
    with ExitStack() as stack:
        if args.workers > 1:
            shared = {"BILDWERK_WORKERS": str(args.workers),
                      "BILDWERK_REDIS_URL": args.redis_url,
                      "BILDWERK_DATABASE_URL": stack.enter_context(
                          fresh_postgres(args.postgres_url))}
            parts += [(f"off, {args.workers} proc", "http_workers_batching_off",
                       {**shared, "BILDWERK_MAX_BATCH": "1"}),
                      (f"on, {args.workers} proc", "http_workers_batching_on", shared)]
        raws.append(raw_part(args, loaded, runtime))
        for _name, key, env in parts:
            rows = server_part(args, models_dir, work / f"data-{key}", env)
            raws.append(raw_part(args, loaded, runtime))
            raw_ips = (raws[-2]["images_per_s"] + raws[-1]["images_per_s"]) / 2
            for row in rows:
                row["raw_images_per_s"] = round(raw_ips, 4)
                row["vs_raw"] = round(row["images_per_s"] / raw_ips, 3)
            rows_of[key] = rows

    result = {
        "benchmark": "throughput", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args),
        "params": {"arch": args.arch, "size": args.size, "steps": args.steps,
                   "scheduler": args.scheduler, "requests_per_client": args.requests,
                   "raw_images": args.raw_images, "threads": args.threads,
                   "workers": args.workers if args.workers > 1 else None},
        "raw_sequential": raws, **rows_of,
    }
    write_result(args.out, result)
    print(f"model {args.arch}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.threads} torch thread(s) raw")
    print("raw sequential images/s, around the parts: "
          + ", ".join(f"{raw['images_per_s']:.3f}" for raw in raws))
    print(f"{'batching':<14} {'clients':>7} {'images/s':>9} {'vs raw':>7} {'p50 s':>7} "
          f"{'p95 s':>7} {'batch':>6}")
    for name, key, _env in parts:
        for row in rows_of[key]:
            print(f"{name:<14} {row['clients']:>7} {row['images_per_s']:>9.3f} "
                  f"{row['vs_raw']:>7.3f} {row['p50_s']:>7.3f} {row['p95_s']:>7.3f} "
                  f"{row['mean_batch_images']:>6.2f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
