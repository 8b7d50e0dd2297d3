"""Content hashes of checkpoints, computed once in the background and cached on disk.

A checkpoint's hash is the sha256 of its file; a diffusers folder's is the sha256 of
the sorted ``relative path + file sha256`` lines of its weight files. The cache in
``<data_dir>/model_hashes.json`` is keyed by path and invalidated by size or mtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("bildwerk.hashes")
_WEIGHTS = {".safetensors", ".ckpt", ".bin", ".pt", ".pth"}


def file_sha256(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return ";".join(f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def content_sha256(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    lines = [f"{p.relative_to(path).as_posix()} {file_sha256(p)}"
             for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in _WEIGHTS]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class HashCache:
    def __init__(self, cache_file: Path) -> None:
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        if cache_file.exists():
            try:
                self._data = json.loads(cache_file.read_text())
            except (OSError, ValueError):
                self._data = {}
        self._worker: threading.Thread | None = None
        self._pending: list[Path] = []

    def get(self, path: Path) -> str | None:
        with self._lock:
            item = self._data.get(str(path.resolve()))
        if item is None:
            return None
        try:
            return item["sha256"] if item["stamp"] == _stamp(path) else None
        except OSError:
            return None

    def compute_in_background(self, paths: list[Path]) -> None:
        """Queue paths without a valid hash; one background thread drains the queue."""
        with self._lock:
            self._pending.extend(p for p in paths if p not in self._pending)
            if self._worker is not None and self._worker.is_alive():
                return
            self._worker = threading.Thread(target=self._drain, name="model-hashes",
                                            daemon=True)
            self._worker.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                path = self._pending.pop(0)
            if self.get(path) is None:
                self._compute([path])

    def wait(self, timeout: float | None = None) -> None:
        if self._worker is not None:
            self._worker.join(timeout)

    def _compute(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                stamp, sha = _stamp(path), content_sha256(path)
            except OSError as exc:
                log.warning("cannot hash %s: %s", path, exc)
                continue
            with self._lock:
                self._data[str(path.resolve())] = {"stamp": stamp, "sha256": sha}
                self._save()

    def _save(self) -> None:
        tmp = self.cache_file.with_suffix(".tmp")
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self._data, indent=1))
        os.replace(tmp, self.cache_file)
