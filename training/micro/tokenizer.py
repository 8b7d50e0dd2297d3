"""Our own CLIP BPE tokenizer: every caption word is one whole token.

It is an ordinary ``CLIPTokenizer`` (byte-level base vocabulary, so any text tokenizes:
unknown words fall back to sub-words and characters) whose merges build exactly the words
of :func:`training.micro.shapes.vocabulary`.
"""

from __future__ import annotations

from pathlib import Path

from app.pipelines.single_file.clip_tokenizer import write_clip_tokenizer

MAX_LENGTH = 16  # captions are <= 12 tokens; 77 positions of padding drown the words


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that build each word (ending in ``</w>``) from its characters."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    return merges


def write_micro_tokenizer(dest: Path, words: list[str]) -> Path:
    """Write the tokenizer into ``dest``; check that each word is a single token.

    BPE applies merges by rank, not left to right, so a word can end up split by another
    word's merges; such pieces get an extra merge until every word is one token.
    """
    from transformers import CLIPTokenizer

    merges = word_merges(words)
    for _ in range(100):
        write_clip_tokenizer(dest, merges, model_max_length=MAX_LENGTH)
        tokenizer = CLIPTokenizer.from_pretrained(dest)
        added = False
        for word in words:
            pieces = tokenizer.tokenize(word)
            if len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                if pair not in merges:
                    merges.append(pair)
                    added = True
        if not added:
            break
    else:  # pragma: no cover - cannot happen for plain lowercase words
        raise RuntimeError("tokenizer merges did not converge")
    bad = [w for w in words if len(tokenizer.tokenize(w)) != 1]
    if bad:
        raise RuntimeError(f"words not single tokens: {bad}")
    return dest
