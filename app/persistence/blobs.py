"""Content-addressed file store: each file lives at ``<root>/<sha[:2]>/<sha>``.

A file is written to a temporary path (``.tmp-*``) in the same directory, flushed and
renamed into place (and the rename made durable), so a reader never sees a half-written
file. The blob's row is added after the file is in place, and a record names a blob only
after ``put`` returned, so a record never points at a missing or partial file. A process
killed mid-write leaves only a ``.tmp-*`` file, which :func:`sweep_temp_files` removes at
the next start.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from app.errors import NotFound
from app.persistence.database import Database
from app.persistence.orm import BlobRow

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
TEMP_PREFIX = ".tmp-"


def is_sha256(value: str) -> bool:
    return bool(_SHA256.fullmatch(value))


class BlobStore:
    def __init__(self, root: Path, db: Database) -> None:
        self.root = root
        self.db = db
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise NotFound(f"blob {sha256!r} not found", param="sha256")
        sha256 = sha256.lower()
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, content_type: str) -> str:
        """Store ``data`` (idempotent) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                _fsync_dir(path.parent)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        try:
            with self.db.session() as s:
                if s.get(BlobRow, sha) is None:
                    s.add(BlobRow(sha256=sha, content_type=content_type, size=len(data),
                                  created_at=datetime.now(UTC)))
        except IntegrityError:
            pass  # the same content stored by a concurrent request: same row, same file
        return sha

    def get(self, sha256: str) -> tuple[BlobRow, Path]:
        path = self.path_for(sha256)
        sha256 = path.name
        with self.db.session() as s:
            row = s.get(BlobRow, sha256)
        if row is None or not path.exists():
            raise NotFound(f"blob {sha256} not found", param="sha256")
        return row, path

    def read(self, sha256: str) -> bytes:
        return self.get(sha256)[1].read_bytes()


def sweep_temp_files(root: Path) -> int:
    """Remove the temporary files of writes that never finished (a killed process); call
    at startup, before anything writes. Returns how many were removed."""
    removed = 0
    for tmp in [*root.glob(f"{TEMP_PREFIX}*"), *root.glob(f"*/{TEMP_PREFIX}*")]:
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
