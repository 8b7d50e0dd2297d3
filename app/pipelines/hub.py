"""Hugging Face repo ids as models (``BILDWERK_HF_MODELS``), resolved through the local
hub cache and, when the hub can be reached, downloaded by ``huggingface_hub``.

``HF_HUB_OFFLINE=1`` is respected: then only what the cache already holds is used and
nothing touches the network. At refresh only the small config files are fetched (to
probe the model); weights come when the model is first loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("bildwerk.hub")
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/*config.json", "*/*.txt",
                   "*/*.json"]
WEIGHT_PATTERNS = [*CONFIG_PATTERNS, "*/*.safetensors"]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_snapshot(repo_id: str, cache_dir: Path | None, weights: bool) -> Path | None:
    """The local snapshot folder of ``repo_id`` (configs, or configs and weights), or
    None when it is neither cached nor downloadable now."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            repo_id, allow_patterns=WEIGHT_PATTERNS if weights else CONFIG_PATTERNS,
            cache_dir=str(cache_dir) if cache_dir else None, local_files_only=hub_offline()))
    except Exception as exc:  # not cached offline, unreachable, unknown repo, no access
        log.warning("Hugging Face model %s is not available: %s", repo_id, exc)
        return None
