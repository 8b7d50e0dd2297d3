"""The upscale operation: exact sizes, AUTOMATIC1111's passes-then-Lanczos rule, seam-free
tiles, alpha and modes, progress and cancel, limits before work."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidInput, JobCancelled, PayloadTooLarge
from app.pipelines.device import resolve_runtime
from app.upscaling import (
    UpscalerModels,
    check_upscale_size,
    plan_passes,
    target_size,
    tile_grid,
    upscale,
)
from tests.utils.images import scene

COMPACT_X4 = "RealESRGAN_x4-tiny-compact"  # receptive radius 4 px: cheap and exact
COMPACT_X2 = "tiny-compact-x2"


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def _rgba(width: int = 40, height: int = 24) -> Image.Image:
    image = scene(width, height, seed=5).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    image.putalpha(Image.fromarray(alpha, "L"))
    return image


# built-ins

@pytest.mark.parametrize("name", ["Lanczos", "Nearest"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_builtins_are_pillows_resize_byte_for_byte(catalog, name, mode):
    image = _rgba(33, 21).convert(mode)
    resample = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
    by_scale = upscale(image, catalog.resolve(name), scale=2.5)
    assert by_scale.tobytes() == image.resize((83, 53), resample[name]).tobytes()
    assert by_scale.mode == mode
    by_size = upscale(image, catalog.resolve(name), size=(70, 30))
    assert by_size.tobytes() == image.resize((70, 30), resample[name]).tobytes()


def test_a_palette_image_is_resized_in_colour_not_by_palette_index(catalog):
    image = scene(24, 16).quantize(16)
    result = upscale(image, catalog.resolve("Lanczos"), scale=2)
    assert result.mode == "RGB"
    assert result.tobytes() == image.convert("RGB").resize(
        (48, 32), Image.Resampling.LANCZOS).tobytes()


def test_a_builtin_needs_a_scale_or_a_size(catalog):
    with pytest.raises(InvalidInput, match="scale or size") as caught:
        upscale(scene(16, 16), catalog.resolve("Lanczos"))
    assert caught.value.param == "scale"


# model upscalers: sizes and passes

@pytest.mark.parametrize(("name", "scale"), [
    ("4x-TinyESRGAN", 4), ("2x-TinyESRGAN-old", 2), ("TinyRealESRGAN_x2", 2),
    (COMPACT_X4, 4), (COMPACT_X2, 2),
])
def test_a_model_upscales_by_exactly_its_scale(catalog, models, name, scale):
    image = scene(20, 14, seed=1)
    result = upscale(image, catalog.resolve(name), models=models)  # its own scale
    assert result.size == (20 * scale, 14 * scale) and result.mode == "RGB"
    assert _pixels(result).std() > 5  # an image, not a constant


def test_scale_three_with_a_x4_model_runs_it_once_then_lanczos(catalog, models):
    image = scene(24, 16, seed=2)
    entry = catalog.resolve(COMPACT_X4)
    calls: list[tuple[int, int]] = []
    result = upscale(image, entry, models=models, scale=3, tile_size=0,
                     on_tile=lambda done, total: calls.append((done, total)))
    assert result.size == (72, 48) and calls == [(1, 1)]
    native = upscale(image, entry, models=models, tile_size=0)
    assert result.tobytes() == native.resize((72, 48), Image.Resampling.LANCZOS).tobytes()


def test_scale_beyond_the_model_runs_more_passes(catalog, models):
    calls: list[tuple[int, int]] = []
    result = upscale(scene(10, 8), catalog.resolve(COMPACT_X2), models=models, scale=6,
                     tile_size=0, on_tile=lambda done, total: calls.append((done, total)))
    assert result.size == (60, 48)
    assert calls == [(1, 3), (2, 3), (3, 3)]  # ×2 ×2 ×2 = ×8, then Lanczos down to ×6


def test_an_exact_size_is_met_even_off_the_aspect_ratio(catalog, models):
    result = upscale(scene(20, 10), catalog.resolve(COMPACT_X2), models=models,
                     size=(50, 17))
    assert result.size == (50, 17)


def test_plan_passes_follows_automatic1111():
    assert plan_passes((100, 50), (400, 200), 4, 3) == [(400, 200)]
    assert plan_passes((100, 50), (300, 150), 4, 3) == [(400, 200)]
    assert plan_passes((100, 50), (800, 400), 4, 3) == [(400, 200), (1600, 800)]
    assert plan_passes((10, 10), (10**6, 10**6), 2, 3) == [(20, 20), (40, 40), (80, 80)]
    assert plan_passes((100, 50), (100, 50), 4, 3) == []  # nothing to enlarge
    assert plan_passes((100, 50), (100, 60), 4, 3) == [(400, 200)]  # either side counts


def test_target_size_rounds_half_up_and_names_bad_arguments():
    assert target_size((33, 21), scale=1.5) == (50, 32)
    assert target_size((33, 21), native_scale=4) == (132, 84)
    assert target_size((1, 1), scale=0.1) == (1, 1)
    for kwargs, param in [({"scale": 0}, "scale"), ({"scale": float("nan")}, "scale"),
                          ({"size": (0, 5)}, "size"), ({"scale": 2, "size": (4, 4)}, "scale"),
                          ({}, "scale")]:
        with pytest.raises(InvalidInput) as caught:
            target_size((10, 10), **kwargs)
        assert caught.value.param == param


# alpha and modes

def test_alpha_is_kept_and_resized_with_lanczos(catalog, models):
    image = _rgba()
    entry = catalog.resolve(COMPACT_X2)
    result = upscale(image, entry, models=models)
    assert result.mode == "RGBA" and result.size == (80, 48)
    expected_alpha = image.getchannel("A").resize((80, 48), Image.Resampling.LANCZOS)
    assert result.getchannel("A").tobytes() == expected_alpha.tobytes()
    colour = upscale(image.convert("RGB"), entry, models=models)
    assert result.convert("RGB").tobytes() == colour.tobytes()


def test_greyscale_stays_greyscale(catalog, models):
    entry = catalog.resolve(COMPACT_X2)
    grey = scene(20, 12).convert("L")
    assert upscale(grey, entry, models=models).mode == "L"
    with_alpha = _rgba(20, 12).convert("LA")
    result = upscale(with_alpha, entry, models=models)
    assert result.mode == "LA" and result.size == (40, 24)


# progress, cancel, limits

def test_progress_is_reported_once_per_tile(catalog, models):
    calls: list[tuple[int, int]] = []
    upscale(scene(64, 40), catalog.resolve(COMPACT_X2), models=models, tile_size=32,
            tile_overlap=4, on_tile=lambda done, total: calls.append((done, total)))
    total = len(tile_grid(64, 40, 32, 4))
    assert total == 6 and calls == [(done, total) for done in range(1, total + 1)]


def test_raising_from_the_callback_stops_the_work(catalog, models):
    entry = catalog.resolve(COMPACT_X2)
    calls: list[int] = []

    def cancel_at_second_tile(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        upscale(scene(64, 40), entry, models=models, tile_size=32, tile_overlap=4,
                on_tile=cancel_at_second_tile)
    assert calls == [1, 2]
    loaded = models.get(entry)
    assert not loaded.run_lock.locked()  # the next request runs
    assert upscale(scene(8, 8), loaded).size == (16, 16)


def test_too_large_an_output_is_refused_before_loading(catalog):
    cache = UpscalerModels(resolve_runtime("cpu"), capacity=1)
    with pytest.raises(PayloadTooLarge, match="limit of 10000") as caught:
        upscale(scene(40, 40), catalog.resolve("4x-TinyESRGAN"), models=cache,
                max_output_pixels=100 * 100)
    assert caught.value.param == "scale" and cache.loaded() == []
    with pytest.raises(PayloadTooLarge) as caught:
        upscale(scene(40, 40), catalog.resolve("Lanczos"), size=(200, 100),
                max_output_pixels=100 * 100)
    assert caught.value.param == "size"


def test_too_large_an_intermediate_image_is_refused(catalog, models):
    # ×2 asked of a ×4 model makes a ×4 image first: 4× the output's area
    with pytest.raises(PayloadTooLarge, match="on the way"):
        upscale(scene(20, 20), catalog.resolve(COMPACT_X4), models=models, scale=2,
                max_output_pixels=40 * 40, max_work_pixels=60 * 60)
    result = upscale(scene(20, 20), catalog.resolve(COMPACT_X4), models=models, scale=2,
                     max_output_pixels=40 * 40)  # by default 4× the output limit
    assert result.size == (40, 40)


def test_check_upscale_size_answers_at_request_time_without_loading(catalog):
    assert check_upscale_size((50, 40), catalog.resolve("4x-TinyESRGAN")) == (200, 160)
    assert check_upscale_size((50, 40), catalog.resolve("Lanczos"), size=(64, 64)) == (64, 64)
    assert check_upscale_size((50, 40), catalog.resolve("garbage")) is None  # scale unknown
    with pytest.raises(PayloadTooLarge):
        check_upscale_size((50, 40), catalog.resolve("Nearest"), scale=8,
                           max_output_pixels=300 * 300)
    with pytest.raises(InvalidInput):
        check_upscale_size((50, 40), catalog.resolve("Nearest"))
