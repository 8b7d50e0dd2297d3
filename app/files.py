"""Writing a whole folder so that readers see either the old one or the new one, never a
half-written one: build it in a temporary folder beside the destination, then swap."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing_folder(dest: Path, prefix: str = ".building-") -> Iterator[Path]:
    """Yield an empty folder beside ``dest``; when the block succeeds it becomes ``dest``
    (an existing ``dest`` is moved aside first and removed after), when it fails it is
    removed. ``prefix`` names the temporary folder, so a startup sweep can find leftovers
    of a killed process."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
