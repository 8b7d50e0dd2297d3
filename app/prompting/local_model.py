"""An optional local causal LM that continues a prompt with more terms (MagicPrompt-style).

The operator downloads a small transformers causal LM themselves (for example a MagicPrompt
GPT-2 fine-tuned on Stable Diffusion prompts) and points ``BILDWERK_PROMPT_MODEL_DIR`` at the
folder. Nothing is ever downloaded: tokenizer and model load with ``local_files_only=True``
(and ``trust_remote_code`` stays off), lazily on first use, on the CPU.

:meth:`LocalPromptModel.continue_prompt` samples a continuation of the prompt with a seeded
RNG (forked, so the process-wide torch RNG is left untouched) and returns only the *new* part,
cut into clean comma separated terms: no special tokens, URLs, control characters, foreign
script soup, duplicates, over-long phrases or terms the prompt already says.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.9
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 50
DEFAULT_MAX_NEW_TOKENS = 48
MAX_NEW_TOKENS_LIMIT = 256
MAX_TERMS = 12
MAX_TERM_WORDS = 8

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
# Special-token spellings that survive decoding when a tokenizer does not mark them special.
_SPECIAL_RE = re.compile(
    r"<\|[^|<>]{0,40}\|>|</?s>|<(?:pad|unk|mask|bos|eos)>|\[(?:PAD|UNK|CLS|SEP|MASK)\]",
    re.IGNORECASE,
)
_URL_RE = re.compile(
    r"(?:https?://|ftp://|www\.)\S*|\S+@\S+\.\w+|\b[\w-]+\.(?:com|net|org|io|ai|de|png|jpe?g)\b",
    re.IGNORECASE,
)
_SPLIT_RE = re.compile(r"[,;|]")
_WEIGHT_SUFFIX_RE = re.compile(r":\s*\d+(?:\.\d+)?$")  # "(term:1.2)" attention weights
_BRACKETS = str.maketrans("", "", "()[]{}<>")
_EDGE_CHARS = " \t-_*#~'\".:;!?/\\+&"
_ALLOWED_PUNCT = set(" -'&.+/")
_EDGE_STOPWORDS = {
    "a", "an", "the", "of", "and", "or", "by", "with", "in", "on", "at", "to", "for", "from",
    "as", "is", "are",
}
# Not "by", "in", "on", "a"/"the": "by greg rutkowski", "in a misty forest" are fine terms.
_LEADING_STOPWORDS = {"and", "or", "of", "with", "is", "are", "as"}
_STOPWORDS = _EDGE_STOPWORDS | {"it", "this", "that", "very", "its", "his", "her", "their"}


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _clean_term(raw: str) -> str | None:
    """One candidate term cleaned up, or None when it is not worth keeping."""
    if _URL_RE.search(raw):
        return None
    term = "".join(c if c.isprintable() else " " for c in raw)
    term = term.translate(_BRACKETS)
    term = _WEIGHT_SUFFIX_RE.sub("", " ".join(term.split()))
    term = term.strip(_EDGE_CHARS)
    if not term:
        return None
    chars = [c for c in term if not c.isspace()]
    ascii_letters = sum(c.isascii() and c.isalpha() for c in chars)
    foreign = sum(not c.isascii() for c in chars)
    symbols = sum(c.isascii() and not c.isalnum() and c not in _ALLOWED_PUNCT for c in chars)
    if ascii_letters == 0 or (foreign + symbols) * 5 > len(chars):
        return None
    # Few enough odd characters to keep the term: drop the stray symbols themselves.
    term = "".join(
        c for c in term if c.isalnum() or c in _ALLOWED_PUNCT or not c.isascii() and c.isalpha()
    )
    words: list[str] = []
    for word in term.split():  # "castle castle golden" -> "castle golden"
        if not words or word.lower() != words[-1].lower():
            words.append(word)
    while words and words[-1].lower() in _EDGE_STOPWORDS:
        words.pop()
    while words and words[0].lower() in _LEADING_STOPWORDS:
        words.pop(0)
    term = " ".join(words).strip(_EDGE_CHARS)
    if len(term) < 2 or not words or len(words) > MAX_TERM_WORDS:
        return None
    if all(w.lower() in _STOPWORDS for w in words):
        return None
    return term


def clean_terms(continuation: str, context: str, *, limit: int = MAX_TERMS) -> list[str]:
    """Split generated text into clean, new, distinct terms (at most ``limit``).

    ``context`` is the text the model continued: terms it already contains are skipped.
    Only the first line is used (MagicPrompt-style models start a new prompt on a new line).
    """
    text = _SPECIAL_RE.sub(" ", continuation.split("\n", 1)[0])
    known = _normalize(context)
    seen: set[str] = set()
    out: list[str] = []
    for raw in _SPLIT_RE.split(text):
        term = _clean_term(raw)
        if term is None:
            continue
        key = _normalize(term)
        if key in seen or re.search(rf"(?<!\w){re.escape(key)}(?!\w)", known):
            continue
        seen.add(key)
        out.append(term)
        if len(out) >= limit:
            break
    return out


class LocalPromptModel:
    """A causal LM on disk that continues prompts. Loads once, on first use; thread-safe."""

    def __init__(self, path: Path, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        self.path = Path(path)
        self.max_new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS_LIMIT))
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None
        self._parameters: int | None = None
        self._error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def from_dir(
        cls, path: Path | str | None, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> LocalPromptModel | None:
        """The model at ``path``, or None when no path is configured.

        Raises ValueError right away (at startup) when the folder is missing or does not look
        like a saved transformers model, so a misconfiguration is loud rather than silent.
        """
        if path is None or str(path).strip() == "":
            return None
        folder = Path(path).expanduser()
        where = f"prompt model dir {str(folder)!r} (BILDWERK_PROMPT_MODEL_DIR)"
        if not folder.is_dir():
            raise ValueError(f"{where} does not exist or is not a folder")
        if not (folder / "config.json").is_file():
            raise ValueError(f"{where} has no config.json; expected a saved transformers model")
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise ValueError(f"{where} has no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
        if not any(any(folder.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
            raise ValueError(f"{where} has no weights (*.safetensors or *.bin)")
        return cls(folder, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer and model now (idempotent). Raises RuntimeError if they cannot."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        if self._error is not None:
            raise RuntimeError(self._error)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                str(self.path), local_files_only=True, dtype=torch.float32
            )
            model.to("cpu").eval()
        except Exception as exc:
            self._error = f"cannot load prompt model from {str(self.path)!r}: {exc}"
            raise RuntimeError(self._error) from exc
        self._tokenizer = tokenizer
        self._parameters = sum(p.numel() for p in model.parameters())
        self._model = model
        log.info("loaded prompt model %s (%d parameters)", self.path, self._parameters)

    def status(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "loaded": self.loaded,
            "parameters": self._parameters,
            "max_new_tokens": self.max_new_tokens,
            "error": self._error,
        }

    # ---------------------------------------------------------------------------- generation

    def continue_prompt(
        self,
        text: str,
        *,
        seed: int,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """New terms continuing ``text``: seeded sampling, deterministic per ``seed``.

        ``temperature`` <= 0 means greedy decoding. Returns at most 12 clean terms, none of
        them already in ``text``; an empty list when the model produced nothing usable.
        """
        import torch

        prompt = " ".join((text or "").split()).rstrip(" ,")
        # End on a separator so the model starts a new term instead of extending the last one.
        prompt = f"{prompt}," if prompt else ""
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        limit = max(1, min(int(limit), MAX_NEW_TOKENS_LIMIT))
        temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
        sampling: dict[str, Any]
        if temperature <= 0:
            sampling = {"do_sample": False}
        else:
            top_p = DEFAULT_TOP_P if top_p is None else min(max(float(top_p), 0.01), 1.0)
            top_k = DEFAULT_TOP_K if top_k is None else max(int(top_k), 0)
            sampling = {
                "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k,
            }

        with self._lock:
            self._load_locked()
            tok, model = self._tokenizer, self._model
            source = prompt or tok.bos_token or tok.eos_token or ""
            ids = tok(source, return_tensors="pt")["input_ids"]
            max_pos = getattr(model.config, "n_positions", None) or getattr(
                model.config, "max_position_embeddings", None
            )
            if max_pos and ids.shape[1] + limit > max_pos:
                ids = ids[:, -max(1, max_pos - limit):]  # keep the end: that is what continues
            eos = tok.eos_token_id
            pad = tok.pad_token_id if tok.pad_token_id is not None else eos
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                torch.default_generator.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=limit,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    **sampling,
                )
            new_ids = out[0, ids.shape[1]:].tolist()
            continuation = tok.decode(new_ids, skip_special_tokens=True)

        # Cut off at the token limit the last term may be unfinished: drop it.
        finished = len(new_ids) < limit or (eos is not None and eos in new_ids)
        first_line = continuation.split("\n", 1)[0]
        if not finished and "\n" not in continuation and not first_line.rstrip().endswith(","):
            first_line = first_line.rsplit(",", 1)[0] if "," in first_line else ""
        return clean_terms(first_line, text)
