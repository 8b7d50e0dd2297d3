"""Single-file (LDM layout) SD1.5 checkpoints: offline configs, writer and loader.

Tiny seeded random SD1.5-shaped pipelines are written with ``save_as_ldm_checkpoint``
and read back with ``load_single_file`` (diffusers' own ``from_single_file``
conversion) while every network connection is refused, so the tests prove the
loading path needs no hub access even without ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from app.pipelines.single_file.clip_tokenizer import (
    CLIP_VOCAB_SIZE,
    build_clip_vocab,
    bytes_to_unicode,
    ensure_clip_tokenizer,
    write_clip_tokenizer,
)
from app.pipelines.single_file.ldm_format import save_as_ldm_checkpoint
from app.pipelines.single_file.loader import SD15_CONFIG_DIR, load_single_file
from tests.utils.network import refuse_network

TINY_MERGES = [("c", "a"), ("ca", "t</w>"), ("p", "h"), ("o", "t")]
PROMPT = "a photo of a cat"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a network connection (e.g. to the HF hub)."""
    refuse_network(monkeypatch)


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter distinct seeded values so any key mix-up is detected."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=generator))
    return module.eval()


def build_tiny_pipeline(tokenizer_dir: Path, unet_in_channels: int = 4) -> StableDiffusionPipeline:
    """A seeded random SD1.5-shaped pipeline, sized like diffusers' own dummy components."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=unet_in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=1000,
        )
    )
    scheduler = PNDMScheduler.from_pretrained(SD15_CONFIG_DIR, subfolder="scheduler")
    return StableDiffusionPipeline(
        vae=_randomize(vae, 1),
        text_encoder=_randomize(text_encoder, 2),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=_randomize(unet, 3),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level CLIP tokenizer created on disk (256 chars, 256 ``</w>`` chars, 4 merges)."""
    return write_clip_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"), TINY_MERGES)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_tokenizer_dir: Path) -> StableDiffusionPipeline:
    return build_tiny_pipeline(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def tiny_config_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_pipe: StableDiffusionPipeline
) -> Path:
    """A diffusers config folder (no weights) matching the tiny pipeline."""
    root = tmp_path_factory.mktemp("tiny_config")
    shutil.copy(SD15_CONFIG_DIR / "model_index.json", root / "model_index.json")
    tiny_pipe.scheduler.save_config(root / "scheduler")
    tiny_pipe.unet.save_config(root / "unet")
    tiny_pipe.vae.save_config(root / "vae")
    tiny_pipe.text_encoder.config.save_pretrained(root / "text_encoder")
    tiny_pipe.tokenizer.save_pretrained(root / "tokenizer")
    assert not list(root.rglob("*.safetensors")) and not list(root.rglob("*.bin"))
    return root


def assert_same_weights(original: torch.nn.Module, loaded: torch.nn.Module) -> None:
    expected, actual = original.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


def generate(pipe: StableDiffusionPipeline, **kwargs: object) -> np.ndarray:
    return pipe(
        PROMPT,
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).images


def test_checkpoint_uses_ldm_layout(tiny_pipe: StableDiffusionPipeline, tmp_path: Path) -> None:
    path = save_as_ldm_checkpoint(tiny_pipe, tmp_path / "tiny.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        vae_q = handle.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight")
    prefixes = (
        "model.diffusion_model.",
        "first_stage_model.",
        "cond_stage_model.transformer.text_model.",
    )
    assert all(key.startswith(prefixes) for key in keys)
    assert vae_q.shape == (64, 64, 1, 1)  # LDM stores VAE attention as 1x1 convs
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.3.0.skip_connection.weight",
        "model.diffusion_model.output_blocks.5.1.proj_out.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight",
        "first_stage_model.decoder.mid.attn_1.proj_out.weight",
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ):
        assert key in keys, key


def test_round_trip_weights_and_pixels(
    tiny_pipe: StableDiffusionPipeline, tiny_config_dir: Path, tmp_path: Path
) -> None:
    path = save_as_ldm_checkpoint(tiny_pipe, tmp_path / "tiny.safetensors")
    loaded = load_single_file(path, config_dir=tiny_config_dir, torch_dtype=torch.float32)

    assert isinstance(loaded, StableDiffusionPipeline)
    assert loaded.safety_checker is None
    assert_same_weights(tiny_pipe.unet, loaded.unet)
    assert_same_weights(tiny_pipe.vae, loaded.vae)
    assert_same_weights(tiny_pipe.text_encoder, loaded.text_encoder)
    assert loaded.tokenizer(PROMPT).input_ids == tiny_pipe.tokenizer(PROMPT).input_ids

    expected = generate(tiny_pipe)
    assert expected.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(generate(loaded), expected)


