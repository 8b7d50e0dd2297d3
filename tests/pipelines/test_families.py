"""Model families: tiny SD1.5/SD2.1/SDXL builders, probing, single files, ``.ckpt`` safety
and the shipped SD2.1/SDXL single-file configs.

Every test runs with network connections refused (the ``no_network`` fixture), so the
loading paths are proven to need no hub access.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from app.pipelines.families import (
    FAMILIES,
    SIDECAR_SUFFIX,
    Probe,
    probe_checkpoint_keys,
    probe_diffusers_folder,
    probe_single_file,
    sidecar_config,
)
from app.pipelines.single_file.checkpoint import UnsafeCheckpointError, read_tensor_shapes
from app.pipelines.single_file.ldm_format import (
    UNET_PREFIX,
    VAE_PREFIX,
    clip_key_to_ldm,
    open_clip_state_dict,
    pipeline_to_ldm_state_dict,
    save_as_ldm_checkpoint,
    unet_key_to_ldm,
    vae_key_to_ldm,
)
from app.pipelines.single_file.loader import complete_config_dir, load_single_file
from tests.utils.families import build_tiny_sd15, build_tiny_sd21, build_tiny_sdxl
from tests.utils.network import refuse_network

PROMPT = "a photo of a cat"
BUILDERS = {"sd15": build_tiny_sd15, "sd21": build_tiny_sd21, "sdxl": build_tiny_sdxl}
# (family, inpaint) -> what the tiny model must probe as.
EXPECTED = {
    ("sd15", False): Probe("sd15", "base", "epsilon", 256),
    ("sd15", True): Probe("sd15", "inpaint", "epsilon", 256),
    ("sd21", False): Probe("sd21", "base", "v_prediction", 64),
    ("sd21", True): Probe("sd21", "inpaint", "epsilon", 64),
    ("sdxl", False): Probe("sdxl", "base", "epsilon", 64),
    ("sdxl", True): Probe("sdxl", "inpaint", "epsilon", 64),
}


def _key_id(key: tuple) -> str:
    return f"{key[0]}-{'inpaint' if key[1] else 'base'}"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a network connection (e.g. to the HF hub)."""
    refuse_network(monkeypatch)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("families")
    models = {key: BUILDERS[key[0]](root / f"{key[0]}-{key[1]}", seed=7, inpaint=key[1])
              for key in EXPECTED}
    models["refiner"] = build_tiny_sdxl(root / "sdxl-refiner", seed=7, refiner=True)
    return models


def _load(folder: Path, family: str, task: str) -> DiffusionPipeline:
    spec = FAMILIES[family]
    pipe = spec.pipeline_classes[task].from_pretrained(folder, local_files_only=True,
                                                       **spec.load_kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe: DiffusionPipeline, **kwargs: object) -> np.ndarray:
    return pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs).images


