"""Content-addressed blob store: each blob is the object ``<sha[:2]>/<sha>`` of a store
(app/persistence/blob_stores.py): the folder ``<data_dir>/blobs`` by default, another
folder (``file:///…``) or an S3-compatible bucket (``s3://bucket/prefix``), all written
through obstore.

Objects are written create-only: a put that finds the object there already is done (the
same hash, the same content), so concurrent writers of the same content race safely. In a
folder obstore writes a staging file (``<sha>#<n>``) and links it into place, which is then
made durable (fsync), so a reader never sees a half-written file; a process killed
mid-write leaves only a staging file (or a ``.tmp-*`` file of older versions), which
:func:`sweep_temp_files` removes at the next start. In a bucket an object appears whole or
not at all. The blob's row is added after the object is in place, and a record names a
blob only after ``put`` returned, so a record never points at a missing or partial blob.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from sqlalchemy.exc import IntegrityError

from app.errors import NotFound
from app.persistence.blob_stores import (
    BlobLocation,
    check_reachable,
    folder_location,
    key_for,
    open_store,
    parse_location,
    put_create,
    settings_location,
)
from app.persistence.database import Database
from app.persistence.orm import BlobRow

if TYPE_CHECKING:
    from app.config import Settings

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
TEMP_PREFIX = ".tmp-"
STAGING_MARK = "#"  # obstore's LocalStore stages a write at "<path>#<n>"
STREAM_CHUNK = 256 * 1024


def is_sha256(value: str) -> bool:
    return bool(_SHA256.fullmatch(value))


@dataclass
class OpenedBlob:
    """A blob being read from a bucket: its size and its bytes, as they arrive."""

    size: int
    result: Any  # obstore's GetResult

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.result.stream(min_chunk_size=STREAM_CHUNK):
            yield bytes(chunk)


class BlobStore:
    """``root``: a folder (a ``Path``), or a store URL (``file:///…``, ``s3://…``), or a
    parsed :class:`BlobLocation`. ``check``: fail now (:class:`BlobStoreUnusable`) when
    the store cannot be reached, instead of at the first request."""

    def __init__(self, root: Path | str | BlobLocation, db: Database, *,
                 endpoint_url: str | None = None, check: bool = False) -> None:
        if isinstance(root, BlobLocation):
            location = root
        elif isinstance(root, Path):
            location = folder_location(root)
        else:
            location = parse_location(root, endpoint_url)
        self.location = location
        self.root: Path | None = location.local_root  # None: a bucket
        self.db = db
        if check:
            check_reachable(location)
        self.store = open_store(location)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> BlobStore:
        """The store the settings name, checked to be reachable."""
        return cls(settings_location(settings), db, check=True)

    @property
    def url(self) -> str:
        return self.location.url

    def path_for(self, sha256: str) -> Path:
        """The file of a blob in a folder store (raises for a bucket)."""
        if not is_sha256(sha256):
            raise NotFound(f"blob {sha256!r} not found", param="sha256")
        if self.root is None:
            raise TypeError(f"the blob store {self.url} is no local folder")
        sha256 = sha256.lower()
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, content_type: str) -> str:
        """Store ``data`` (idempotent, create-only) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        key = key_for(sha)
        if self.root is None:
            put_create(self.store, key, data)
        else:
            path = self.path_for(sha)
            if not path.exists() and put_create(self.store, key, data):
                _fsync(path)
                _fsync(path.parent)
        try:
            with self.db.session() as s:
                if s.get(BlobRow, sha) is None:
                    s.add(BlobRow(sha256=sha, content_type=content_type, size=len(data),
                                  created_at=datetime.now(UTC)))
        except IntegrityError:
            pass  # the same content stored by a concurrent request: same row, same object
        return sha

    def row(self, sha256: str) -> BlobRow:
        """The blob's row (content type, size); NotFound for an unknown blob."""
        if not is_sha256(sha256):
            raise NotFound(f"blob {sha256!r} not found", param="sha256")
        sha256 = sha256.lower()
        with self.db.session() as s:
            row = s.get(BlobRow, sha256)
        if row is None:
            raise NotFound(f"blob {sha256} not found", param="sha256")
        return row

    def get(self, sha256: str) -> tuple[BlobRow, Path]:
        """Row and file of a blob in a folder store; NotFound when either is missing."""
        path = self.path_for(sha256)
        row = self.row(path.name)
        if not path.exists():
            raise NotFound(f"blob {path.name} not found", param="sha256")
        return row, path

    def exists(self, sha256: str) -> bool:
        """Whether the store holds the blob's bytes (the database is not asked)."""
        if not is_sha256(sha256):
            return False
        if self.root is not None:
            return self.path_for(sha256).is_file()
        try:
            obstore.head(self.store, key_for(sha256))
        except FileNotFoundError:
            return False
        return True

    def open(self, sha256: str) -> OpenedBlob:
        """Start reading a blob (for streaming); NotFound when the store lacks it."""
        try:
            result = obstore.get(self.store, key_for(sha256))
        except FileNotFoundError as exc:
            raise NotFound(f"blob {sha256.lower()} not found", param="sha256") from exc
        return OpenedBlob(size=int(result.meta["size"]), result=result)

    def read(self, sha256: str) -> bytes:
        row = self.row(sha256)
        if self.root is not None:
            try:
                return self.path_for(row.sha256).read_bytes()
            except FileNotFoundError as exc:
                raise NotFound(f"blob {row.sha256} not found", param="sha256") from exc
        return bytes(self.open(row.sha256).result.bytes())

    def read_raw(self, sha256: str) -> bytes | None:
        """The stored bytes without asking the database; None when missing."""
        try:
            return bytes(obstore.get(self.store, key_for(sha256)).bytes())
        except FileNotFoundError:
            return None


def sweep_temp_files(root: Path) -> int:
    """Remove the temporary files of writes that never finished (a killed process); call
    at startup, before anything writes. Returns how many were removed."""
    removed = 0
    for tmp in [*root.glob(f"{TEMP_PREFIX}*"), *root.glob(f"*/{TEMP_PREFIX}*"),
                *root.glob(f"*/*{STAGING_MARK}*")]:
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _fsync(path: Path) -> None:
    """Make a file, or a rename in a directory, durable (POSIX; a no-op where
    unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
