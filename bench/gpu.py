"""The prepared GPU benchmark (run it through bench/gpu.sh on a lent H100/H200).

Full-size architectures with random weights (fp16), built on the GPU from the shipped
configs, one run, every figure side by side:

| case | shape | steps |
| --- | --- | --- |
| ``sd15`` | SD1.5 txt2img 512² | 50 |
| ``sdxl`` | SDXL txt2img 1024² | 30 |
| ``kiosk_inpaint`` | SD2 inpaint (9-channel UNet) 768², ``inpaint_area: masked`` | 30 |

Each case runs as raw diffusers (the same pipeline call, in this process), as Bildwerk
with its defaults, and as Bildwerk's fast path (``BILDWERK_CHANNELS_LAST=on`` and
``BILDWERK_COMPILE=default``), both over HTTP against a real server. Then, on SD1.5: 8
concurrent clients (images/s; batched, the default: up to 8 compatible jobs per pipeline
call, each response's ``timings.batch_images`` says how many), the cancel latency
(DELETE to ``cancelled``), and the GPU memory before and after an induced out-of-memory
error (``bildwerk_gpu_memory_bytes``).

Targets (H100-class): SDXL 1024²/30 <= 1.5 s, SD1.5 512²/50 <= 0.5 s, kiosk inpaint p50
<= 1.0 s. Writes bench/results/gpu.json. ``--tiny --device cpu`` runs the same steps on
the tiny models, to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
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

CASES = {
    "sd15": {"family": "sd15", "inpaint": False, "size": 512, "steps": 50, "target_s": 0.5},
    "sdxl": {"family": "sdxl", "inpaint": False, "size": 1024, "steps": 30, "target_s": 1.5},
    "kiosk_inpaint": {"family": "sd21", "inpaint": True, "size": 768, "steps": 30,
                      "target_s": 1.0},
}
PROMPT = "a satellite map of a small harbour town, summer"


def build(case: str, spec: dict, dest: Path, device: str, tiny: bool) -> Path:
    """A checkpoint of the case's architecture with seeded random weights, in fp16."""
    import torch

    if tiny:
        from app.pipelines.embedded import build_tiny_sd15

        return build_tiny_sd15(dest, inpaint=spec["inpaint"])
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from app.pipelines.families import FAMILIES

    family = FAMILIES[spec["family"]]
    cfg = family.config_dir()
    torch.manual_seed(0)
    with torch.device(device):
        unet_config = UNet2DConditionModel.load_config(cfg / "unet")
        if spec["inpaint"]:
            unet_config = {**unet_config, "in_channels": 9}
        parts = {"unet": UNet2DConditionModel.from_config(unet_config),
                 "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")),
                 "text_encoder": CLIPTextModel(
                     CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
                 "tokenizer": CLIPTokenizer.from_pretrained(cfg / "tokenizer")}
        if (cfg / "text_encoder_2").is_dir():
            parts["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(cfg / "text_encoder_2"))
            parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(cfg / "tokenizer_2")
    cls = family.pipeline_classes["inpaint" if spec["inpaint"] else "txt2img"]
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(
        EulerDiscreteScheduler.load_config(cfg / "scheduler"))
    extra = {"safety_checker": None, "feature_extractor": None,
             "requires_safety_checker": False} if family.name != "sdxl" else {}
    pipe = cls(scheduler=scheduler, **parts, **extra)
    pipe.to(torch.float16).save_pretrained(dest, safe_serialization=True)
    return dest


def inputs(size: int) -> tuple[str, str]:
    """The kiosk's image (a smooth map-like scene) and mask (a painted blob), as base64."""
    import numpy as np
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([60 + 120 * x, 110 + 80 * y, 70 + 60 * (1 - x * y)], -1).astype(np.uint8)
    image, mask = Image.fromarray(rgb), Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((size // 3, size // 3, size // 2, size // 2), fill=255)

    def b64(img) -> str:
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    return b64(image), b64(mask)


def body(case: str, spec: dict, size: int, steps: int, seed: int) -> dict:
    data = {"prompt": PROMPT, "model": case, "steps": steps, "seed": seed,
            "width": size, "height": size}
    if spec["inpaint"]:
        image, mask = inputs(size)
        data.update(image=image, mask=mask, inpaint_area="masked", strength=1.0)
    return data


def raw(case: str, spec: dict, folder: Path, size: int, steps: int, runs: int,
        device: str) -> dict:
    """The same pipeline call, in this process (fp16 on CUDA)."""
    import torch
    from PIL import Image

    from app.pipelines.families import FAMILIES

    family = FAMILIES[spec["family"]]
    cls = family.pipeline_classes["inpaint" if spec["inpaint"] else "txt2img"]
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = cls.from_pretrained(folder, local_files_only=True, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"prompt": PROMPT, "num_inference_steps": steps, "width": size, "height": size}
    if spec["inpaint"]:
        image, mask = inputs(size)
        kwargs.update(image=Image.open(io.BytesIO(base64.b64decode(image))),
                      mask_image=Image.open(io.BytesIO(base64.b64decode(mask))), strength=1.0)
    times = []
    for i in range(runs + 1):
        generator = torch.Generator("cpu").manual_seed(i)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pipe(generator=generator, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - started)
    del pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return summary(times)


def summary(times: list[float]) -> dict:
    times = sorted(times)
    return {"runs": len(times), "p50_s": round(statistics.median(times), 4),
            "p95_s": round(times[min(len(times) - 1, int(0.95 * len(times)))], 4),
            "min_s": round(times[0], 4)}


class Server:
    def __init__(self, models: Path, data: Path, device: str, env: dict[str, str],
                 log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "BILDWERK_MODELS_DIR": str(models), "BILDWERK_DATA_DIR": str(data),
                "BILDWERK_DEVICE": device, "BILDWERK_MAX_STEPS": "1000",
                "BILDWERK_MAX_QUEUED_PER_KEY": "0", "BILDWERK_SYNC_TIMEOUT_S": "600",
                "BILDWERK_MAX_WIDTH": "2048", "BILDWERK_MAX_PIXELS": str(2048 * 2048),
                "BILDWERK_MAX_IMAGES": "64",
                "BILDWERK_LOG_FORMAT": "json", "HF_HUB_OFFLINE": "1", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port),
             "--log-level", "warning"], cwd=ROOT, env=full, stdout=log.open("ab"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {log}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready; see {log}")

    def post(self, path: str, data: dict, **kw) -> httpx.Response:
        r = httpx.post(self.base + path, json=data, timeout=900, **kw)
        return r

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def over_http(server: Server, case: str, spec: dict, size: int, steps: int,
              runs: int) -> dict:
    path = "/inpaint" if spec["inpaint"] else "/txt2img"
    times = []
    for i in range(runs + 1):  # the first loads (and compiles) the model
        started = time.perf_counter()
        r = server.post(path, body(case, spec, size, steps, i))
        r.raise_for_status()
        if i:
            times.append(time.perf_counter() - started)
    out = summary(times)
    out["optimizations"] = httpx.get(f"{server.base}/models/{case}").json().get("optimizations")
    return out


async def _clients(server: Server, case: str, spec: dict, size: int, steps: int,
                   clients: int, jobs: int) -> dict:
    path = "/inpaint" if spec["inpaint"] else "/txt2img"
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            started = time.perf_counter()
            r = await http.post(server.base + path, json=body(case, spec, size, steps, i))
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            batched.append(r.json()["timings"].get("batch_images", 1))

    batched: list[int] = []
    async with httpx.AsyncClient(timeout=900) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"clients": clients, "jobs": jobs, "images_per_s": round(jobs / elapsed, 3),
            "mean_batch_images": round(sum(batched) / len(batched), 2), **summary(latencies)}


def cancel_latency(server: Server, case: str, spec: dict, size: int) -> dict:
    r = server.post("/txt2img", {**body(case, {**spec, "inpaint": False}, size, 1000, 1)},
                    headers={"Prefer": "respond-async"})
    job_id = r.json()["job_id"]
    while httpx.get(f"{server.base}/jobs/{job_id}").json()["progress"]["step"] < 5:
        time.sleep(0.01)
    started = time.perf_counter()
    httpx.delete(f"{server.base}/jobs/{job_id}")
    while httpx.get(f"{server.base}/jobs/{job_id}").json()["status"] != "cancelled":
        time.sleep(0.005)
    return {"cancel_to_cancelled_s": round(time.perf_counter() - started, 4)}


def gpu_memory(server: Server) -> int | None:
    for line in httpx.get(f"{server.base}/metrics").text.splitlines():
        if line.startswith("bildwerk_gpu_memory_bytes{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def oom(server: Server, case: str, size: int) -> dict:
    before = gpu_memory(server)
    r = server.post("/txt2img", {"prompt": PROMPT, "model": case, "steps": 2, "seed": 1,
                                 "width": 2048, "height": 2048, "num_images": 64})
    after = gpu_memory(server)
    again = server.post("/txt2img", {"prompt": PROMPT, "model": case, "steps": 2, "seed": 1,
                                     "width": size, "height": size})
    return {"status": r.status_code, "code": r.json().get("error", {}).get("code"),
            "allocated_before": before, "allocated_after": after,
            "next_job_status": again.status_code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="the tiny models (a check of "
                        "the script itself, e.g. on the CPU)")
    parser.add_argument("--size", type=int, help="override every case's size")
    parser.add_argument("--steps", type=int, help="override every case's steps")
    parser.add_argument("--compile", default="default", choices=["off", "default",
                                                                 "max-autotune"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args()
    cases = {name: CASES[name] for name in args.cases.split(",")}
    if args.tiny:  # every case on the tiny SD1.5 architecture (inpaint: its 9-channel one)
        cases = {name: {**spec, "family": "sd15"} for name, spec in cases.items()}
    work = Path(tempfile.mkdtemp(prefix="bildwerk-gpu-"))
    models, log = work / "models", work / "servers.log"
    started_at = time.perf_counter()
    result: dict = {"bench": "gpu", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "device": args.device, "tiny": args.tiny, "cases": {}, "extra": {}}
    if args.device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name()
    for name, spec in cases.items():
        t = time.perf_counter()
        build(name, spec, models / name, args.device, args.tiny)
        print(f"built {name} in {time.perf_counter() - t:.0f}s", flush=True)
    sizes = {n: args.size or s["size"] for n, s in cases.items()}
    steps = {n: args.steps or s["steps"] for n, s in cases.items()}
    for name, spec in cases.items():
        result["cases"][name] = {"size": sizes[name], "steps": steps[name],
                                 "target_p50_s": spec["target_s"],
                                 "raw": raw(name, spec, models / name, sizes[name],
                                            steps[name], args.runs, args.device)}
        print(f"{name} raw: {result['cases'][name]['raw']}", flush=True)
    variants = {"bildwerk_default": {},
                "bildwerk_fast": {"BILDWERK_CHANNELS_LAST": "on",
                                  "BILDWERK_COMPILE": args.compile}}
    for variant, env in variants.items():
        server = Server(models, work / f"data-{variant}", args.device, env, log)
        try:
            for name, spec in cases.items():
                result["cases"][name][variant] = over_http(server, name, spec, sizes[name],
                                                           steps[name], args.runs)
                print(f"{name} {variant}: {result['cases'][name][variant]}", flush=True)
            if variant == "bildwerk_default":
                first = next(iter(cases))
                result["extra"]["throughput_8_clients"] = asyncio.run(_clients(
                    server, first, cases[first], sizes[first], steps[first], 8, 16))
                result["extra"]["cancel"] = cancel_latency(server, first, cases[first],
                                                           sizes[first])
                if args.device == "cuda":
                    result["extra"]["oom"] = oom(server, first, sizes[first])
                print(f"extra: {result['extra']}", flush=True)
        finally:
            server.stop()
    for case in result["cases"].values():
        case["meets_target"] = min(case[v]["p50_s"] for v in variants) <= case["target_p50_s"]
    result["total_s"] = round(time.perf_counter() - started_at, 1)
    write_result(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
