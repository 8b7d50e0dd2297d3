"""Loading through spandrel: architectures detected from real key layouts, files that
are no upscaler refused with a clear message, precision per device, the LRU cache."""

from __future__ import annotations

import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from app.errors import InvalidInput
from app.pipelines.device import Runtime, resolve_runtime
from app.upscaling import UpscalerCatalog, UpscalerModels, load_upscaler
from app.upscaling import loading as loading_module
from app.upscaling.loading import pick_dtype
from tests.utils.upscalers import compact_state_dict, save_state_dict

CPU = resolve_runtime("cpu")


@pytest.mark.parametrize(("name", "architecture", "scale", "align"), [
    ("4x-TinyESRGAN", "ESRGAN", 4, 1),                # new keys, .pth under params_ema
    ("2x-TinyESRGAN-old", "ESRGAN", 2, 1),            # old keys, .safetensors
    ("TinyRealESRGAN_x2", "ESRGAN", 2, 4),            # new keys, pixel-unshuffled ×2
    ("RealESRGAN_x4-tiny-compact", "RealESRGAN Compact", 4, 1),
    ("tiny-compact-x2", "RealESRGAN Compact", 2, 1),
])
def test_spandrel_detects_the_architecture_and_scale(models, catalog, name, architecture,
                                                     scale, align):
    loaded = models.get(catalog.resolve(name))
    assert (loaded.architecture, loaded.scale, loaded.align) == (architecture, scale, align)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert not loaded.descriptor.model.training
    out = loaded.descriptor(torch.rand(1, 3, 12, 16))
    assert out.shape == (1, 3, 12 * scale, 16 * scale)


@pytest.mark.parametrize(("name", "message"), [
    ("1x-restore", "is a restoration model"),
    ("garbage", "cannot be read as model weights"),
    ("unknown-keys", "no model architecture spandrel knows"),
    ("pickled-code", "Unsupported global"),  # a pickled class is refused, never built
    ("torchscript", "TorchScript"),
])
def test_files_that_are_no_upscaler_are_invalid_input(catalog, name, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        load_upscaler(catalog.resolve(name), CPU)
    assert name in caught.value.message and caught.value.param == "upscaler"
    assert "Traceback" not in caught.value.message and "\x1b" not in caught.value.message


def test_a_file_that_vanished_says_refresh(tmp_path: Path):
    folder = tmp_path / "upscalers"
    path = save_state_dict(compact_state_dict(2), folder / "gone-x2.pth")
    entry = UpscalerCatalog(folder).resolve("gone-x2")
    path.unlink()
    with pytest.raises(InvalidInput, match="refresh"):
        load_upscaler(entry, CPU)


def _descriptor(half: bool, bf16: bool):
    return SimpleNamespace(supports_half=half, supports_bfloat16=bf16)


@pytest.mark.parametrize(("half", "bf16", "bf16_works", "preferred", "expected"), [
    (True, True, True, torch.float16, torch.float16),
    (False, True, True, torch.float16, torch.bfloat16),  # e.g. a model that overflows fp16
    (False, True, False, torch.float16, torch.float32),  # a GPU without bf16
    (False, False, True, torch.float16, torch.float32),
    (True, True, True, torch.float32, torch.float32),    # the runtime asked for fp32
])
def test_half_precision_on_cuda_where_the_architecture_allows(monkeypatch, half, bf16,
                                                              bf16_works, preferred, expected):
    monkeypatch.setattr(loading_module, "_bf16_works", lambda device: bf16_works)
    cuda = Runtime(torch.device("cuda"), preferred)
    assert pick_dtype(_descriptor(half, bf16), cuda) == expected
    assert pick_dtype(_descriptor(half, bf16), CPU) == torch.float32


@pytest.fixture
def counted_frees(monkeypatch) -> list[int]:
    frees: list[int] = []
    monkeypatch.setattr(loading_module, "free_memory", lambda runtime: frees.append(1))
    return frees


def test_cache_keeps_the_most_recently_used_and_frees_the_rest(catalog, counted_frees):
    cache = UpscalerModels(CPU, capacity=1)
    first = cache.get(catalog.resolve("tiny-compact-x2"))
    assert cache.get(catalog.resolve("TINY-compact-x2")) is first
    assert cache.loaded() == ["tiny-compact-x2"] and counted_frees == []
    second = cache.get(catalog.resolve("RealESRGAN_x4-tiny-compact"))
    assert cache.loaded() == ["RealESRGAN_x4-tiny-compact"] and len(counted_frees) == 1
    assert cache.get(catalog.resolve("tiny-compact-x2")) is not first  # loaded again
    assert cache.unload("tiny-COMPACT-x2") and not cache.unload("tiny-compact-x2")
    assert cache.loaded() == [] and second.scale == 4


def test_cache_of_two_evicts_the_least_recently_used(catalog, counted_frees):
    cache = UpscalerModels(CPU, capacity=2)
    names = ["tiny-compact-x2", "RealESRGAN_x4-tiny-compact"]
    for name in names:
        cache.get(catalog.resolve(name))
    cache.get(catalog.resolve(names[0]))  # now the most recently used
    cache.get(catalog.resolve("2x-TinyESRGAN-old"))
    assert cache.loaded() == ["tiny-compact-x2", "2x-TinyESRGAN-old"]
    assert len(counted_frees) == 1  # memory given back after the eviction
    assert cache.clear() == 2 and cache.loaded() == [] and len(counted_frees) == 2


def test_capacity_zero_keeps_nothing(catalog):
    cache = UpscalerModels(CPU, capacity=0)
    assert cache.get(catalog.resolve("tiny-compact-x2")).scale == 2
    assert cache.loaded() == []


def test_a_replaced_file_is_loaded_again(tmp_path: Path):
    folder = tmp_path / "upscalers"
    path = save_state_dict(compact_state_dict(2, seed=1), folder / "swap.pth")
    catalog = UpscalerCatalog(folder)
    cache = UpscalerModels(CPU, capacity=1)
    before = cache.get(catalog.resolve("swap"))
    save_state_dict(compact_state_dict(4, seed=2), path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = cache.get(catalog.resolve("swap"))
    assert (before.scale, after.scale) == (2, 4)


def test_threads_asking_for_the_same_model_load_it_once(catalog, monkeypatch):
    loads: list[str] = []
    real_load = loading_module.load_upscaler

    def slow_load(entry, runtime):
        loads.append(entry.name)
        time.sleep(0.05)  # the others arrive while this one loads
        return real_load(entry, runtime)

    monkeypatch.setattr(loading_module, "load_upscaler", slow_load)
    cache = UpscalerModels(CPU, capacity=1)
    entry = catalog.resolve("tiny-compact-x2")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cache.get(entry), range(4)))
    assert loads == ["tiny-compact-x2"] and all(r is results[0] for r in results)


def test_an_evicted_model_is_really_freed(catalog):
    cache = UpscalerModels(CPU, capacity=1)
    network = weakref.ref(cache.get(catalog.resolve("tiny-compact-x2")).descriptor.model)
    assert network() is not None
    cache.get(catalog.resolve("RealESRGAN_x4-tiny-compact"))
    assert network() is None  # nothing kept a reference: its memory is back
    network = weakref.ref(cache.get(catalog.resolve("RealESRGAN_x4-tiny-compact"))
                          .descriptor.model)
    cache.clear()
    assert network() is None
