"""Shared fixtures. Every HTTP test runs once on SQLite and once on PostgreSQL.

PostgreSQL tests create a fresh database per test at 127.0.0.1:5432 (override with
BILDWERK_TEST_POSTGRES_URL) and drop it afterwards. Without a reachable server they are
skipped locally and fail under CI=true.

What keeps the suite short (it must stay well under 15 minutes on two cores):

- torch runs one intra-op thread per test process (``BILDWERK_TEST_TORCH_THREADS``, else
  ``OMP_NUM_THREADS``, else 1; server subprocesses inherit ``OMP_NUM_THREADS``). The tiny
  models gain nothing from more threads, and two xdist workers with two threads each on two
  cores made every step several times slower.
- This module imports nothing heavy at the top (torch, diffusers, the app): the xdist
  controller loads it too and runs no test.
- Each test process migrates one template database per kind, once. An app that
  ``make_client`` starts on a database nobody has touched yet (a SQLite file that does not
  exist; a PostgreSQL database the test reaches only through ``make_client``) starts on a
  copy of it, so its startup finds the schema current instead of running every migration.
  The startup path is the real one; tests/persistence/test_migrations.py still migrates an
  empty database on both kinds, and a test that uses ``database_url`` or ``make_settings``
  itself gets an empty database as before.
- PostgreSQL databases are dropped by a background thread (a drop forces a checkpoint).
- ``scripts/test`` runs the suite on pytest-xdist workers (``--dist worksteal``: each worker
  takes a consecutive half of the tests, an idle one takes over part of the other's rest).
  A module's tests may therefore run on two workers: a module-scoped fixture is then built
  once per worker, and no test may rely on what another test left behind. (The scope-based
  modes, loadfile/loadscope/loadgroup, are no option: with pytest 9 every Schemathesis
  operation of tests/test_schemathesis.py has the same node id, and those modes, which
  schedule by node id, would run only one of them. loadgroup also cannot tag node ids on
  pytest 9.) Names of databases are unique per test process.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from app.config import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Read by torch when it is imported (after this, by the test modules) and by every server
# a test starts as a subprocess.
TORCH_THREADS = int(os.environ.get("BILDWERK_TEST_TORCH_THREADS")
                    or os.environ.get("OMP_NUM_THREADS") or 1)
os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)
if "torch" in sys.modules:  # pragma: no cover - imported before this module by a plugin
    sys.modules["torch"].set_num_threads(TORCH_THREADS)
# The whole suite can run on a GPU machine: BILDWERK_TEST_DEVICE=cuda (default cpu).
TEST_DEVICE = os.environ.get("BILDWERK_TEST_DEVICE", "cpu")
PG_ADMIN_URL = os.environ.get("BILDWERK_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.utils.models import build_models_dir

    return build_models_dir(tmp_path_factory.mktemp("models-root"))


@pytest.fixture(scope="session")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model built once; each app gets a copy in its own data dir."""
    from app.pipelines.embedded import build_tiny_sd15

    return build_tiny_sd15(tmp_path_factory.mktemp("embedded") / "bildwerk-tiny")


def _postgres_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _postgres_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


# Unique per test process (xdist worker) and run: parallel runs never share a database name.
_RUN = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:8]}"


def _migrate(url: str) -> None:
    from app.persistence.database import Database

    db = Database(url)
    try:
        db.migrate()
    finally:
        db.dispose()


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


class _PostgresDatabases:
    """This process's test databases, each a copy of one of two templates made on first
    use: an empty database (itself a copy of template1, as CREATE DATABASE makes, but
    copied from faster: ~25 ms instead of ~140 ms) or one migrated to the newest schema.
    Dropped by a background thread; all gone at the end."""

    MAX_PENDING_DROPS = 16  # beyond that a drop waits (each test database is ~8 MB)

    def __init__(self, admin) -> None:
        self.admin = admin
        self.templates: dict[bool, str] = {}  # migrated? -> name
        self.errors: list[str] = []
        self._drops: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_all, name="bildwerk-test-dropdb",
                                         daemon=True)
        self._dropper.start()

    def _execute(self, sql: str) -> None:
        from psycopg.errors import ObjectInUse
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        for attempt in range(50):
            try:
                with self.admin.connect() as conn:
                    conn.execute(text(sql))
                return
            except OperationalError as exc:
                # "source database ... is being accessed by other users": the backend of a
                # connection that was just closed can take a moment to go away.
                if not isinstance(exc.orig, ObjectInUse) or attempt == 49:
                    raise
                time.sleep(0.05)

    def create(self, name: str, *, migrated: bool = False) -> str:
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template(migrated)}"')
        return _postgres_url(name)

    def _template(self, migrated: bool) -> str:
        if migrated not in self.templates:
            name = f"bildwerk_{'template' if migrated else 'empty'}_{_RUN}"
            self._execute(f'CREATE DATABASE "{name}"')
            self.templates[migrated] = name  # dropped in close(), even if migrating fails
            if migrated:
                _migrate(_postgres_url(name))
        return self.templates[migrated]

    def drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_later(self, name: str) -> None:
        if self._drops.qsize() >= self.MAX_PENDING_DROPS:
            self.drop(name)
        else:
            self._drops.put(name)

    def _drop_all(self) -> None:
        while (name := self._drops.get()) is not None:
            try:
                self.drop(name)
            except Exception as exc:  # pragma: no cover - reported at the end
                self.errors.append(f"{name}: {exc}")

    def close(self) -> None:
        self._drops.put(None)
        self._dropper.join()
        for template in self.templates.values():
            self.drop(template)
        if self.errors:  # pragma: no cover
            raise RuntimeError("test databases left behind: " + "; ".join(self.errors))


