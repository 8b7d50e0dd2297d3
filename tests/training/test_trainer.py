"""The trainers on the tiny SD1.5-shaped test models (random weights, 64 px): LoRA, full
fine-tune, inpaint, gradient accumulation, exact resume, validation images, registration,
and the configuration errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from training.config import TrainConfig
from training.register import register_output
from training.trainer import train

FAST = dict(resolution=64, progress=False, learning_rate=1e-2)


def make_dataset(folder: Path, n: int = 4, *, masks: bool = False, fmt: str = "jsonl",
                 size: tuple[int, int] = (80, 64)) -> Path:
    """``n`` seeded noise-and-gradient PNGs (wider than tall, so crops matter) with
    captions in the imagefolder layout; ``masks``: a ``mask_file_name`` column."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        w, h = size
        pixels = rng.integers(0, 255, (h, w, 3)).astype(np.float32) * 0.5
        pixels[..., i % 3] += np.linspace(0, 127, w)[None, :]
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
        row = {"file_name": f"img{i}.png", "text": f"a pattern number {i % 2}"}
        if masks:
            mask = np.zeros((h, w), np.uint8)
            mask[8 + i:40, 10:50 - i] = 255
            (folder / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask).save(folder / "masks" / f"img{i}.png")
            row["mask_file_name"] = f"masks/img{i}.png"
        rows.append(row)
    if fmt == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        import csv

        with (folder / "metadata.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "set")


@pytest.fixture(scope="module")
def base(models_dir) -> Path:
    return models_dir / "tiny-sd15"


@pytest.fixture(scope="module")
def inpaint_base(models_dir) -> Path:
    return models_dir / "tiny-sd15-inpaint"


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def outputs(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's and the UNet's outputs for fixed inputs."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    ids = pipe.tokenizer(["a pattern number 1"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids)[0]
        return hidden, pipe.unet(x, torch.tensor([500]), hidden).sample


def test_lora_trains_logs_validates_and_loads_into_the_pipeline(base, dataset, tmp_path):
    from diffusers import StableDiffusionPipeline

    from app.pipelines.lora_files import probe_lora

    seen: list[dict] = []
    out = tmp_path / "out" / "my-style.safetensors"
    result = train(TrainConfig(
        method="lora", base=base, dataset=dataset, output=out, max_train_steps=4,
        train_batch_size=2, rank=4, lora_alpha=8, train_text_encoder=True,
        validation_prompts=["a pattern", "another pattern"], validation_steps=2,
        validation_inference_steps=2, **FAST), on_step=seen.append)

    assert result.output == out and out.is_file() and result.steps == 4
    assert math.isfinite(result.final_loss)
    entry = probe_lora(out)
    assert entry.format == "diffusers" and entry.rank == 4
    assert entry.targets == ("unet", "text_encoder")

    log = read_log(result.log_path)
    assert result.log_path == tmp_path / "out" / "my-style.safetensors.work" / "train_log.jsonl"
    assert log == json.loads(json.dumps(seen))  # on_step saw exactly what was logged
    assert log[0]["event"] == "start" and log[0]["config"]["method"] == "lora"
    assert log[-1]["event"] == "done" and log[-1]["steps"] == 4
    steps = [e for e in log if "event" not in e]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    for e in steps:
        assert {"step", "epoch", "loss", "lr", "seconds", "images_per_s"} <= set(e)
        assert math.isfinite(e["loss"]) and e["lr"] == pytest.approx(1e-2)
    assert steps[-1]["images"] == 8 and steps[-1]["epoch"] == 1  # 4 images, 2 per batch

    assert result.validation_dir == result.log_path.parent / "validation" / "step-4"
    for step in (2, 4):
        for i in range(2):
            with Image.open(result.log_path.parent / "validation" / f"step-{step}" / f"{i}.png") \
                    as img:
                assert img.size == (64, 64)

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None,
                                                   requires_safety_checker=False)
    text_before, before = outputs(pipe)
    pipe.load_lora_weights(str(out), adapter_name="trained")
    text_after, after = outputs(pipe)
    assert torch.isfinite(after).all()
    assert (text_after - text_before).abs().max() > 1e-4  # the text-encoder LoRA loaded too
    pipe.disable_lora()
    assert torch.equal(outputs(pipe)[1], before)
    pipe.enable_lora()
    pipe.unet.disable_lora()  # the UNet adapter alone changes the UNet's output
    hidden_only = outputs(pipe)[1]
    assert (after - hidden_only).abs().max() > 1e-4


def test_full_finetune_writes_a_folder_the_registry_loads(base, dataset, tmp_path,
                                                          embedded_template):
    from diffusers import StableDiffusionPipeline

    from app.pipelines.device import resolve_runtime
    from app.pipelines.registry import ModelRegistry, load_pipeline

    out = tmp_path / "runs" / "tuned"
    result = train(TrainConfig(method="full", base=base, dataset=dataset, output=out,
                               max_train_steps=2, train_text_encoder=True, from_scratch=True,
                               **{**FAST, "learning_rate": 1e-3}))
    assert result.steps == 2 and (out / "model_index.json").is_file()
    assert not (out / "bildwerk_embedded.json").exists()
    assert list((out / "unet").glob("*.safetensors"))
    assert read_log(result.log_path)[0]["from_scratch"] is True

    tuned = StableDiffusionPipeline.from_pretrained(out, safety_checker=None,
                                                    requires_safety_checker=False)
    original = StableDiffusionPipeline.from_pretrained(base, safety_checker=None,
                                                       requires_safety_checker=False)
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in  # noqa: E731
                               zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert changed(tuned.unet, original.unet)
    assert changed(tuned.text_encoder, original.text_encoder)
    assert not changed(tuned.vae, original.vae)

    models = tmp_path / "models"
    dest = register_output(result, models, "full", name="tuned-sd15")
    assert dest == models / "tuned-sd15"
    with pytest.raises(FileExistsError):
        register_output(result, models, "full", name="tuned-sd15")
    registry = ModelRegistry(models, embedded_template, "bildwerk-tiny", resolve_runtime("cpu"))
    registry.refresh()
    entry = registry.resolve("tuned-sd15")
    assert (entry.family, entry.variant, entry.format) == ("sd15", "base", "diffusers")
    assert load_pipeline(entry, registry.runtime).unet.config.in_channels == 4


@pytest.mark.parametrize("method, masks", [("lora", False), ("full", True)])
def test_inpaint_on_the_9_channel_model(inpaint_base, tmp_path, method, masks):
    data = make_dataset(tmp_path / "ds", n=3, masks=masks, fmt="csv")
    out = tmp_path / ("inpaint.safetensors" if method == "lora" else "inpaint")
    result = train(TrainConfig(method=method, task="inpaint", base=inpaint_base, dataset=data,
                               output=out, max_train_steps=2, train_batch_size=2,
                               validation_prompts=["fill"],
                               validation_inference_steps=2, **FAST))
    assert result.steps == 2 and math.isfinite(result.final_loss)
    assert out.exists()
    start = read_log(result.log_path)[0]
    assert start["cached_latents"] is masks  # random masks: encoded per step
    with Image.open(result.validation_dir / "0.png") as img:
        assert img.size == (64, 64)


def test_gradient_accumulation_and_checkpoint_limit(base, dataset, tmp_path):
    result = train(TrainConfig(method="lora", base=base, dataset=dataset,
                               output=tmp_path / "acc.safetensors", max_train_steps=2,
                               gradient_accumulation_steps=2, checkpointing_steps=1,
                               checkpoints_total_limit=1, center_crop=False, random_flip=True,
                               **FAST))
    log = read_log(result.log_path)
    steps = [e for e in log if "event" not in e]
    assert result.steps == 2 and [e["step"] for e in steps] == [1, 2]
    assert [e["images"] for e in steps] == [2, 4]  # 2 optimizer steps consumed 4 batches
    assert log[-1]["images"] == 4
    assert log[0]["cached_latents"] is False  # random crops: encoded per step
    checkpoints = sorted(p.name for p in (result.log_path.parent / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2"]


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights(base, tmp_path):
    # 3 images in batches of 2: epochs of 2 batches, the second one short, random flips.
    data = make_dataset(tmp_path / "ds", n=3)
    common = dict(method="lora", base=base, dataset=data, max_train_steps=4,
                  train_batch_size=2, train_text_encoder=True, random_flip=True,
                  lr_scheduler="linear", lr_warmup_steps=1, snr_gamma=5.0, noise_offset=0.05,
                  **FAST)
    whole = train(TrainConfig(output=tmp_path / "a" / "whole.safetensors",
                              checkpointing_steps=2, **common))
    checkpoint = whole.log_path.parent / "checkpoints" / "checkpoint-2"
    assert (whole.log_path.parent / "checkpoints" / "checkpoint-4").is_dir()

    resumed = train(TrainConfig(output=tmp_path / "b" / "resumed.safetensors",
                                resume_from_checkpoint=str(checkpoint), **common))
    log = read_log(resumed.log_path)
    assert log[0]["resumed_from"] == str(checkpoint) and log[0]["global_step"] == 2
    assert [e["step"] for e in log if "event" not in e] == [3, 4]

    a, b = load_file(whole.output), load_file(resumed.output)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert resumed.final_loss == pytest.approx(whole.final_loss, abs=1e-6)

    # "latest" in the finished run's work dir: nothing left to do, same weights again.
    again = train(TrainConfig(output=tmp_path / "c.safetensors", work_dir=whole.log_path.parent,
                              resume_from_checkpoint="latest", **common))
    assert again.steps == 4
    c = load_file(again.output)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_configuration_errors_are_clear(base, dataset, tmp_path):
    with pytest.raises(ValueError, match="9-channel"):
        train(TrainConfig(method="lora", task="inpaint", base=base, dataset=dataset,
                          output=tmp_path / "x.safetensors", max_train_steps=1, **FAST))
    with pytest.raises(ValueError, match=".safetensors"):
        train(TrainConfig(method="lora", base=base, dataset=dataset, output=tmp_path / "x",
                          **FAST))
    with pytest.raises(ValueError, match="metadata"):
        train(TrainConfig(method="lora", base=base, dataset=tmp_path,
                          output=tmp_path / "x.safetensors", **FAST))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            train(TrainConfig(method="lora", base=base, dataset=dataset,
                              output=tmp_path / "x.safetensors", mixed_precision="fp16", **FAST))


def test_the_cli_trains_and_registers_and_refuses_a_taken_name_up_front(base, dataset,
                                                                      tmp_path):
    from typer.testing import CliRunner

    from app.cli import cli

    models = tmp_path / "models"
    args = ["train", "lora", "--base", str(base), "--dataset", str(dataset), "--name",
            "cli-lora", "--steps", "2", "--rank", "2", "--resolution", "64", "--lr", "1e-3",
            "--output", str(tmp_path / "runs" / "cli-lora.safetensors"), "--no-progress",
            "--models-dir", str(models), "--checkpointing-steps", "1"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "registered LoRA 'cli-lora'" in first.output
    assert (models / "loras" / "cli-lora.safetensors").is_file()

    again = CliRunner().invoke(cli, [*args, "--resume-from-checkpoint", "latest"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert "trained" not in again.output  # refused before training
