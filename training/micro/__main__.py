"""Retrain the micro model end to end, deterministically from ``--seed``.

    python -m training.micro --out app/pipelines/micro/bildwerk-micro \
        [--steps N] [--vae-steps N] [--images N] [--work DIR]

1. the dataset: ``--images`` procedural scenes as an imagefolder (training/micro/shapes.py);
2. the VAE: trained from scratch on scenes drawn on the fly (training/micro/vae.py);
3. the base: our tokenizer + that VAE + a seeded random UNet and text encoder;
4. the UNet and text encoder: trained from scratch by ``training.trainer.train``;
5. the result (weights and configs only) is copied to ``--out``, with ``training.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

VALIDATION_PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a black background",
    "a green triangle on a white background",
]
PIPELINE_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.micro", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where the trained pipeline goes")
    p.add_argument("--work", type=Path, default=Path("data/micro-work"),
                   help="dataset, VAE, base, checkpoints (not shipped)")
    p.add_argument("--images", type=int, default=10000, help="dataset size")
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2400, help="UNet + text encoder steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--checkpointing-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae", type=Path, default=None, help="reuse a trained VAE folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def copy_pipeline(src: Path, dest: Path) -> None:
    """Copy the pipeline's weights and configs (no optimizer state, logs or samples)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in PIPELINE_PARTS:
        source = src / part
        if source.is_dir():
            shutil.copytree(source, tmp / part)
        else:
            shutil.copy2(source, tmp / part)
    keep = [p for p in (dest / "README.md",) if p.exists()]
    for path in keep:
        shutil.copy2(path, tmp / path.name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from training.micro.build import build_base, parameter_counts
    from training.micro.shapes import write_imagefolder
    from training.micro.vae import train_vae

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"seed": args.seed, "images": args.images}
    started = time.monotonic()

    dataset = work / "dataset"
    if not (dataset / "metadata.jsonl").exists() or \
            sum(1 for _ in (dataset / "metadata.jsonl").open()) != args.images:
        shutil.rmtree(dataset, ignore_errors=True)
        print(f"[1/5] dataset: {args.images} scenes -> {dataset}", flush=True)
        write_imagefolder(dataset, args.images, seed=args.seed)

    if args.vae is not None:
        vae_dir = args.vae
        print(f"[2/5] vae: reusing {vae_dir}", flush=True)
    else:
        vae_dir = work / "vae"
        print(f"[2/5] vae: {args.vae_steps} steps -> {vae_dir}", flush=True)
        train_vae(vae_dir, steps=args.vae_steps, seed=args.seed)
    vae_stats = vae_dir / "training.json"
    report["vae"] = json.loads(vae_stats.read_text()) if vae_stats.exists() else None

    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    print(f"[3/5] base -> {base}", flush=True)
    build_base(base, vae_dir, seed=args.seed)

    from training.config import TrainConfig
    from training.trainer import train

    output = work / "trained"
    print(f"[4/5] trainer: {args.steps} steps, batch {args.batch_size} -> {output}", flush=True)
    cfg = TrainConfig(
        method="full", base=base, dataset=dataset, output=output, task="txt2img",
        resolution=64, train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        max_train_steps=args.steps, learning_rate=args.learning_rate, lr_scheduler="cosine",
        lr_warmup_steps=args.warmup, seed=args.seed, train_text_encoder=True,
        checkpointing_steps=args.checkpointing_steps, validation_prompts=VALIDATION_PROMPTS,
        validation_steps=max(args.steps // 4, 1), from_scratch=True, work_dir=work / "runs",
        progress=True)
    result = train(cfg)
    report["unet"] = {"steps": result.steps, "final_loss": result.final_loss,
                      "seconds": round(result.seconds, 1), "batch_size": args.batch_size,
                      "learning_rate": args.learning_rate}

    print(f"[5/5] copy -> {args.out}", flush=True)
    copy_pipeline(Path(result.output), args.out)
    report["parameters"] = parameter_counts(args.out)
    report["size_bytes"] = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["command"] = "python -m training.micro " + " ".join(
        sys.argv[1:] if argv is None else argv)
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
