"""Hostile bodies against a real uvicorn server: what each costs the server in memory, and
whether ``/health`` stays fast meanwhile.

The server runs as its own process on 127.0.0.1 (tiny model, ``BILDWERK_AUTH_MODE=keys``
with one ``generate`` key made by ``bildwerk keys create``). For each case the benchmark
sends one hostile request while a second thread asks ``GET /health`` every 50 ms and a
third samples the server's resident memory every 20 ms. It reports, per case:

- the answer (status and error code) and how long it took;
- the peak RSS growth over the idle server, in MiB and as a multiple of the body size;
- ``/health``: p50 / max latency and the share of answers under 100 ms (a probe that got
  no answer within 2 s counts as slow).

Cases (the findings of the adversarial pass):

``img2seq-packages-2mib``   generate key, /img2seq JSON, ``packages`` = ``[[],[],…]``
``img2seq-zoom-31mib``      generate key, /img2seq JSON, ``motion.zoom`` = ``[[],[],…]``
``txt2img-keyless-31mib``   no key, /txt2img, a 31 MiB JSON list
``txt2img-keyless-brace``   no key, /txt2img, the body ``{`` (the answer must be 401)
``img2seq-deep-multipart``  generate key, multipart ``motion`` = 1,100 × ``[``
``slow-bodies``             ``--slow`` connections that each send one byte a second; how
                            many the server still holds after ``--slow-wait`` seconds

A server whose RSS passes ``--rss-cap-mib`` is killed (reported ``killed``) so that the
benchmark never takes the machine down. ``--source DIR`` runs the server from another
checkout (e.g. a ``git worktree`` of an older commit) for a before/after comparison.

    .venv/bin/python bench/hostile.py                     # this checkout
    .venv/bin/python bench/hostile.py --source /tmp/old --label before

Prints a table and writes JSON to bench/results/hostile.json (or --out); ``--label``
names the run inside that file, so before and after sit side by side.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import build_model, free_port  # noqa: E402

MIB = 2**20
HEALTH_EVERY_S = 0.05
HEALTH_FAST_S = 0.1


def png_b64(size: int = 64) -> str:
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (90, 120, 150)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def nested_list_json(total_bytes: int) -> bytes:
    """``[[],[],…]`` of about ``total_bytes``."""
    return b"[" + b",".join([b"[]"] * (total_bytes // 3)) + b"]"


def img2seq_body(field: str, size: int) -> bytes:
    head = json.dumps({"prompt": "a harbour", "image": png_b64(), "frames": 2}).encode()[:-1]
    hostile = nested_list_json(size)
    if field == "packages":
        return head + b', "packages": ' + hostile + b"}"
    return head + b', "motion": {"zoom": ' + hostile + b"}}"


class Sampler:
    """RSS of the server process tree and /health latency, in background threads."""

    def __init__(self, proc: psutil.Process, base: str, rss_cap: int) -> None:
        self.proc, self.base, self.rss_cap = proc, base, rss_cap
        self.peak_rss = 0
        self.latencies: list[float] = []
        self.killed = False
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss, daemon=True),
                         threading.Thread(target=self._health, daemon=True)]

    def rss(self) -> int:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def _rss(self) -> None:
        while not self._stop.is_set():
            now = self.rss()
            self.peak_rss = max(self.peak_rss, now)
            if now > self.rss_cap:
                self.killed = True
                self.proc.kill()
                return
            time.sleep(0.02)

    def _health(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    client.get(f"{self.base}/health")
                    self.latencies.append(time.perf_counter() - start)
                except httpx.HTTPError:
                    self.latencies.append(float("inf"))
                time.sleep(HEALTH_EVERY_S)

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


def health_summary(latencies: list[float]) -> dict:
    if not latencies:
        return {"probes": 0}
    ordered = sorted(latencies)
    finite = [v for v in ordered if v != float("inf")]
    return {"probes": len(ordered),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1)
            if ordered[len(ordered) // 2] != float("inf") else None,
            "max_ms": round(max(finite) * 1000, 1) if finite else None,
            "unanswered": len(ordered) - len(finite),
            "under_100ms": round(sum(v < HEALTH_FAST_S for v in ordered) / len(ordered), 3)}


def envelope_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except Exception:  # noqa: BLE001 - not an error envelope
        return None


def run_case(name: str, server: Server, send, body_bytes: int) -> dict:
    idle = server.sampler_rss()
    with Sampler(server.proc, server.base, server.rss_cap) as sampler:
        time.sleep(0.3)  # a few probes before the hostile request
        start = time.perf_counter()
        try:
            response = send()
            answer = {"status": response.status_code, "code": envelope_code(response)}
        except httpx.HTTPError as exc:
            answer = {"status": None, "code": type(exc).__name__}
        answer["seconds"] = round(time.perf_counter() - start, 2)
        time.sleep(0.3)
    growth = max(0, sampler.peak_rss - idle)
    result = {"case": name, "body_mib": round(body_bytes / MIB, 2), **answer,
              "rss_idle_mib": round(idle / MIB), "rss_growth_mib": round(growth / MIB),
              "growth_x_body": round(growth / body_bytes, 2) if body_bytes else None,
              "killed": sampler.killed, "health": health_summary(sampler.latencies)}
    print(f"{name:26s} {body_bytes / MIB:6.2f} MiB -> {answer['status']} {answer['code']} "
          f"in {answer['seconds']} s; RSS +{growth / MIB:.0f} MiB "
          f"({result['growth_x_body']}x body){' KILLED' if sampler.killed else ''}; /health "
          f"p50 {result['health'].get('p50_ms')} ms, max {result['health'].get('max_ms')} ms, "
          f"{result['health'].get('under_100ms', 0):.0%} under 100 ms", flush=True)
    return result


class Server:
    def __init__(self, source: Path, work: Path, rss_cap: int, body_timeout_s: float) -> None:
        self.source, self.work, self.rss_cap = source, work, rss_cap
        self.models = build_model("tiny", work / "models" / "tiny")
        self.env = {**os.environ, "BILDWERK_DATA_DIR": str(work / "data"),
                    "BILDWERK_MODELS_DIR": str(work / "models"),
                    "BILDWERK_DEFAULT_MODEL": "tiny", "BILDWERK_DEVICE": "cpu",
                    "BILDWERK_TORCH_THREADS": "1", "BILDWERK_AUTH_MODE": "keys",
                    "BILDWERK_BODY_TIMEOUT_S": str(body_timeout_s), "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(source)}
        self.key = self._create_key()
        self.proc: psutil.Process | None = None
        self.base = ""

    def _create_key(self) -> str:
        out = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "bench",
                              "--scope", "generate"], cwd=self.source, env=self.env,
                             capture_output=True, text=True, check=True).stdout
        return next(word for word in out.split() if word.startswith("bw_"))

    def start(self) -> None:
        port = free_port()
        popen = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port),
             "--log-level", "warning"], cwd=self.source, env=self.env)
        self.proc = psutil.Process(popen.pid)
        self.popen = popen
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()

    def sampler_rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)


def slow_bodies(server: Server, count: int, wait_s: float) -> dict:
    """``count`` connections that announce a 1 MiB body and send one byte a second."""
    host, port = server.base.removeprefix("http://").split(":")
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"POST /txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + server.key.encode() +
                     b"\r\nContent-Length: 1048576\r\n\r\n{")
        socks.append(sock)
    health = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for sock in socks:
            try:
                sock.send(b" ")
            except OSError:
                pass
        start = time.perf_counter()
        try:
            httpx.get(f"{server.base}/health", timeout=2)
            health.append(time.perf_counter() - start)
        except httpx.HTTPError:
            health.append(float("inf"))
        time.sleep(1)
    held = 0
    for sock in socks:
        try:
            sock.setblocking(False)
            sock.recv(65536)  # an answer or b"" (closed): the server let go
        except BlockingIOError:
            held += 1  # nothing answered and not closed: still held
        except OSError:
            pass
        finally:
            sock.close()
    result = {"case": "slow-bodies", "connections": count, "after_s": wait_s,
              "still_held": held, "health": health_summary(health)}
    print(f"{'slow-bodies':26s} {count} connections, after {wait_s:.0f} s: {held} still held; "
          f"/health max {result['health'].get('max_ms')} ms", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="Checkout to run the server from (default: this one).")
    parser.add_argument("--label", default="after", help="Name of this run in the JSON.")
    parser.add_argument("--big-mib", type=float, default=31.0)
    parser.add_argument("--rss-cap-mib", type=int, default=6144)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--slow-wait", type=float, default=20.0)
    parser.add_argument("--body-timeout", type=float, default=10.0,
                        help="BILDWERK_BODY_TIMEOUT_S for the server (ignored by code "
                        "without a body timeout).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile.json")
    args = parser.parse_args()
    big = int(args.big_mib * MIB)

    with tempfile.TemporaryDirectory(prefix="bildwerk-hostile-") as tmp:
        server = Server(args.source.resolve(), Path(tmp), args.rss_cap_mib * MIB,
                        args.body_timeout)
        auth = {"Authorization": f"Bearer {server.key}"}
        json_type = {"content-type": "application/json"}
        cases = [
            ("img2seq-packages-2mib", img2seq_body("packages", 2 * MIB), auth, "/img2seq"),
            ("img2seq-zoom-31mib", img2seq_body("zoom", big), auth, "/img2seq"),
            ("txt2img-keyless-31mib", nested_list_json(big), {}, "/txt2img"),
            ("txt2img-keyless-brace", b"{", {}, "/txt2img"),
        ]
        results = []
        server.start()
        try:
            for name, body, headers, path in cases:
                if not server.alive():
                    server.start()

                def send(body=body, headers=headers, path=path):
                    return httpx.post(f"{server.base}{path}", content=body,
                                      headers={**json_type, **headers}, timeout=120)

                results.append(run_case(name, server, send, len(body)))
            if not server.alive():
                server.start()
            deep = "[" * 1100

            def send_deep():
                return httpx.post(f"{server.base}/img2seq", headers=auth, timeout=60,
                                  data={"prompt": "x", "motion": deep, "frames": "2"},
                                  files={"image": ("a.png", io.BytesIO(
                                      __import__("base64").b64decode(png_b64())),
                                      "image/png")})

            results.append(run_case("img2seq-deep-multipart", server, send_deep, len(deep)))
            if not server.alive():
                server.start()
            results.append(slow_bodies(server, args.slow, args.slow_wait))
        finally:
            server.stop()

    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = runs if isinstance(runs, dict) and "runs" in runs else {"runs": {}}
    runs["runs"][args.label] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                                "source": str(args.source), "cases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=2))
    print(f"wrote {args.out} ({args.label})")


if __name__ == "__main__":
    main()
