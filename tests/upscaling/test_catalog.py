"""The catalog: AUTOMATIC1111's names, model files found without loading them,
case-insensitive resolution, helpful not-found errors, rescans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from app.errors import NotFound
from app.upscaling import UpscalerCatalog, scale_from_name
from tests.utils.upscalers import compact_state_dict, save_state_dict


def test_lists_builtins_first_then_every_model_file_by_stem(catalog, upscalers_dir):
    entries = catalog.entries()
    assert [(e.name, e.kind) for e in entries[:2]] == [("Lanczos", "builtin"),
                                                       ("Nearest", "builtin")]
    models = {e.name: e for e in entries if e.kind == "model"}
    # every model file is listed, even the ones that will be refused when loaded:
    # listing reads no file (as in AUTOMATIC1111)
    assert set(models) == {"1x-restore", "2x-TinyESRGAN-old", "4x-TinyESRGAN", "garbage",
                           "pickled-code", "RealESRGAN_x4-tiny-compact", "tiny-compact-x2",
                           "TinyRealESRGAN_x2", "torchscript", "unknown-keys"}
    old = models["2x-TinyESRGAN-old"]
    assert old.path == upscalers_dir / "ESRGAN" / "2x-TinyESRGAN-old.safetensors"
    assert old.size_bytes == old.path.stat().st_size
    assert (old.scale, models["4x-TinyESRGAN"].scale, models["garbage"].scale) == (2, 4, None)
    assert catalog.names()[2:] == sorted(catalog.names()[2:], key=str.lower)


def test_builtins_carry_their_pillow_filter(catalog):
    assert catalog.resolve("Lanczos").resample is Image.Resampling.LANCZOS
    assert catalog.resolve("Nearest").resample is Image.Resampling.NEAREST
    assert catalog.resolve("4x-TinyESRGAN").resample is None


def test_resolves_names_in_any_letter_case(catalog):
    assert catalog.resolve("lanczos").name == "Lanczos"
    assert catalog.resolve(" NEAREST ").name == "Nearest"
    assert catalog.resolve("4X-tinyesrgan").name == "4x-TinyESRGAN"


def test_unknown_name_is_not_found_and_lists_what_exists(catalog, upscalers_dir):
    with pytest.raises(NotFound) as caught:
        catalog.resolve("4x-UltraSharp")
    message = caught.value.message
    assert "'4x-UltraSharp'" in message
    assert "Lanczos" in message and "Nearest" in message and "4x-TinyESRGAN" in message
    assert "upscalers/ folder" in message and str(upscalers_dir) not in message
    assert caught.value.param == "upscaler" and caught.value.status_code == 404


def test_without_a_folder_only_the_builtins_exist(tmp_path: Path):
    assert UpscalerCatalog(tmp_path / "missing").names() == ["Lanczos", "Nearest"]
    assert UpscalerCatalog(None).names() == ["Lanczos", "Nearest"]


def test_refresh_rescans_and_ignores_other_and_hidden_files(tmp_path: Path):
    folder = tmp_path / "upscalers"
    catalog = UpscalerCatalog(folder)
    assert catalog.names() == ["Lanczos", "Nearest"]
    save_state_dict(compact_state_dict(2), folder / "a-x2.pth")
    save_state_dict(compact_state_dict(2), folder / "SwinIR" / "b_4x.safetensors")
    for name in ("c.ckpt", "d.pt"):
        save_state_dict(compact_state_dict(2), folder / name)
    save_state_dict(compact_state_dict(2), folder / ".trash" / "hidden.pth")
    (folder / "readme.md").write_text("not a model")
    (folder / "lanczos.pth").write_bytes(b"a file may not shadow a built-in")
    assert catalog.names() == ["Lanczos", "Nearest"]  # nothing changes until a refresh
    assert catalog.refresh() == catalog.entries()
    assert catalog.names() == ["Lanczos", "Nearest", "a-x2", "b_4x", "c", "d"]
    assert catalog.resolve("lanczos").kind == "builtin"
    os.remove(folder / "a-x2.pth")
    catalog.refresh()
    with pytest.raises(NotFound):
        catalog.resolve("a-x2")


def test_a_name_taken_twice_keeps_the_shallower_file(tmp_path: Path):
    folder = tmp_path / "upscalers"
    top = save_state_dict(compact_state_dict(2), folder / "same.pth")
    save_state_dict(compact_state_dict(2), folder / "ESRGAN" / "Same.safetensors")
    assert UpscalerCatalog(folder).resolve("same").path == top


@pytest.mark.parametrize(("stem", "scale"), [
    ("4x-UltraSharp", 4), ("4x_foolhardy_Remacri", 4), ("4xNomos8kSC", 4),
    ("2x-AniScale", 2), ("RealESRGAN_x4plus", 4), ("RealESRGAN_x4plus_anime_6B", 4),
    ("realesr-general-x4v3", 4), ("RealESRGAN_x2plus", 2), ("ESRGAN_4x", 4),
    ("003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN", 4), ("1x-ITF-SkinDiffDetail", 1),
    ("ScuNET", None), ("model64x", None), ("box16x9", None), ("x264-artifacts", None),
])
def test_scale_is_read_from_the_name_where_it_says(stem, scale):
    assert scale_from_name(stem) == scale
