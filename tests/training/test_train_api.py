"""End to end through the HTTP API: generate records, export them as a dataset, train a
LoRA on it, register it, refresh the running server, and generate with it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.utils.images import decode, pixels
from training.config import TrainConfig
from training.dataset import export_records
from training.register import register_output
from training.trainer import train

FAST = {"steps": 3, "width": 64, "height": 64, "seed": 5}


def image(client, **changes) -> np.ndarray:
    r = client.post("/txt2img", json={**FAST, **changes})
    assert r.status_code == 200, r.text
    return pixels(decode(client.get(r.json()["images"][0]["url"]).content)).astype(int)


# The database is not what this test is about: SQLite only, to stay well under a minute.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_records_to_dataset_to_lora_to_generation(make_client, models_dir, tmp_path):
    own = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-sd15", own / "tiny-sd15")
    client = make_client(models_dir=own)
    settings = client.app.state.settings

    for i, prompt in enumerate(["a red lighthouse", "a blue harbour", "a green hill"]):
        r = client.post("/txt2img", json={**FAST, "prompt": prompt, "seed": 100 + i})
        assert r.status_code == 200, r.text

    exported = export_records(settings.resolved_database_url, settings.blobs_dir,
                              tmp_path / "dataset", endpoint="txt2img")
    assert exported.count == 3

    result = train(TrainConfig(
        method="lora", base=own / "tiny-sd15", dataset=exported.out,
        output=tmp_path / "runs" / "harbour-style.safetensors", resolution=64,
        max_train_steps=4, learning_rate=5e-2, rank=4, train_text_encoder=True,
        progress=False))
    assert result.steps == 4 and np.isfinite(result.final_loss)

    dest = register_output(result, own, "lora")
    assert dest == own / "loras" / "harbour-style.safetensors"
    assert client.post("/models/refresh").status_code == 200
    listed = {entry["id"]: entry for entry in client.get("/loras").json()}
    assert listed["harbour-style"]["format"] == "diffusers"
    assert listed["harbour-style"]["rank"] == 4

    plain = image(client, prompt="a blue harbour")
    styled = image(client, prompt="a blue harbour",
                   loras=[{"name": "harbour-style", "weight": 1.0}])
    assert np.abs(styled - plain).max() > 0
    assert np.array_equal(image(client, prompt="a blue harbour"), plain)  # nothing leaks
