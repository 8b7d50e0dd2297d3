"""Model upscalers on CUDA: half precision where the architecture allows, the same
picture as on the CPU, memory given back when the cache is cleared. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.pipelines.device import resolve_runtime
from app.upscaling import UpscalerModels, upscale
from tests.utils.images import scene

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("name", ["4x-TinyESRGAN", "TinyRealESRGAN_x2",
                                  "RealESRGAN_x4-tiny-compact"])
def test_cuda_runs_fp16_and_matches_the_cpu(catalog, models, name):
    cuda = UpscalerModels(resolve_runtime("cuda"), capacity=1)
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    entry = catalog.resolve(name)
    loaded = cuda.get(entry)
    assert loaded.dtype == torch.float16 and loaded.device.type == "cuda"
    image = scene(96, 64, seed=7)
    on_gpu = np.asarray(upscale(image, entry, models=cuda, tile_size=64, tile_overlap=16),
                        dtype=np.int16)
    on_cpu = np.asarray(upscale(image, entry, models=models, tile_size=64, tile_overlap=16),
                        dtype=np.int16)
    assert on_gpu.shape == on_cpu.shape
    assert np.abs(on_gpu - on_cpu).mean() < 1.0  # fp16 rounding, not another picture
    del loaded
    assert cuda.clear() == 1
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= baseline + 1024 * 1024
