"""Where checkpoints come from: .ckpt files (tensors only, never pickled code) and
Hugging Face repo ids (through the hub cache, respecting HF_HUB_OFFLINE)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from tests.utils.images import decode, pixels

FAST = {"prompt": "a windmill", "steps": 3, "width": 64, "height": 64, "seed": 21}


def _pixels(client, **changes) -> np.ndarray:
    r = client.post("/txt2img", json={**FAST, **changes})
    assert r.status_code == 200, r.text
    return pixels(decode(client.get(r.json()["images"][0]["url"]).content))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_ckpt_files_load_as_tensors_and_pickled_code_never_runs(make_client, models_dir,
                                                                 tmp_path):
    own = tmp_path / "models"
    own.mkdir()
    state = load_file(models_dir / "tiny-single.safetensors")
    torch.save({"state_dict": state}, own / "tiny-ckpt.ckpt")
    shutil.copytree(models_dir / "tiny-single.config", own / "tiny-ckpt.config")
    marker = tmp_path / "pwned"
    with (own / "evil.ckpt").open("wb") as fh:
        pickle.dump({"state_dict": {"x": _Evil(marker)}}, fh)
    shutil.copytree(models_dir / "tiny-sd15", own / "tiny-sd15")

    client = make_client(models_dir=own)
    models = {m["id"]: m for m in client.get("/models").json()}
    assert "evil" not in models and not marker.exists()
    assert models["tiny-ckpt"]["format"] == "single_file"
    assert np.array_equal(_pixels(client, model="tiny-ckpt"), _pixels(client, model="tiny-sd15"))
    assert not marker.exists()


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """Lay out ``source`` the way huggingface_hub caches a downloaded repo."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_repo_ids_come_from_the_cache_when_offline(make_client, models_dir, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "bildwerk-test/tiny-hub", models_dir / "tiny-sd15")
    client = make_client(models_dir=tmp_path / "empty", default_model=None, hf_cache_dir=cache,
                         hf_models="bildwerk-test/tiny-hub, bildwerk-test/not-cached")
    models = {m["id"]: m for m in client.get("/models").json()}
    assert "bildwerk-test/not-cached" not in models  # offline: nothing is fetched
    hub = models["bildwerk-test/tiny-hub"]
    assert (hub["family"], hub["format"]) == ("sd15", "diffusers")
    assert client.get("/models/bildwerk-test/tiny-hub").json()["id"] == "bildwerk-test/tiny-hub"
    assert client.post("/models/bildwerk-test/tiny-hub/load").json()["loaded"] is True
    hub_px = _pixels(client, model="bildwerk-test/tiny-hub")
    reference = make_client(models_dir=models_dir)
    assert np.array_equal(hub_px, _pixels(reference, model="tiny-sd15"))
