"""deploy/kuberay/rayservice.yaml: its Serve applications import from Bildwerk, and it
names only settings Bildwerk has."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from app.config import Settings

RAYSERVICE = Path(__file__).resolve().parents[2] / "deploy" / "kuberay" / "rayservice.yaml"


def test_the_rayservice_imports_our_application_builders_and_names_real_settings():
    spec = yaml.safe_load(RAYSERVICE.read_text())["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    for application in serve["applications"]:
        module, name = application["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module), name))
    assert [a["name"] for a in serve["applications"]] == ["bildwerk", "bildwerk-ingress"]
    env = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    known = {f"BILDWERK_{name.upper()}" for name in Settings.model_fields}
    names = [item["name"] for item in env]
    assert [n for n in names if n.startswith("BILDWERK_") and n not in known] == []
    assert {"BILDWERK_EXECUTOR", "BILDWERK_RAY_NUM_GPUS"} <= set(names)
    worker = spec["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["containers"][0]["env"] == env  # the same settings on every node