@pytest.fixture(scope="session")
def _postgres_databases(postgres_admin) -> Iterator[_PostgresDatabases]:
    databases = _PostgresDatabases(postgres_admin)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest schema (closed: no -wal or -shm beside it)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "bildwerk.db"
    _migrate(f"sqlite:///{path}")
    assert not path.with_name(path.name + "-wal").exists()
    return path


DATABASES = os.environ.get("BILDWERK_TEST_DATABASES", "sqlite,postgresql").split(",")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module about images and pipelines, whose PostgreSQL runs would only repeat the
    record writes that the record, job, persistence and reliability tests check on both
    databases, says ``RUN_ON_DATABASES = ("sqlite",)``: its PostgreSQL variants are
    deselected (listed as such in pytest's summary)."""
    keep, drop = [], []
    for item in items:
        kinds = getattr(getattr(item, "module", None), "RUN_ON_DATABASES", None)
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("database_url") if callspec is not None else None
        (drop if kinds is not None and kind is not None and kind not in kinds
         else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
# The PostgreSQL databases (by URL) that database_url made from the migrated template.
_PREMIGRATED: set[str] = set()
_APP_CHAIN = ("database_url", "make_settings", "make_client", "client")


def _only_apps_use_the_database(request: pytest.FixtureRequest) -> bool:
    """Whether this test reaches ``database_url`` only through the apps ``make_client``
    starts (its own fixtures and itself ask for neither ``database_url``, ``make_settings``
    nor ``postgres_admin``). Such a database is first opened by an app's startup, which
    migrates it, so it may as well start out migrated."""
    info = getattr(request.node, "_fixtureinfo", None)
    if info is None or not {"make_client", "client"} & set(info.names_closure):
        return False
    direct = {"database_url", "make_settings", "postgres_admin"}
    if direct & set(info.argnames):
        return False
    for name, defs in info.name2fixturedefs.items():
        for fixturedef in defs:
            ours = (name in _APP_CHAIN
                    and getattr(fixturedef.func, "__module__", None) == __name__)
            if not ours and direct & set(fixturedef.argnames):
                return False
    return True


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bildwerk.db'}"
        return
    databases: _PostgresDatabases = request.getfixturevalue("_postgres_databases")
    name = f"bildwerk_test_{uuid.uuid4().hex[:12]}"
    migrated = _only_apps_use_the_database(request)
    url = databases.create(name, migrated=migrated)
    if migrated:
        _PREMIGRATED.add(url)
    yield url
    _PREMIGRATED.discard(url)
    databases.drop_later(name)


def _prepare_database(settings: Settings, fixture_url: str, sqlite_template: Path | None,
                      postgres: _PostgresDatabases | None) -> None:
    """Before an app starts on the fixture's database: a SQLite file that does not exist
    yet becomes a copy of the migrated template, unless the data dir holds blobs (then the
    app must refuse to start, as it does on a missing database). A PostgreSQL database
    made from the template goes back to empty in that case."""
    from app.persistence.integrity import blobs_present, sqlite_file

    url = settings.resolved_database_url
    if url != fixture_url:
        return
    old_blobs = blobs_present(settings.blobs_dir)
    path = sqlite_file(url)
    if path is not None and sqlite_template is not None:
        leftovers = [path.with_name(path.name + s) for s in ("", "-wal", "-shm", "-journal")]
        if not old_blobs and not any(p.exists() for p in leftovers):
            shutil.copyfile(sqlite_template, path)
    elif url in _PREMIGRATED and postgres is not None:
        _PREMIGRATED.discard(url)  # from now on the database is the test's
        if old_blobs:
            name = url.rsplit("/", 1)[1]
            postgres.drop(name)
            postgres.create(name)


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path, embedded_template: Path,
                  database_url: str) -> Callable[..., Settings]:
    from app.config import Settings

    def make(**overrides) -> Settings:
        data_dir = tmp_path / f"data-{uuid.uuid4().hex[:6]}"
        embedded = data_dir / "embedded" / "bildwerk-tiny"
        shutil.copytree(embedded_template, embedded)
        values = dict(data_dir=data_dir, models_dir=models_dir, database_url=database_url,
                      device=TEST_DEVICE, default_model="tiny-sd15",
                      # the fast random tiny model, not the shipped micro model (the
                      # default): tests/training/test_micro_model.py covers that one
                      embedded_model_id="bildwerk-tiny",
                      shutdown_grace_s=2,  # a test that leaves a job running does not wait 30 s
                      torch_threads=TORCH_THREADS)  # a batch would take every core
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def make_client(make_settings, database_url: str,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., TestClient]]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    clients: list[TestClient] = []
    sqlite = database_url.startswith("sqlite")
    sqlite_template = request.getfixturevalue("_sqlite_template") if sqlite else None
    postgres = None if sqlite else request.getfixturevalue("_postgres_databases")

    def make(**overrides) -> TestClient:
        settings = make_settings(**overrides)
        _prepare_database(settings, database_url, sqlite_template, postgres)
        client = TestClient(create_app(settings))
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

