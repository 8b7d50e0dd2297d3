"""Is the configured database fit to start on? Checked before anything connects to it.

- A SQLite file must pass ``PRAGMA quick_check``; a damaged one stops the start
  (:class:`DatabaseDamaged`).
- A database that is missing, empty (zero bytes) or without a schema (no Alembic version)
  is a fresh install only while the blob store is empty too. Beside the blobs of an earlier
  install it means the database was lost or replaced: starting on it would drop every API
  key and record (and, in auth mode ``auto``, make loopback callers keyless admins), so the
  start is refused (:class:`DatabaseMissing`) until the operator restores a backup or runs
  ``bildwerk db init --force``.

SQLAlchemy's SQLite driver creates a missing file on connect, so the file is looked at
before any engine touches it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.errors import DatabaseDamaged, DatabaseMissing
from app.persistence.blob_stores import local_blobs_root
from app.persistence.blobs import TEMP_PREFIX
from app.persistence.database import Database, make_engine

DOCS = "docs/security.md, 'A damaged or lost database'"


def check_database(settings: Settings) -> None:
    """Raise unless the database may be used: intact, and not a lost one beside old blobs."""
    url = settings.resolved_database_url
    missing = why_uninitialised(url)
    blobs_dir = local_blobs_root(settings)  # a bucket is not looked into here
    if missing and blobs_dir is not None and blobs_present(blobs_dir):
        raise DatabaseMissing(
            f"the database {describe(url)} {missing}, but {blobs_dir} holds files of "
            "an earlier install: the database was probably lost or replaced. Bildwerk does "
            "not start on a new, empty database here, because every API key and record would "
            "be gone. Restore the database from a backup (see " + DOCS + "), or, to start "
            "afresh on purpose, run `bildwerk db init --force`.")


def init_database(settings: Settings, *, force: bool) -> str:
    """Create or migrate the database (``bildwerk db init``); refuses what
    :func:`check_database` refuses unless ``force``. Returns what it did, in words."""
    url = settings.resolved_database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not force:
        check_database(settings)
    missing = why_uninitialised(url)  # a damaged SQLite file raises, even with force
    db = Database(url)
    try:
        db.migrate()
    finally:
        db.dispose()
    if missing:
        return f"created the database {describe(url)} (it {missing})"
    return f"the database {describe(url)} was already initialised; migrated to the newest schema"


def why_uninitialised(url: str) -> str | None:
    """Why the database counts as not yet created (``"is missing"``, ``"is empty (0
    bytes)"``, ``"has no schema"``), or None when it has one. Raises
    :class:`DatabaseDamaged` for a SQLite file that fails its quick check."""
    path = sqlite_file(url)
    if path is not None:
        if not path.exists():
            return "is missing"
        if _zero_length(path):
            return "is empty (0 bytes)"
        quick_check(path)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return "has no schema (no tables)"
            if conn.execute(text("SELECT version_num FROM alembic_version")).first() is None:
                return "has no schema (no Alembic version)"
    finally:
        engine.dispose()
    return None


def quick_check(path: Path) -> None:
    """``PRAGMA quick_check`` on a SQLite file; raises :class:`DatabaseDamaged` unless it
    answers ``ok``. Opens the file read-write but never creates it."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", ...
        rows = [str(exc)]
    if rows != ["ok"]:
        raise DatabaseDamaged(
            f"the database {path} is damaged (PRAGMA quick_check: {'; '.join(rows)}). "
            "Bildwerk does not start on it. Stop every process that uses it, then restore "
            "it from a backup (see " + DOCS + "). To give up its records and API keys "
            "instead, move the file aside and run `bildwerk db init --force`.")


def blobs_present(blobs_dir: Path) -> bool:
    """Whether the blob store (``<root>/<sha[:2]>/<sha>``) holds any finished file."""
    if not blobs_dir.is_dir():
        return False
    return any(p.is_file() and not p.name.startswith(TEMP_PREFIX)
               for shard in blobs_dir.iterdir() if shard.is_dir() for p in shard.iterdir())


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database or ""
    if name in ("", ":memory:") or name.startswith("file::memory:"):
        return None
    return Path(name)


def describe(url: str) -> str:
    """The database for a message: the SQLite file, else the URL without its password."""
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    return make_url(url).render_as_string(hide_password=True)


def _zero_length(path: Path) -> bool:
    """Zero bytes, and no write-ahead log with content that SQLite would replay."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size == 0 and not (wal.is_file() and wal.stat().st_size > 0)
