"""A tiny random causal LM on disk, MagicPrompt-shaped, for the local prompt model tests.

Built offline in a fraction of a second: a two-layer GPT-2 with seeded random weights and a
word-level tokenizer over a few dozen prompt words, saved with ``save_pretrained`` so that
``AutoTokenizer``/``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)`` load it
like a real downloaded model. Its continuations are random word salad by design; a few
deliberately ugly tokens (a URL, non-Latin script, a stray symbol, a fake special marker) let
the tests see the term cleaning at work.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
UNK = "<unk>"
# Each word also comes as "word," so that about every other token ends a term.
WORDS = [
    "cinematic", "lighting", "detailed", "highly", "intricate", "4k", "8k", "hdr",
    "sharp", "focus", "octane", "render", "unreal", "engine", "trending", "on", "artstation",
    "concept", "art", "digital", "painting", "matte", "illustration", "by", "greg",
    "rutkowski", "soft", "golden", "hour", "volumetric", "fog", "dramatic", "sky",
    "portrait", "landscape", "elegant", "fantasy", "smooth", "masterpiece", "vivid",
    "colors", "moody", "atmosphere", "wide", "angle", "bokeh", "film", "grain", "a", "the",
    "lake", "cat", "castle", "mountain", "of",
]
# Noise the cleaning must remove.
NOISE = ["https://example.com/x.png", "日本語", "★", "<|im_end|>"]


def _vocab() -> dict[str, int]:
    vocab = {EOS: 0, UNK: 1, ",": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
        vocab.setdefault(f"{word},", len(vocab))
    for word in NOISE:
        vocab.setdefault(word, len(vocab))
    return vocab


def build_tiny_lm(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny LM (config, safetensors weights, tokenizer) to ``path``; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    # Split on whitespace only: "cinematic," stays one token (unknown words become <unk>).
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Join with spaces and tidy " ," -> "," like GPT-2's clean-up would.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=EOS,
    )
    fast.save_pretrained(path)

    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=vocab[EOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(path)
    return path
