"""Fixtures for the upscaling tests: one folder of tiny model upscalers per session, and
a model cache large enough that each model is loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.pipelines.device import resolve_runtime
from app.upscaling import UpscalerCatalog, UpscalerModels
from tests.utils.upscalers import build_upscalers_dir


@pytest.fixture(scope="session")
def upscalers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_upscalers_dir(tmp_path_factory.mktemp("upscalers-root"))


@pytest.fixture(scope="session")
def catalog(upscalers_dir: Path) -> UpscalerCatalog:
    return UpscalerCatalog(upscalers_dir)


@pytest.fixture(scope="session")
def models() -> UpscalerModels:
    return UpscalerModels(resolve_runtime("cpu"), capacity=16)
