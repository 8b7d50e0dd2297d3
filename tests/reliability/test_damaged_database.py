"""A damaged or lost database is noticed at start, and /ready tells what it cannot do.

- A SQLite file that fails ``PRAGMA quick_check`` stops the start, in process and in a
  real server process (non-zero exit, the message in the log).
- A missing, empty or schema-less database beside the blobs of an earlier install stops
  the start (both databases) until ``bildwerk db init --force``; a fresh data dir starts.
- /ready answers 503 while the records table is unreadable or the disk is nearly full.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from app.errors import DatabaseDamaged, DatabaseMissing
from app.main import create_app
from app.persistence.integrity import sqlite_file

ROOT = Path(__file__).resolve().parents[2]
FAST = {"prompt": "a mill", "steps": 2, "width": 64, "height": 64, "seed": 1}
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _install(settings: Settings) -> str:
    """Start once, generate one image (a record and a blob), stop; the record's id."""
    with TestClient(create_app(settings)) as client:
        done = client.post("/txt2img", json=FAST)
        assert done.status_code == 200, done.text
    assert any(settings.blobs_dir.rglob("*")), "the install left no blobs"
    return done.json()["record_id"]


def _start(settings: Settings) -> None:
    with TestClient(create_app(settings)):
        pass


def _db_init(settings: Settings, *args: str):
    env = {"BILDWERK_DATA_DIR": str(settings.data_dir),
           "BILDWERK_DATABASE_URL": settings.resolved_database_url}
    return CliRunner().invoke(cli, ["db", "init", *args], env=env)


def _lose_database(url: str) -> None:
    """What a lost database looks like: a zero-length SQLite file, or a PostgreSQL
    database without any table."""
    path = sqlite_file(url)
    if path is not None:
        for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        path.write_bytes(b"")
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _corrupt_records_page(path: Path) -> None:
    """Overwrite the records table's root page with garbage (the app is stopped, so the
    write-ahead log was checkpointed into the file)."""
    assert not path.with_name(path.name + "-wal").exists()
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' "
                           "AND name = 'records'").fetchone()
    conn.close()
    assert (root - 1) * page_size > 0  # not the header page: the middle of the file
    with path.open("r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(random.Random(9).randbytes(page_size))


# -- a damaged SQLite file ------------------------------------------------------------------
@SQLITE_ONLY
def test_a_damaged_records_page_stops_the_start_with_a_clear_message(make_settings):
    settings = make_settings()
    _install(settings)
    path = sqlite_file(settings.resolved_database_url)
    _corrupt_records_page(path)

    with pytest.raises(DatabaseDamaged) as refused:
        _start(settings)
    message = refused.value.message
    assert str(path) in message and "is damaged" in message and "quick_check" in message
    assert "restore it from a backup" in message and "docs/security.md" in message
    # db init never touches a damaged file, not even with --force
    result = _db_init(settings, "--force")
    assert result.exit_code == 2 and "is damaged" in result.output, result.output


@SQLITE_ONLY
def test_a_real_server_exits_non_zero_on_a_damaged_database(make_settings):
    settings = make_settings()
    _install(settings)
    path = sqlite_file(settings.resolved_database_url)
    _corrupt_records_page(path)
    env = {**os.environ, "BILDWERK_DATA_DIR": str(settings.data_dir),
           "BILDWERK_DATABASE_URL": settings.resolved_database_url,
           "BILDWERK_MODELS_DIR": str(settings.models_dir), "BILDWERK_DEVICE": "cpu",
           "BILDWERK_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "DatabaseDamaged" in log and f"the database {path} is damaged" in log, log[-3000:]
    assert "Application startup failed" in log, log[-3000:]


# -- a lost database beside an earlier install's blobs --------------------------------------
def test_a_lost_database_beside_blobs_refuses_to_start_until_db_init_force(make_settings):
    settings = make_settings()
    record_id = _install(settings)
    _lose_database(settings.resolved_database_url)

    with pytest.raises(DatabaseMissing) as refused:
        _start(settings)
    message = refused.value.message
    assert str(settings.blobs_dir) in message and "earlier install" in message
    assert "bildwerk db init --force" in message and "backup" in message
    said = _db_init(settings)  # without --force: refused the same way
    assert said.exit_code == 2 and "bildwerk db init --force" in said.output, said.output
    with pytest.raises(DatabaseMissing):
        _start(settings)

    said = _db_init(settings, "--force")
    assert said.exit_code == 0 and "created the database" in said.output, said.output
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 200
        assert client.get("/records").json()["total"] == 0  # a new install, on purpose
        assert client.get(f"/records/{record_id}").status_code == 404


@SQLITE_ONLY
def test_a_deleted_sqlite_file_beside_blobs_is_refused_and_not_recreated(make_settings):
    settings = make_settings()
    _install(settings)
    path = sqlite_file(settings.resolved_database_url)
    path.unlink()

    with pytest.raises(DatabaseMissing, match="is missing"):
        _start(settings)
    assert not path.exists()


def test_a_fresh_data_dir_still_starts_and_creates_the_database(make_settings):
    settings = make_settings()
    assert not settings.blobs_dir.exists()
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 200
        assert client.post("/txt2img", json=FAST).status_code == 200
    path = sqlite_file(settings.resolved_database_url)
    assert path is None or path.stat().st_size > 0
    _start(settings)  # and starts again on what it created


def test_db_init_creates_a_fresh_database_without_force(make_settings):
    settings = make_settings()
    said = _db_init(settings)
    assert said.exit_code == 0 and "created the database" in said.output, said.output
    said = _db_init(settings)
    assert said.exit_code == 0 and "already initialised" in said.output, said.output


# -- /ready ---------------------------------------------------------------------------------
@SQLITE_ONLY
def test_ready_is_503_while_the_disk_has_less_free_space_than_the_threshold(make_client):
    client = make_client(min_free_disk_mb=10**12)  # an exabyte: more than any disk
    ready = client.get("/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["disk"] is False
    assert all(checks[name] is True for name in ("worker", "models", "database", "records"))


def test_ready_is_503_while_the_records_table_is_unreadable(make_client):
    client = make_client()
    engine = client.app.state.db.engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE records RENAME TO records_elsewhere"))
    try:
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        checks = ready.json()["checks"]
        assert checks["records"] is False and checks["database"] is True
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE records_elsewhere RENAME TO records"))
    assert client.get("/ready").status_code == 200
