"""Checkpoints as AUTOMATIC1111 names them: a title ``name.safetensors [hash10]`` (the hash
is the first ten hex digits of the file's sha256; until the server has hashed a file the
title is the bare name, as in AUTOMATIC1111), a model name (the stem), the sha256.

A request may name a checkpoint by any of these, or by our model id, like
AUTOMATIC1111's checkpoint aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.pipelines.registry import ModelEntry, ModelRegistry

# the " [hash]" at the end of a title; searched (its start is a "[", so each try is short),
# the name is what comes before it. (``^(.*?)\s*\[…\]$`` backtracked quadratically on a
# long run of spaces.)
_TITLE_HASH = re.compile(r"\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
MAX_NAME_CHARS = 255  # no checkpoint is named by more


@dataclass(frozen=True)
class Checkpoint:
    entry: ModelEntry
    name: str  # relative file name, e.g. "my-sd15.safetensors" (folders: their name)
    model_name: str
    sha256: str | None
    models_dir: Path | None = None

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    def item(self) -> dict:
        """GET /sdapi/v1/sd-models."""
        path = self.entry.path
        config = path.with_suffix(".yaml") if path.is_file() else None
        filename = shown_path(path, self.models_dir) if self.models_dir else None
        return {"title": self.title, "model_name": self.model_name, "hash": self.shorthash,
                "sha256": self.sha256, "filename": filename or self.name,
                "config": shown_path(config, self.models_dir)
                if config is not None and self.models_dir and config.exists() else None}

    def names(self) -> set[str]:
        names = {self.title, self.name, self.model_name, self.entry.id}
        if self.sha256:
            names |= {self.sha256, self.shorthash}
        return {n.lower() for n in names if n}


def checkpoint(registry: ModelRegistry, entry: ModelEntry) -> Checkpoint:
    if entry.repo_id:
        name = entry.repo_id
    elif entry.embedded:
        name = entry.id
    else:
        try:
            name = entry.path.relative_to(registry.models_dir).as_posix()
        except ValueError:
            name = entry.path.name
    model_name = re.sub(r"\.(safetensors|ckpt)$", "", name).replace("/", "_")
    return Checkpoint(entry=entry, name=name, model_name=model_name,
                      sha256=registry.content_hash(entry), models_dir=registry.models_dir)


def shown_path(path: Path, models_dir: Path) -> str | None:
    """``path`` relative to the models dir (``vae/x.safetensors``), as the catalogues show
    it: the server's own folders are none of a client's business. None when it lies
    elsewhere (a Hugging Face cache, the embedded model)."""
    for base in (models_dir, models_dir.resolve()):
        for candidate in (path, path.resolve()):
            try:
                return candidate.relative_to(base).as_posix()
            except ValueError:
                continue
    return None


def checkpoints(registry: ModelRegistry) -> list[Checkpoint]:
    return [checkpoint(registry, e) for e in registry.list()]


def find(registry: ModelRegistry, text: str) -> Checkpoint | None:
    """The checkpoint ``text`` names: a title (with or without its hash), file name, model
    name, model id, short hash or sha256."""
    if len(text) > MAX_NAME_CHARS:
        return None
    wanted = text.strip().lower()
    match = _TITLE_HASH.search(wanted)
    candidates = [wanted] + ([wanted[:match.start()].strip()] if match else [])
    every = checkpoints(registry)
    for candidate in candidates:
        for item in every:
            if candidate in item.names():
                return item
    return None
