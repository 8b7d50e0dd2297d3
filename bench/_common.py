"""Shared benchmark helpers: model builders and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(arch: str, dest: Path) -> Path:
    """``micro``: the embedded default model (bildwerk-micro, trained). ``tiny``: the random
    tiny SD1.5 the tests use. ``sd15``: the full SD1.5 architecture (860M-parameter UNet)
    from the shipped configs, with seeded random weights."""
    from app.pipelines.embedded import build_tiny_sd15, install_micro

    if arch == "micro":
        return install_micro(dest)
    if arch == "tiny":
        return build_tiny_sd15(dest)
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from app.pipelines.families import FAMILIES

    cfg = FAMILIES["sd15"].config_dir()
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(cfg / "tokenizer"),
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")),
        scheduler=PNDMScheduler.from_config(PNDMScheduler.load_config(cfg / "scheduler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(dest, safe_serialization=True)
    return dest


def worker_model(args):
    """The bench model (``args.arch``) built in a temporary folder and loaded exactly as the
    server's worker loads it: the registry with the server's fast path for these settings
    and the thread count the server chooses for it (``args.threads`` when given; it is set
    to that count). Returns ``(work folder, models folder, loaded model, runtime)``."""
    import tempfile

    import torch

    from app.config import Settings
    from app.pipelines.device import resolve_runtime
    from app.pipelines.fast_path import FastPath, choose_threads, usable_cores
    from app.pipelines.registry import ModelRegistry

    work = Path(tempfile.mkdtemp(prefix="bildwerk-bench-"))
    models_dir = work / "models"
    model_dir = build_model(args.arch, models_dir / "bench-model")
    runtime = resolve_runtime(args.device)
    if args.threads is None:  # what the server chooses for one image of this model
        size = sum(f.stat().st_size for f in model_dir.rglob("*.safetensors"))
        args.threads = choose_threads(size, usable_cores())
    torch.set_num_threads(args.threads)
    settings = Settings(_env_file=None, data_dir=work / "raw-data", models_dir=models_dir,
                        device=args.device, torch_threads=args.threads)
    registry = ModelRegistry(models_dir, work / "none", "none", runtime,
                             fast_path=FastPath.from_settings(settings, runtime))
    registry.refresh()
    return work, models_dir, registry.load("bench-model"), runtime


def start_server(models_dir: Path, data_dir: Path, model_id: str, threads: int,
                  device: str, env: dict | None = None, serve: bool = False):
    """A uvicorn server on 127.0.0.1 serving ``model_id``; ``env``: more settings;
    ``serve``: started as ``bildwerk serve`` (which honours BILDWERK_WORKERS)."""
    port = free_port()
    env = {**os.environ, "BILDWERK_DATA_DIR": str(data_dir),
           "BILDWERK_MODELS_DIR": str(models_dir), "BILDWERK_DEFAULT_MODEL": model_id,
           "BILDWERK_DEVICE": device, "BILDWERK_TORCH_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", **(env or {})}
    command = (["-m", "app.cli", "serve"] if serve else ["-m", "uvicorn", "app.main:app"])
    proc = subprocess.Popen([sys.executable, *command, "--port", str(port), "--log-level",
                             "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def add_common_args(parser, default_out: Path) -> None:
    """Arguments every benchmark takes."""
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", default="euler_a")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--arch", default="tiny", choices=["micro", "tiny", "sd15"])
    parser.add_argument("--out", type=Path, default=default_out)


def machine_info(args) -> dict:
    import platform

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "threads": args.threads, "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}


def write_result(path: Path, result: dict) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))

