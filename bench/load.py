"""Load test: many concurrent clients against a real uvicorn server for a bounded time.

The server runs as its own process on 127.0.0.1 with the tiny model (the embedded
model's architecture), exactly as in bench/overhead.py. ``--clients`` asyncio clients
share one httpx.AsyncClient (one connection each) and, until ``--seconds`` have passed,
send requests drawn from ``--mix``: ``POST /txt2img`` (small: ``--size``, ``--steps``),
``GET /health`` and ``POST /prompt-expand`` (the offline local expander). A client that
gets a 429 or 503 waits ``Retry-After`` (at most ``--max-backoff`` seconds) before its
next request, as a polite client would. Requests in flight when the time is up are
awaited and counted.

Every client comes from 127.0.0.1, so for the server they are one caller: at most
``BILDWERK_MAX_QUEUED_PER_KEY`` (default 4) of their jobs are queued or running at once
and the rest are answered 429 ``too_many_jobs``. The server inherits this process's
environment, so e.g. ``BILDWERK_MAX_QUEUED_PER_KEY=0`` (no per-caller limit; the queue's
own bound, ``BILDWERK_QUEUE_MAX``, then answers 429 ``queue_full``) or
``BILDWERK_RATE_LIMIT`` in front of the command change that.

    .venv/bin/python bench/load.py --clients 64 --seconds 60 \\
        --mix txt2img=6,health=2,prompt-expand=2

Reports requests/s, finished generations/s, p50/p95 latency per route and overall, the
share of 429s, every other non-2xx/503 answer (errors: there must be none), and the
server's resident memory (its process and any children) before and after the run, with
the growth ratio (target < 10 %). Prints a summary and writes JSON to
bench/results/load.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
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

ROUTES = ("txt2img", "health", "prompt-expand")
IDEAS = ("a lighthouse on a cliff at dusk", "ein See mitten in Olpe", "a harbour town in fog",
         "a castle on a hill", "a forest in winter")
GROWTH_TARGET = 0.10
# Server settings that shape the answers under load; recorded when set.
SERVER_LIMIT_ENV = ("BILDWERK_MAX_QUEUED_PER_KEY", "BILDWERK_QUEUE_MAX", "BILDWERK_RATE_LIMIT",
                    "BILDWERK_RETRY_AFTER_S")


@dataclass(slots=True)
class Outcome:
    route: str
    status: int | None  # None: no HTTP answer (timeout, connection error)
    code: str | None  # the error envelope's code, or the exception's name
    latency_s: float


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in ROUTES:
            raise argparse.ArgumentTypeError(f"unknown route {name!r}; use {', '.join(ROUTES)}")
        mix[name] = float(weight or 1)
    if not mix or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the mix needs a positive weight")
    return mix


def server_rss(pid: int) -> int:
    """Resident bytes of the server process and all its children."""
    import psutil

    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def request_for(route: str, rng: random.Random, args) -> tuple[str, str, dict | None]:
    if route == "txt2img":
        return "POST", "/txt2img", {
            "prompt": rng.choice(IDEAS), "width": args.size, "height": args.size,
            "steps": args.steps, "scheduler": args.scheduler, "seed": rng.randrange(2**31)}
    if route == "prompt-expand":
        return "POST", "/prompt-expand", {"idea": rng.choice(IDEAS), "provider": "local",
                                          "count": 1, "seed": rng.randrange(2**31)}
    return "GET", "/health", None


async def send(client: httpx.AsyncClient, route: str, rng: random.Random,
               args) -> tuple[Outcome, float]:
    """One request; returns its outcome and how long the client should wait after it."""
    method, path, body = request_for(route, rng, args)
    t0 = time.perf_counter()
    try:
        r = await client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        return Outcome(route, None, type(exc).__name__, time.perf_counter() - t0), 0.0
    latency = time.perf_counter() - t0
    code = None
    if r.status_code >= 400:
        try:
            code = r.json()["error"]["code"]
        except Exception:
            code = "no_envelope"
    wait = 0.0
    if r.status_code in (429, 503):
        try:
            wait = min(float(r.headers.get("retry-after", 0)), args.max_backoff)
        except ValueError:
            wait = args.max_backoff
    return Outcome(route, r.status_code, code, latency), wait


async def client_loop(index: int, client: httpx.AsyncClient, deadline: float, args,
                      outcomes: list[Outcome]) -> None:
    rng = random.Random(args.seed * 1000 + index)
    routes, weights = zip(*args.mix.items(), strict=True)
    while time.monotonic() < deadline:
        route = rng.choices(routes, weights)[0]
        outcome, wait = await send(client, route, rng, args)
        outcomes.append(outcome)
        if wait:
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))


async def sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(server_rss(pid))
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        except TimeoutError:
            pass


async def run_load(base: str, pid: int, args) -> tuple[list[Outcome], float, list[int]]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.request_timeout)
    outcomes: list[Outcome] = []
    samples: list[int] = []
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(pid, samples, stop))
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        await asyncio.gather(*(client_loop(i, client, deadline, args, outcomes)
                               for i in range(args.clients)))
        elapsed = time.monotonic() - t0
        stop.set()
        await sampler
    return outcomes, elapsed, samples


def summarize(outcomes: list[Outcome], elapsed: float) -> dict:
    by_route: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_route[o.route].append(o)

    def stats(items: list[Outcome]) -> dict:
        lat = [o.latency_s for o in items]
        ok = [o.latency_s for o in items if o.status is not None and 200 <= o.status < 300]
        return {"requests": len(items), "ok": len(ok),
                "statuses": dict(sorted(Counter(str(o.status) for o in items).items())),
                "p50_ms": _ms(percentile(lat, 50)), "p95_ms": _ms(percentile(lat, 95)),
                "ok_p50_ms": _ms(percentile(ok, 50)), "ok_p95_ms": _ms(percentile(ok, 95)),
                "per_s": round(len(items) / elapsed, 2)}

    errors = Counter(f"{o.status or 'no_response'} {o.code}" for o in outcomes
                     if o.status is None or not (200 <= o.status < 300 or o.status in (429, 503)))
    rejected = sum(o.status == 429 for o in outcomes)
    generations = sum(o.route == "txt2img" and o.status == 200 for o in outcomes)
    return {
        "elapsed_s": round(elapsed, 2),
        "requests": len(outcomes),
        "requests_per_s": round(len(outcomes) / elapsed, 2),
        "generations": generations,
        "generations_per_s": round(generations / elapsed, 3),
        "share_429": round(rejected / len(outcomes), 4) if outcomes else 0.0,
        "count_429": rejected,
        "count_503": sum(o.status == 503 for o in outcomes),
        "codes_429": dict(Counter(o.code for o in outcomes if o.status == 429)),
        "errors": sum(errors.values()),
        "errors_by_status_code": dict(errors.most_common()),
        "overall": stats(outcomes),
        "routes": {route: stats(items) for route, items in sorted(by_route.items())},
    }


def warm_up(base: str, args) -> None:
    """Load the model and touch every route once per warmup round, outside the measure."""
    rng = random.Random(args.seed)
    with httpx.Client(base_url=base, timeout=args.request_timeout) as client:
        for _ in range(args.warmup):
            for route in args.mix:
                method, path, body = request_for(route, rng, args)
                client.request(method, path, json=body).raise_for_status()


def still_ready(base: str, timeout: float = 60.0) -> bool:
    """Whether the server answers /ready after the run (every request was synchronous and
    has been answered, so nothing of ours is left in its queue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, ROOT / "bench" / "results" / "load.json")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix(
        "txt2img=6,health=2,prompt-expand=2"), help="route=weight,… of "
        f"{', '.join(ROUTES)} (default txt2img=6,health=2,prompt-expand=2)")
    parser.add_argument("--max-backoff", type=float, default=1.0,
                        help="longest wait after a 429/503 (Retry-After, capped)")
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(size=64, steps=4, warmup=2)  # --runs is not used here
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bildwerk-load-"))
    models_dir = work / "models"
    build_model(args.arch, models_dir / "bench-model")
    proc, base = start_server(models_dir, work / "data", "bench-model", args.threads,
                              args.device)
    try:
        rss_started = server_rss(proc.pid)
        warm_up(base, args)
        rss_before = server_rss(proc.pid)
        outcomes, elapsed, samples = asyncio.run(run_load(base, proc.pid, args))
        ready = still_ready(base)
        rss_after = server_rss(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)

    summary = summarize(outcomes, elapsed)
    growth = (rss_after - rss_before) / rss_before
    memory = {"rss_started_mb": round(rss_started / 2**20, 1),
              "rss_before_mb": round(rss_before / 2**20, 1),
              "rss_peak_mb": round(max(samples, default=rss_after) / 2**20, 1),
              "rss_after_mb": round(rss_after / 2**20, 1),
              "growth_ratio": round(growth, 4), "growth_target": GROWTH_TARGET,
              "growth_ok": growth < GROWTH_TARGET}
    result = {
        "benchmark": "load", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args),
        "params": {"arch": args.arch, "clients": args.clients, "seconds": args.seconds,
                   "mix": args.mix, "size": args.size, "steps": args.steps,
                   "scheduler": args.scheduler, "warmup": args.warmup,
                   "max_backoff_s": args.max_backoff, "seed": args.seed,
                   "server_env": {k: os.environ[k] for k in SERVER_LIMIT_ENV
                                  if k in os.environ}},
        **summary, "memory": memory, "server_ready_after": ready, "server_alive_after": alive,
    }
    write_result(args.out, result)
    print_summary(result, args.out)
    if summary["errors"] or not alive:
        sys.exit(1)