def _inpaint_inputs() -> dict:
    image = torch.from_numpy(np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
    mask = torch.zeros((1, 1, 64, 64))
    mask[..., 16:48, 16:48] = 1.0
    return {"image": image, "mask_image": mask}


# -- tiny builders: probing and generation ----------------------------------------------
@pytest.mark.parametrize("key", list(EXPECTED), ids=_key_id)
def test_tiny_model_probes_right(tiny_models: dict, key: tuple) -> None:
    assert probe_diffusers_folder(tiny_models[key]) == EXPECTED[key]
    assert list(tiny_models[key].rglob("*.safetensors"))


def test_tiny_sdxl_refiner_probes_as_refiner(tiny_models: dict) -> None:
    assert probe_diffusers_folder(tiny_models["refiner"]) == Probe("sdxl", "refiner", "epsilon", 64)


def test_builders_are_deterministic(tmp_path: Path) -> None:
    a = build_tiny_sdxl(tmp_path / "a", seed=3)
    b = build_tiny_sdxl(tmp_path / "b", seed=3)
    for weights in a.rglob("*.safetensors"):
        assert weights.read_bytes() == (b / weights.relative_to(a)).read_bytes(), weights


@pytest.mark.parametrize("key", list(EXPECTED), ids=_key_id)
def test_tiny_model_generates(tiny_models: dict, key: tuple) -> None:
    family, inpaint = key
    pipe = _load(tiny_models[key], family, "inpaint" if inpaint else "txt2img")
    extra = _inpaint_inputs() if inpaint else {}
    _generate(pipe, **extra)  # warm-up
    started = time.perf_counter()
    images = _generate(pipe, **extra)
    elapsed = time.perf_counter() - started
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert images.std() > 0
    np.testing.assert_array_equal(images, _generate(pipe, **extra))
    assert elapsed < 10, f"{key}: {elapsed:.1f}s for a 64x64 image"


def test_tiny_sdxl_refiner_runs_img2img(tiny_models: dict) -> None:
    pipe = _load(tiny_models["refiner"], "sdxl", "img2img")
    assert pipe.text_encoder is None and pipe.config.requires_aesthetics_score
    images = _generate(pipe, image=_inpaint_inputs()["image"], strength=0.5)
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


# -- single files: LDM round trips through the sidecar, probing by keys -----------------
def _sidecar(folder: Path, file: Path) -> Path:
    sidecar = file.with_name(file.stem + SIDECAR_SUFFIX)
    shutil.copytree(folder, sidecar, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return sidecar


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    expected, actual = a.state_dict(), b.state_dict()
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


ROUND_TRIPS = [("sd21", False), ("sd21", True), ("sdxl", False), ("sdxl", True)]


@pytest.mark.parametrize("key", ROUND_TRIPS, ids=_key_id)
def test_single_file_round_trip(tiny_models: dict, key: tuple, tmp_path: Path) -> None:
    family, inpaint = key
    task = "inpaint" if inpaint else "txt2img"
    original = _load(tiny_models[key], family, task)
    path = save_as_ldm_checkpoint(original, tmp_path / f"{family}.safetensors")

    # Without a sidecar the key layout decides the family even at tiny widths.
    keyed = probe_single_file(path)
    assert (keyed.family, keyed.variant) == (family, "inpaint" if inpaint else "base")
    sidecar = _sidecar(tiny_models[key], path)
    assert sidecar_config(path) == sidecar
    assert probe_single_file(path) == EXPECTED[key]

    loaded = load_single_file(path, config_dir=sidecar, torch_dtype=torch.float32,
                              pipeline_cls=FAMILIES[family].pipeline_classes[task])
    assert type(loaded) is type(original)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(original, name, None) is not None:
            _same_weights(getattr(original, name), getattr(loaded, name))
    loaded.set_progress_bar_config(disable=True)
    extra = _inpaint_inputs() if inpaint else {}
    np.testing.assert_array_equal(_generate(loaded, **extra), _generate(original, **extra))


def test_sdxl_refiner_single_file_keys(tiny_models: dict, tmp_path: Path) -> None:
    original = _load(tiny_models["refiner"], "sdxl", "img2img")
    keys = pipeline_to_ldm_state_dict(original)
    assert "conditioner.embedders.0.model.text_projection" in keys
    assert not any(k.startswith("conditioner.embedders.1.") for k in keys)
    path = save_as_ldm_checkpoint(original, tmp_path / "refiner.safetensors")
    assert probe_single_file(path).variant == "refiner"


def test_yaml_hint_overrides_sd2_heuristic(tiny_models: dict, tmp_path: Path) -> None:
    path = save_as_ldm_checkpoint(_load(tiny_models[("sd21", False)], "sd21", "txt2img"),
                                  tmp_path / "sd2-base.safetensors")
    assert probe_single_file(path) == Probe("sd21", "base", "v_prediction", 768)
    # v2-inference.yaml (512-base, epsilon) has no parameterization; image_size 64 latents.
    path.with_suffix(".yaml").write_text(
        "model:\n  params:\n    unet_config:\n      params:\n        image_size: 64\n")
    assert probe_single_file(path) == Probe("sd21", "base", "epsilon", 512)
    path.with_suffix(".yaml").write_text(
        "model:\n  params:\n    parameterization: v\n    unet_config:\n      params:\n"
        "        image_size: 96\n")
    assert probe_single_file(path) == Probe("sd21", "base", "v_prediction", 768)


def test_yaml_hint_sdxl_v_prediction(tiny_models: dict, tmp_path: Path) -> None:
    path = save_as_ldm_checkpoint(_load(tiny_models[("sdxl", False)], "sdxl", "txt2img"),
                                  tmp_path / "sdxl-v.safetensors")
    assert probe_single_file(path).prediction_type == "epsilon"
    path.with_suffix(".yaml").write_text(
        "model:\n  params:\n    denoiser_config:\n      params:\n        scaling_config:\n"
        "          target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling\n")
    assert probe_single_file(path) == Probe("sdxl", "base", "v_prediction", 1024)


# -- probing real checkpoint layouts (shapes from the shipped configs, no weights) -------
def _real_ldm_shapes(family: str, in_channels: int = 4, refiner: bool = False) -> dict:
    """LDM key names and shapes of a real-sized checkpoint, from meta-device models."""
    config_dir = FAMILIES[family].config_dir()
    unet_cfg = dict(UNet2DConditionModel.load_config(config_dir, subfolder="unet"))
    unet_cfg["in_channels"] = in_channels
    if refiner:  # stabilityai/stable-diffusion-xl-refiner-1.0
        unet_cfg.update(cross_attention_dim=1280, projection_class_embeddings_input_dim=2560,
                        block_out_channels=[384, 768, 1536, 1536],
                        attention_head_dim=[6, 12, 24, 24], transformer_layers_per_block=4,
                        down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2
                        + ["DownBlock2D"],
                        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"])
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir, subfolder="vae"))
        encoders = {name: cls(CLIPTextConfig.from_pretrained(config_dir / name))
                    for name, cls in (("text_encoder", CLIPTextModel),
                                      ("text_encoder_2", CLIPTextModelWithProjection))
                    if (config_dir / name).is_dir()}
    shapes = {UNET_PREFIX + unet_key_to_ldm(k, unet.config): tuple(v.shape)
              for k, v in unet.state_dict().items()}
    shapes |= {VAE_PREFIX + vae_key_to_ldm(k, vae.config): tuple(v.shape)
               for k, v in vae.state_dict().items()}
    if family == "sd15":
        text = {"cond_stage_model.transformer." + clip_key_to_ldm(k): v
                for k, v in encoders["text_encoder"].state_dict().items()}
    elif family == "sd21":
        text = {"cond_stage_model.model." + k: v
                for k, v in open_clip_state_dict(encoders["text_encoder"].state_dict()).items()}
    else:
        big_g = open_clip_state_dict(encoders["text_encoder_2"].state_dict())
        text = {f"conditioner.embedders.{0 if refiner else 1}.model.{k}": v
                for k, v in big_g.items()}
        if not refiner:
            text |= {"conditioner.embedders.0.transformer." + clip_key_to_ldm(k): v
                     for k, v in encoders["text_encoder"].state_dict().items()}
    return shapes | {k: tuple(v.shape) for k, v in text.items()}


@pytest.mark.parametrize(("family", "channels", "refiner", "expected"), [
    ("sd15", 4, False, Probe("sd15", "base", "epsilon", 512)),
    ("sd15", 9, False, Probe("sd15", "inpaint", "epsilon", 512)),
    ("sd21", 4, False, Probe("sd21", "base", "v_prediction", 768)),
    ("sd21", 9, False, Probe("sd21", "inpaint", "epsilon", 512)),
    ("sdxl", 4, False, Probe("sdxl", "base", "epsilon", 1024)),
    ("sdxl", 9, False, Probe("sdxl", "inpaint", "epsilon", 1024)),
    ("sdxl", 4, True, Probe("sdxl", "refiner", "epsilon", 1024)),
])
def test_probe_real_checkpoint_layouts(family: str, channels: int, refiner: bool,
                                       expected: Probe) -> None:
    shapes = _real_ldm_shapes(family, channels, refiner)
    to_k = shapes[UNET_PREFIX + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"]
    assert to_k[1] == {"sd15": 768, "sd21": 1024, "sdxl": 1280 if refiner else 2048}[family]
    assert probe_checkpoint_keys(shapes) == expected
    if family == "sdxl":
        assert probe_checkpoint_keys(shapes | {"v_pred": ()}).prediction_type == "v_prediction"


def test_probe_refuses_unsupported_unets() -> None:
    shapes = _real_ldm_shapes("sd21", in_channels=5)  # SD2 depth
    with pytest.raises(ValueError, match="5 input channels"):
        probe_checkpoint_keys(shapes)
    with pytest.raises(ValueError, match="not a Stable Diffusion"):
        probe_checkpoint_keys({"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)})


# -- .ckpt: weights-only unpickling ------------------------------------------------------
class _Payload:
    """Unpickling this runs ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_ckpt_probes_and_loads(tiny_models: dict, tmp_path: Path) -> None:
    original = _load(tiny_models[("sd15", False)], "sd15", "txt2img")
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": pipeline_to_ldm_state_dict(original), "global_step": 1}, path)
    assert read_tensor_shapes(path)[UNET_PREFIX + "input_blocks.0.0.weight"][1] == 4
    assert probe_single_file(path).family == "sd15"
    sidecar = _sidecar(tiny_models[("sd15", False)], path)
    assert probe_single_file(path) == EXPECTED[("sd15", False)]
    loaded = load_single_file(path, config_dir=sidecar, torch_dtype=torch.float32)
    _same_weights(original.unet, loaded.unet)
    _same_weights(original.text_encoder, loaded.text_encoder)


def test_malicious_ckpt_is_refused_and_never_runs(tiny_models: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    state = {UNET_PREFIX + "input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}
    torch.save({"state_dict": state, "callbacks": _Payload(marker)}, path)
    _sidecar(tiny_models[("sd15", False)], path.with_name("other.ckpt"))

    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        probe_single_file(path)
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        load_single_file(path, config_dir=tiny_models[("sd15", False)])
    assert not marker.exists()
    # The payload is real: an unrestricted torch.load runs it.
    torch.load(path, weights_only=False)
    assert marker.exists()


# -- shipped single-file configs ---------------------------------------------------------
def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("family", "expected"), [
    ("sd21", {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}),
    ("sdxl", {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
              "text_encoder_2": 694_659_840}),
])
def test_shipped_config_parameter_counts(family: str, expected: dict) -> None:
    config_dir = FAMILIES[family].config_dir()
    with init_empty_weights():
        models = {
            "unet": UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(config_dir, subfolder="unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir,
                                                                       subfolder="vae")),
            "text_encoder": CLIPTextModel(
                CLIPTextConfig.from_pretrained(config_dir / "text_encoder")),
        }
        if family == "sdxl":
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2"))
    assert {name: _count(model) for name, model in models.items()} == expected
    probe = probe_diffusers_folder(config_dir)
    assert probe == {"sd21": Probe("sd21", "base", "v_prediction", 768),
                     "sdxl": Probe("sdxl", "base", "epsilon", 1024)}[family]


@pytest.mark.parametrize(("family", "pads"), [
    ("sd21", {"tokenizer": "!"}),
    ("sdxl", {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}),
])
def test_shipped_tokenizers_use_shared_bpe_files(family: str, pads: dict) -> None:
    config_dir = FAMILIES[family].config_dir()
    assert not list(config_dir.rglob("vocab.json"))  # the 1.5 MB files are shipped once
    with complete_config_dir(config_dir) as complete:
        assert complete != config_dir
        for name, pad in pads.items():
            tokenizer = CLIPTokenizer.from_pretrained(complete / name)
            assert len(tokenizer) == 49408 and tokenizer.pad_token == pad
            assert tokenizer(PROMPT).input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
            if pad == "!":
                assert tokenizer.pad_token_id == 0
    assert not complete.exists()
