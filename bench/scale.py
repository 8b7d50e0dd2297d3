"""Scale-out: the Ray executor against the local one, side by side in one run.

Brings up, on this machine and one after the other, real ``bildwerk serve`` ingresses
sharing one PostgreSQL database and Redis:

1. ``local``: the default executor (one worker thread, one torch thread);
2. ``ray-1``: ``BILDWERK_EXECUTOR=ray`` with one CPU ``Generator`` replica (one torch
   thread) on a local Ray cluster (``ray start --head --num-cpus 2``);
3. ``ray-2``: the same with two replicas.

On each it measures the latency of one job at a time (``--latency-runs`` synchronous
``POST /txt2img``, median and p95), and on the Ray ones the throughput of ``--jobs`` jobs
sent at once (images/s from the first request to the last answer). The model is the
embedded ``bildwerk-micro`` (built on first start), ``--steps`` at ``--size``².

Targets (issue 18): ray-2 gives at least 1.6x the throughput of ray-1, and the Ray path
adds at most 10% to one job's latency (ray-1 median / local median <= 1.10).

    .venv/bin/python bench/scale.py            # ~3-4 minutes on 2 cores

Needs PostgreSQL (BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/
postgres: a database bildwerk_bench_scale is created and dropped) and Redis
(BENCH_REDIS_URL, default redis://127.0.0.1:6379/0). Prints a summary and writes JSON to
bench/results/scale.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import free_port, write_result  # noqa: E402

PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DB_NAME = "bildwerk_bench_scale"
RAY = Path(sys.executable).with_name("ray")


def admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def start_ingress(data_dir: Path, env: dict[str, str], log: Path):
    port = free_port()
    full = {**os.environ, "BILDWERK_DATA_DIR": str(data_dir), "BILDWERK_DEVICE": "cpu",
            "BILDWERK_TORCH_THREADS": "1", "BILDWERK_MAX_QUEUED_PER_KEY": "0",
            "BILDWERK_LOG_FORMAT": "json", "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=full,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ingress exited; see {log}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"ingress did not become ready; see {log}")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def body(args, seed: int) -> dict:
    return {"prompt": "a lighthouse on a cliff at dusk", "steps": args.steps,
            "width": args.size, "height": args.size, "seed": seed}


def latency(base: str, args) -> dict:
    times = []
    with httpx.Client(timeout=600) as client:
        for i in range(args.warmup + args.latency_runs):
            started = time.perf_counter()
            r = client.post(f"{base}/txt2img", json=body(args, i))
            elapsed = time.perf_counter() - started
            r.raise_for_status()
            if i >= args.warmup:
                times.append(elapsed)
    times.sort()
    return {"runs": len(times), "median_s": round(statistics.median(times), 4),
            "p95_s": round(times[min(len(times) - 1, int(0.95 * len(times)))], 4),
            "min_s": round(times[0], 4)}


async def _throughput(base: str, args) -> dict:
    async with httpx.AsyncClient(timeout=900) as client:
        # warm every replica: as many jobs at once as there are replicas
        await asyncio.gather(*(client.post(f"{base}/txt2img", json=body(args, 1000 + i))
                               for i in range(2)))
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.post(f"{base}/txt2img", json=body(args, i))
                                         for i in range(args.jobs)))
        elapsed = time.perf_counter() - started
        workers = set()
        for answer in answers:
            answer.raise_for_status()
            record = await client.get(f"{base}/records/{answer.json()['record_id']}")
            workers.add(record.json().get("worker"))
    return {"jobs": args.jobs, "seconds": round(elapsed, 3),
            "images_per_s": round(args.jobs / elapsed, 4), "workers": sorted(workers)}


def throughput(base: str, args) -> dict:
    return asyncio.run(_throughput(base, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--latency-runs", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bildwerk-scale-"))
    data_dir, log = work / "data", work / "servers.log"
    admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{DB_NAME}"')
    shared = {"BILDWERK_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{DB_NAME}",
              "BILDWERK_REDIS_URL": REDIS_URL, "BILDWERK_BLOB_STORE": f"file://{work}/blobs"}
    ray_port = free_port()
    ray_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = Path("/tmp") / f"ray-scale-{os.getpid()}"
    results: dict = {}
    try:
        print("local executor ...", flush=True)
        proc, base = start_ingress(data_dir, shared, log)  # the default: one box
        try:
            results["local"] = {"latency": latency(base, args)}
        finally:
            stop(proc)
        subprocess.run([str(RAY), "start", "--head", f"--port={ray_port}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={temp}"], env=ray_env, check=True, capture_output=True)
        for replicas in (1, 2):
            name = f"ray-{replicas}"
            print(f"{name} ...", flush=True)
            env = {**shared, "BILDWERK_EXECUTOR": "ray",
                   "BILDWERK_RAY_ADDRESS": f"127.0.0.1:{ray_port}",
                   "BILDWERK_RAY_APP_NAME": f"bench-{replicas}",
                   "BILDWERK_RAY_MIN_REPLICAS": str(replicas),
                   "BILDWERK_RAY_MAX_REPLICAS": str(replicas),
                   "BILDWERK_RAY_NUM_CPUS": "1", "BILDWERK_RAY_TORCH_THREADS": "1"}
            proc, base = start_ingress(data_dir, env, log)
            try:
                results[name] = {"throughput": throughput(base, args)}
                if replicas == 1:
                    results[name]["latency"] = latency(base, args)
            finally:
                stop(proc)
                subprocess.run([sys.executable, "-m", "app.cli", "ray", "down"], cwd=ROOT,
                               env={**os.environ, **env}, capture_output=True)
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=ray_env, capture_output=True)
        admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')

    scaling = (results["ray-2"]["throughput"]["images_per_s"]
               / results["ray-1"]["throughput"]["images_per_s"])
    overhead = (results["ray-1"]["latency"]["median_s"]
                / results["local"]["latency"]["median_s"])
    summary = {"throughput_2_vs_1": round(scaling, 3), "target_throughput": 1.6,
               "ray_latency_vs_local": round(overhead, 3), "target_latency": 1.10,
               "meets_targets": scaling >= 1.6 and overhead <= 1.10}
    import torch

    result = {"bench": "scale", "at": datetime.now(UTC).isoformat(timespec="seconds"),
              "model": "bildwerk-micro (embedded)", "size": args.size, "steps": args.steps,
              "cpus": os.cpu_count(), "torch": torch.__version__, "results": results,
              "summary": summary}
    write_result(args.out, result)
    print(f"model bildwerk-micro, {args.size}x{args.size}, {args.steps} steps, "
          f"{os.cpu_count()} CPUs")
    print(f"latency, one job at a time (median): local {results['local']['latency']['median_s']}"
          f" s, ray-1 {results['ray-1']['latency']['median_s']} s -> {overhead:.3f}x "
          "(target <= 1.10)")
    print(f"throughput, {args.jobs} jobs at once: ray-1 "
          f"{results['ray-1']['throughput']['images_per_s']} img/s, ray-2 "
          f"{results['ray-2']['throughput']['images_per_s']} img/s -> {scaling:.3f}x "
          "(target >= 1.6)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