def print_summary(result: dict, out: Path) -> None:
    p, m = result["params"], result["memory"]
    print(f"{p['clients']} clients for {p['seconds']:g} s ({result['elapsed_s']} s with the "
          f"requests in flight), mix {p['mix']}, txt2img {p['size']}x{p['size']} "
          f"{p['steps']} steps")
    print(f"requests {result['requests']}  ({result['requests_per_s']}/s)   generations "
          f"{result['generations']}  ({result['generations_per_s']}/s)")
    print(f"429 {result['count_429']} ({result['share_429']:.1%}) {result['codes_429']}   "
          f"503 {result['count_503']}   errors {result['errors']} "
          f"{result['errors_by_status_code'] or ''}")
    print(f"{'route':<15}{'requests':>9}{'ok':>7}{'p50 ms':>10}{'p95 ms':>10}"
          f"{'ok p50':>10}{'ok p95':>10}  statuses")
    rows = [*result["routes"].items(), ("overall", result["overall"])]
    for name, s in rows:
        print(f"{name:<15}{s['requests']:>9}{s['ok']:>7}{_fmt(s['p50_ms']):>10}"
              f"{_fmt(s['p95_ms']):>10}{_fmt(s['ok_p50_ms']):>10}{_fmt(s['ok_p95_ms']):>10}"
              f"  {s['statuses']}")
    print(f"server RSS: started {m['rss_started_mb']} MB, before {m['rss_before_mb']} MB, "
          f"peak {m['rss_peak_mb']} MB, after {m['rss_after_mb']} MB; growth "
          f"{m['growth_ratio']:+.1%} (target < {m['growth_target']:.0%}: "
          f"{'ok' if m['growth_ok'] else 'NOT MET'})   -> {out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