def test_inpaint_unet_round_trip(
    tiny_tokenizer_dir: Path, tiny_config_dir: Path, tmp_path: Path
) -> None:
    pipe = build_tiny_pipeline(tiny_tokenizer_dir, unet_in_channels=9)
    path = save_as_ldm_checkpoint(pipe, tmp_path / "tiny-inpaint.safetensors")
    # The config folder says in_channels=4: the loader must take 9 from the checkpoint.
    loaded = load_single_file(
        path, config_dir=tiny_config_dir, pipeline_cls=StableDiffusionInpaintPipeline
    )

    assert isinstance(loaded, StableDiffusionInpaintPipeline)
    assert loaded.unet.config.in_channels == 9
    assert_same_weights(pipe.unet, loaded.unet)
    assert_same_weights(pipe.vae, loaded.vae)
    assert_same_weights(pipe.text_encoder, loaded.text_encoder)

    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    mask = np.zeros((1, 1, 64, 64), dtype=np.float32)
    mask[..., 16:48, 16:48] = 1.0
    reference = StableDiffusionInpaintPipeline(**pipe.components)
    inputs = {"image": torch.from_numpy(image), "mask_image": torch.from_numpy(mask)}
    np.testing.assert_array_equal(generate(loaded, **inputs), generate(reference, **inputs))


def test_half_precision_round_trip(
    tiny_tokenizer_dir: Path, tiny_config_dir: Path, tmp_path: Path
) -> None:
    pipe = build_tiny_pipeline(tiny_tokenizer_dir).to(torch.float16)
    path = save_as_ldm_checkpoint(pipe, tmp_path / "tiny-fp16.safetensors")
    loaded = load_single_file(path, config_dir=tiny_config_dir, torch_dtype=torch.float16)
    assert_same_weights(pipe.unet, loaded.unet)
    assert_same_weights(pipe.vae, loaded.vae)
    assert_same_weights(pipe.text_encoder, loaded.text_encoder)


def test_tiny_tokenizer_vocab_layout(tiny_tokenizer_dir: Path) -> None:
    vocab = json.loads((tiny_tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    chars = list(bytes_to_unicode().values())
    assert len(vocab) == 256 * 2 + len(TINY_MERGES) + 2
    assert vocab[chars[0]] == 0 and vocab[chars[0] + "</w>"] == 256
    assert vocab["cat</w>"] == 513 and vocab["<|endoftext|>"] == len(vocab) - 1
    tokenizer = CLIPTokenizer.from_pretrained(tiny_tokenizer_dir)
    ids = tokenizer("a cat").input_ids
    assert ids == [
        vocab["<|startoftext|>"],
        vocab["a</w>"],
        vocab["cat</w>"],
        vocab["<|endoftext|>"],
    ]


def test_shipped_sd15_configs_load() -> None:
    unet_config = UNet2DConditionModel.load_config(SD15_CONFIG_DIR, subfolder="unet")
    vae_config = AutoencoderKL.load_config(SD15_CONFIG_DIR, subfolder="vae")
    text_config = CLIPTextConfig.from_pretrained(SD15_CONFIG_DIR / "text_encoder")
    scheduler = PNDMScheduler.from_pretrained(SD15_CONFIG_DIR, subfolder="scheduler")
    model_index = StableDiffusionPipeline.load_config(SD15_CONFIG_DIR)

    assert model_index["_class_name"] == "StableDiffusionPipeline"
    assert tuple(unet_config["block_out_channels"]) == (320, 640, 1280, 1280)
    assert unet_config["cross_attention_dim"] == 768 and unet_config["sample_size"] == 64
    assert vae_config["scaling_factor"] == 0.18215 and vae_config["latent_channels"] == 4
    assert text_config.hidden_act == "quick_gelu" and text_config.vocab_size == CLIP_VOCAB_SIZE
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012

    # Instantiating without memory proves the configs describe the real SD1.5 networks.
    with init_empty_weights():
        sizes = {
            "unet": UNet2DConditionModel.from_config(unet_config),
            "vae": AutoencoderKL.from_config(vae_config),
            "text_encoder": CLIPTextModel(text_config),
        }
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in sizes.items()}
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_shipped_sd15_tokenizer_matches_openai_clip() -> None:
    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIG_DIR / "tokenizer")
    assert len(tokenizer) == CLIP_VOCAB_SIZE and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    vocab = json.loads((SD15_CONFIG_DIR / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    merges = (
        (SD15_CONFIG_DIR / "tokenizer" / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    )
    assert vocab == build_clip_vocab([tuple(line.split()) for line in merges])


def test_ensure_clip_tokenizer_derives_from_bpe_file(tmp_path: Path) -> None:
    """Rebuild the shipped files from a BPE file in OpenAI's gzipped format."""
    shipped = SD15_CONFIG_DIR / "tokenizer"
    merges = (shipped / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    bpe_file = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    header = '"bpe_simple_vocab_16e6.txt#version: 0.2'
    bpe_file.write_bytes(gzip.compress("\n".join([header, *merges, "extra merge"]).encode()))

    out = ensure_clip_tokenizer(tmp_path / "tokenizer", bpe_path=bpe_file)
    for name in ("vocab.json", "merges.txt"):
        assert (out / name).read_bytes() == (shipped / name).read_bytes(), name
    ids = CLIPTokenizer.from_pretrained(out)("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
