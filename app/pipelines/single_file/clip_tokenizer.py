"""Build Hugging Face ``CLIPTokenizer`` files (vocab.json, merges.txt) offline.

OpenAI's CLIP BPE table ``bpe_simple_vocab_16e6.txt.gz`` is shipped inside the
``open_clip_torch`` wheel (and ``clip-anytorch``). This module derives the
49408-entry ``vocab.json`` and ``merges.txt`` from it exactly the way OpenAI's
``SimpleTokenizer`` builds its vocabulary:

1. the 256 ``bytes_to_unicode`` characters,
2. the same 256 characters with ``</w>`` appended,
3. the first 48894 merges, each joined into one token,
4. ``<|startoftext|>`` and ``<|endoftext|>``.

The same builder with no merges gives the tiny byte-level tokenizers used in tests.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from functools import lru_cache
from pathlib import Path

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CLIP_NUM_MERGES = 49152 - 256 - 2  # 48894, as in OpenAI's SimpleTokenizer
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# Distributions known to ship OpenAI's BPE file, and the folder it lives in.
BPE_DISTRIBUTIONS = (("open_clip_torch", "open_clip"), ("clip-anytorch", "clip"))


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2/CLIP byte-level BPE)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, (chr(c) for c in code_points), strict=True))


def build_clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Return the CLIP token->id mapping for ``merges`` (SimpleTokenizer order)."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in CLIP vocabulary")
    return vocab


def read_bpe_merges(bpe_path: Path, num_merges: int = CLIP_NUM_MERGES) -> list[tuple[str, str]]:
    """Read the merge pairs from OpenAI's gzipped BPE file (first line is a header)."""
    lines = gzip.decompress(Path(bpe_path).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : num_merges + 1]]
    if len(merges) != num_merges or any(len(pair) != 2 for pair in merges):
        raise ValueError(f"{bpe_path} is not a CLIP BPE merges file")
    return merges  # type: ignore[return-value]


def find_clip_bpe_file() -> Path | None:
    """Locate ``bpe_simple_vocab_16e6.txt.gz`` in an installed distribution.

    Uses package metadata only, so the (heavy) packages are never imported.
    """
    for dist_name, package_dir in BPE_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        candidate = Path(str(dist.locate_file(f"{package_dir}/{BPE_FILE_NAME}")))
        if candidate.is_file():
            return candidate
    return None


def write_clip_tokenizer(
    dest_dir: Path,
    merges: list[tuple[str, str]],
    model_max_length: int = CLIP_MAX_LENGTH,
    pad_token: str = EOS_TOKEN,
) -> Path:
    """Write a complete ``CLIPTokenizer`` folder for ``merges`` into ``dest_dir``.

    ``pad_token`` is ``<|endoftext|>`` for OpenAI CLIP (SD1.x, SDXL ``tokenizer``) and
    ``"!"`` for the OpenCLIP tokenizers (SD2.x ``tokenizer``, SDXL ``tokenizer_2``).
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    vocab = build_clip_vocab(merges)
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = "".join(f"{a} {b}\n" for a, b in merges)
    (dest / "merges.txt").write_text("#version: 0.2\n" + merge_lines, encoding="utf-8")
    specials = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": pad_token,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **specials,
    }
    (dest / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dest


def ensure_clip_tokenizer(dest_dir: Path | str, bpe_path: Path | str | None = None) -> Path:
    """Make sure ``dest_dir`` holds the real CLIP ViT-L/14 tokenizer files.

    Existing ``vocab.json`` and ``merges.txt`` are kept. Otherwise they are derived
    from ``bpe_path`` or, by default, from the BPE file of an installed
    ``open_clip_torch``/``clip-anytorch``. Returns ``dest_dir`` as a ``Path``.
    """
    dest = Path(dest_dir)
    if (dest / "vocab.json").is_file() and (dest / "merges.txt").is_file():
        return dest
    source = Path(bpe_path) if bpe_path is not None else find_clip_bpe_file()
    if source is None:
        raise FileNotFoundError(
            f"{BPE_FILE_NAME} not found: pass bpe_path or install open_clip_torch"
            " (pip install --no-deps open_clip_torch)"
        )
    write_clip_tokenizer(dest, read_bpe_merges(source))
    if len(json.loads((dest / "vocab.json").read_text(encoding="utf-8"))) != CLIP_VOCAB_SIZE:
        raise ValueError(
            f"derived CLIP vocabulary from {source} does not have {CLIP_VOCAB_SIZE} entries"
        )
    return dest
