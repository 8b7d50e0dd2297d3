"""LoRA discovery, probing, compatibility and per-request application on the tiny model."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from app.errors import InvalidInput
from app.pipelines.embedded import build_tiny_sd15
from app.pipelines.lora_files import LoraEntry, check_compatible, discover_loras, probe_lora
from app.pipelines.lora_weights import LoraManager
from tests.utils.loras import sdxl_kohya_shapes, write_header_only_safetensors, write_tiny_lora

MODEL_KEY = "tiny"
# PEFT warns on each further adapter in a module; app.pipelines.lora_weights silences it, but
# pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("lora-model") / "tiny", seed=31)


@pytest.fixture(scope="module")
def loras(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoraEntry]:
    """``full``/``full_kohya``: UNet + text encoder, the same LoRA in both layouts;
    ``u1``..``u3``: UNet-only LoRAs (diffusers layout, ``u2`` also in kohya)."""
    folder = tmp_path_factory.mktemp("loras")
    full = write_tiny_lora(model_dir, folder, "full", seed=1)
    files = {"full": full["diffusers"], "full_kohya": full["kohya"]}
    for i in (1, 2, 3):
        unet_only = write_tiny_lora(model_dir, folder, f"u{i}", seed=10 * i, text_encoder=False)
        files[f"u{i}"] = unet_only["diffusers"]
        files[f"u{i}_kohya"] = unet_only["kohya"]
    return {key: probe_lora(path) for key, path in files.items()}


def _load(model_dir: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(
        model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False)


@pytest.fixture()
def base(model_dir: Path) -> StableDiffusionPipeline:
    """The shared pipeline of a loaded model (as in the registry)."""
    return _load(model_dir)


def request(base: StableDiffusionPipeline) -> StableDiffusionPipeline:
    """What ``LoadedModel.request_pipeline`` hands a job: a shallow copy sharing every
    module, with its own scheduler."""
    pipe = copy.copy(base)
    pipe.scheduler = type(base.scheduler).from_config(base.scheduler.config)
    return pipe


def image(pipe: StableDiffusionPipeline, seed: int = 0) -> np.ndarray:
    return pipe("a red fox", num_inference_steps=3, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images[0]


def reference(model_dir: Path, loras: list[tuple[LoraEntry, float]]) -> np.ndarray:
    """The picture plain diffusers makes on a fresh pipeline with exactly these LoRAs."""
    pipe = _load(model_dir)
    for entry, _ in loras:
        pipe.load_lora_weights(str(entry.path), adapter_name=entry.adapter_name)
    pipe.set_adapters([e.adapter_name for e, _ in loras], adapter_weights=[w for _, w in loras])
    return image(pipe)


def generate(manager: LoraManager, base: StableDiffusionPipeline,
             loras: list[tuple[LoraEntry, float]]) -> np.ndarray:
    """One job as the worker runs it: apply, generate, reset."""
    pipe = request(base)
    manager.apply(pipe, MODEL_KEY, loras)
    try:
        return image(pipe)
    finally:
        manager.reset(pipe)


# -- probing ----------------------------------------------------------------------------------


def test_probe_detects_format_rank_targets_and_context(loras: dict[str, LoraEntry]) -> None:
    full, kohya = loras["full"], loras["full_kohya"]
    assert (full.format, kohya.format) == ("diffusers", "kohya")
    for entry in (full, kohya):
        assert entry.rank == 4
        assert entry.context_dim == 32  # the tiny UNet's cross_attention_dim
        assert entry.family is None  # 32 is no real family
        assert entry.targets == ("unet", "text_encoder")
        assert entry.size_bytes == entry.path.stat().st_size > 0
    assert full.id == "full-diffusers" and full.adapter_name == "full-diffusers"
    assert loras["u1"].targets == ("unet",) and loras["u2_kohya"].targets == ("unet",)


def test_discover_lists_safetensors_loras_and_skips_the_rest(
        loras: dict[str, LoraEntry], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "good.safetensors").write_bytes(loras["u1"].path.read_bytes())
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    write_header_only_safetensors(tmp_path / "not-a-lora.safetensors", {"weight": [4, 4]})
    (tmp_path / "pickled.ckpt").write_bytes(b"never opened")
    with caplog.at_level(logging.WARNING, logger="bildwerk.loras"):
        entries = discover_loras(tmp_path)
    assert [e.id for e in entries] == ["good"]
    assert "garbage.safetensors" in caplog.text and "not-a-lora.safetensors" in caplog.text
    assert discover_loras(tmp_path / "missing") == []


def test_sdxl_lora_is_reported_incompatible_with_an_sd15_model(tmp_path: Path) -> None:
    path = write_header_only_safetensors(tmp_path / "xl-style.safetensors", sdxl_kohya_shapes())
    entry = probe_lora(path)
    assert (entry.format, entry.family, entry.context_dim) == ("kohya", "sdxl", 2048)
    assert entry.targets == ("unet", "text_encoder", "text_encoder_2")
    with pytest.raises(InvalidInput) as err:
        check_compatible(entry, 768, "sd15")
    assert err.value.param == "loras"
    message = err.value.message
    assert "'xl-style'" in message and "sdxl" in message and "sd15" in message
    assert "2048" in message and "768" in message
    check_compatible(entry, 2048, "sdxl")  # fits an SDXL model


def test_sd21_diffusers_lora_is_reported_incompatible_with_an_sd15_model(tmp_path: Path) -> None:
    attn = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    path = write_header_only_safetensors(tmp_path / "v2.safetensors", {
        f"{attn}.to_k.lora_A.weight": [8, 1024], f"{attn}.to_k.lora_B.weight": [640, 8],
        f"{attn}.to_q.lora_A.weight": [8, 640], f"{attn}.to_q.lora_B.weight": [640, 8]})
    entry = probe_lora(path)
    assert (entry.format, entry.family, entry.context_dim, entry.rank) == \
        ("diffusers", "sd21", 1024, 8)
    with pytest.raises(InvalidInput, match="'v2'.*sd21.*1024.*sd15.*768"):
        check_compatible(entry, 768, "sd15")


def test_apply_refuses_an_incompatible_lora_before_touching_the_model(
        base: StableDiffusionPipeline, tmp_path: Path) -> None:
    entry = probe_lora(write_header_only_safetensors(tmp_path / "xl.safetensors",
                                                     sdxl_kohya_shapes()))
    manager = LoraManager()
    with pytest.raises(InvalidInput, match="2048.*32"):
        manager.apply(request(base), MODEL_KEY, [(entry, 1.0)])
    assert base.get_list_adapters() == {}


def test_apply_rejects_duplicates_and_too_many(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry]) -> None:
    manager = LoraManager(max_resident=2)
    with pytest.raises(InvalidInput, match="twice"):
        manager.apply(request(base), MODEL_KEY, [(loras["u1"], 1.0), (loras["u1"], 0.5)])
    with pytest.raises(InvalidInput, match="at most 2"):
        manager.apply(request(base), MODEL_KEY,
                      [(loras["u1"], 1.0), (loras["u2"], 1.0), (loras["u3"], 1.0)])


# -- applying ---------------------------------------------------------------------------------


def test_lora_changes_the_image_and_weight_zero_equals_no_lora(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry], model_dir: Path) -> None:
    manager = LoraManager()
    plain = image(request(base))
    with_lora = generate(manager, base, [(loras["full"], 1.0)])
    assert np.abs(with_lora - plain).max() > 0.05
    np.testing.assert_allclose(with_lora, reference(model_dir, [(loras["full"], 1.0)]),
                               atol=1e-5)
    half = generate(manager, base, [(loras["full"], 0.5)])
    assert np.abs(half - plain).max() > 1e-3 and np.abs(half - with_lora).max() > 1e-3
    zero = generate(manager, base, [(loras["full"], 0.0)])
    np.testing.assert_allclose(zero, plain, atol=1e-6)


def test_kohya_and_diffusers_layouts_give_the_same_image(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry]) -> None:
    manager = LoraManager()
    plain = image(request(base))
    for diffusers_key, kohya_key in (("full", "full_kohya"), ("u2", "u2_kohya")):
        from_diffusers = generate(manager, base, [(loras[diffusers_key], 0.8)])
        from_kohya = generate(manager, base, [(loras[kohya_key], 0.8)])
        assert np.abs(from_diffusers - plain).max() > 0.05
        np.testing.assert_allclose(from_kohya, from_diffusers, atol=1e-5)


def test_two_loras_at_once(base: StableDiffusionPipeline, loras: dict[str, LoraEntry],
                           model_dir: Path) -> None:
    manager = LoraManager()
    both = [(loras["full"], 0.7), (loras["u1"], 0.6)]
    combined = generate(manager, base, both)
    only_full = generate(manager, base, [(loras["full"], 0.7)])
    only_u1 = generate(manager, base, [(loras["u1"], 0.6)])
    assert np.abs(combined - only_full).max() > 1e-3
    assert np.abs(combined - only_u1).max() > 1e-3
    np.testing.assert_allclose(combined, reference(model_dir, both), atol=1e-5)
    # Resident but not requested adapters stay off.
    np.testing.assert_allclose(only_u1, reference(model_dir, [(loras["u1"], 0.6)]), atol=1e-5)


def test_nothing_leaks_into_requests_without_loras(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry]) -> None:
    manager = LoraManager()
    before = image(request(base))
    generate(manager, base, [(loras["full"], 1.0), (loras["u1"], -0.5)])
    assert sorted(base.get_list_adapters()["unet"]) == ["full-diffusers", "u1-diffusers"]
    after_reset = image(request(base))
    assert np.array_equal(before, after_reset)  # bit-identical
    empty = request(base)
    manager.apply(empty, MODEL_KEY, [])  # a job without LoRAs goes through apply([]) too
    assert np.array_equal(before, image(empty))


def test_residency_is_bounded_and_lru_evicted(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry], model_dir: Path) -> None:
    manager = LoraManager(max_resident=2)
    refs = {key: reference(model_dir, [(loras[key], 1.0)]) for key in ("u1", "u2", "full")}
    for key in ("u1", "u2", "full"):
        np.testing.assert_allclose(generate(manager, base, [(loras[key], 1.0)]), refs[key],
                                   atol=1e-5)
    adapters = base.get_list_adapters()
    assert sorted(adapters["unet"]) == ["full-diffusers", "u2-diffusers"]
    assert adapters["text_encoder"] == ["full-diffusers"]
    assert manager.resident(MODEL_KEY) == ["u2-diffusers", "full-diffusers"]
    assert manager.last.evicted == ["u1-diffusers"]
    # Using u2 makes full the least recently used; bringing u1 back evicts full.
    generate(manager, base, [(loras["u2"], 1.0)])
    assert manager.last.loaded == []
    np.testing.assert_allclose(generate(manager, base, [(loras["u1"], 1.0)]), refs["u1"],
                               atol=1e-5)
    assert manager.last.evicted == ["full-diffusers"]
    assert base.get_list_adapters() == {"unet": ["u2-diffusers", "u1-diffusers"]}


def test_unload_all_removes_every_adapter(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry]) -> None:
    manager = LoraManager()
    before = image(request(base))
    generate(manager, base, [(loras["full"], 1.0), (loras["u3"], 1.0)])
    manager.unload_all(base, MODEL_KEY)
    assert manager.resident(MODEL_KEY) == []
    assert all(not names for names in base.get_list_adapters().values())
    assert np.array_equal(before, image(request(base)))


def test_reloaded_model_under_the_same_key_starts_empty(
        model_dir: Path, loras: dict[str, LoraEntry]) -> None:
    manager = LoraManager()
    generate(manager, _load(model_dir), [(loras["u1"], 1.0)])
    fresh = _load(model_dir)  # same key, new modules (unloaded without unload_all)
    generate(manager, fresh, [(loras["u2"], 1.0)])
    assert manager.last.loaded == ["u2-diffusers"]
    assert manager.resident(MODEL_KEY) == ["u2-diffusers"]


def test_forced_hotswap_on_cpu_gives_the_right_images(
        base: StableDiffusionPipeline, loras: dict[str, LoraEntry], model_dir: Path) -> None:
    """Hotswap is meant for CUDA (no recompiling a compiled UNet); forced here only to check
    the swapped-in weights give the same picture as loading normally."""
    manager = LoraManager(max_resident=1, hotswap=True, hotswap_target_rank=8)
    plain = image(request(base))
    for key in ("u1", "u2", "u3"):
        got = generate(manager, base, [(loras[key], 1.0)])
        np.testing.assert_allclose(got, reference(model_dir, [(loras[key], 1.0)]), atol=1e-5)
    assert manager.last.hotswapped == ["u3-diffusers"]
    assert base.get_list_adapters() == {"unet": ["u1-diffusers"]}  # the slot keeps its name
    assert manager.resident(MODEL_KEY) == ["u3-diffusers"]
    # A LoRA with a text-encoder part cannot be hotswapped: it replaces the slot normally.
    got = generate(manager, base, [(loras["full"], 1.0)])
    np.testing.assert_allclose(got, reference(model_dir, [(loras["full"], 1.0)]), atol=1e-5)
    assert manager.last.hotswapped == [] and manager.last.evicted == ["u3-diffusers"]
    assert np.array_equal(plain, image(request(base)))
