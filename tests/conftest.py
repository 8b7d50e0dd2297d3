"""Shared fixtures. Every HTTP test runs once on SQLite and once on PostgreSQL.

PostgreSQL tests create a fresh database per test at 127.0.0.1:5432 (override with
BILDWERK_TEST_POSTGRES_URL) and drop it afterwards. Without a reachable server they are
skipped locally and fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.pipelines.embedded import build_tiny_sd15
from tests.utils.models import build_models_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The whole suite can run on a GPU machine: BILDWERK_TEST_DEVICE=cuda (default cpu).
TEST_DEVICE = os.environ.get("BILDWERK_TEST_DEVICE", "cpu")
PG_ADMIN_URL = os.environ.get("BILDWERK_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_models_dir(tmp_path_factory.mktemp("models-root"))


@pytest.fixture(scope="session")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model built once; each app gets a copy in its own data dir."""
    return build_tiny_sd15(tmp_path_factory.mktemp("embedded") / "bildwerk-tiny")


def _postgres_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_admin():
    engine = _postgres_engine()
    try:
        with engine.connect():
            pass
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc}")
    yield engine
    engine.dispose()


DATABASES = os.environ.get("BILDWERK_TEST_DATABASES", "sqlite,postgresql").split(",")


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bildwerk.db'}"
        return
    from sqlalchemy import text

    admin = request.getfixturevalue("postgres_admin")
    name = f"bildwerk_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path, embedded_template: Path,
                  database_url: str) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        data_dir = tmp_path / f"data-{uuid.uuid4().hex[:6]}"
        embedded = data_dir / "embedded" / "bildwerk-tiny"
        shutil.copytree(embedded_template, embedded)
        values = dict(data_dir=data_dir, models_dir=models_dir, database_url=database_url,
                      device=TEST_DEVICE, default_model="tiny-sd15",
                      # the fast random tiny model, not the shipped micro model (the
                      # default): tests/training/test_micro_model.py covers that one
                      embedded_model_id="bildwerk-tiny",
                      shutdown_grace_s=2)  # a test that leaves a job running does not wait 30 s
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def make_client(make_settings) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def wait_for_job(client: TestClient, job_id: str, timeout: float = 60.0,
                 until: Callable[[dict], bool] | None = None) -> dict:
    """Poll GET /jobs/{id} until it is finished (or ``until`` holds)."""
    until = until or (lambda s: s["status"] in ("succeeded", "failed", "cancelled"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job_id}").json()
        if until(status):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach the expected state: {status}")
