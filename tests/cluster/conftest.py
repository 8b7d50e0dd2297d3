"""Several Bildwerk processes sharing one PostgreSQL database, one S3 bucket (a moto server
on 127.0.0.1) and Redis (127.0.0.1:6379): real ``bildwerk serve`` ingresses, and with the
Ray executor a local Ray cluster."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.server import Server

REDIS_URL = os.environ.get("BILDWERK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI but unreachable: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
          "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing-secret")
    name = f"bildwerk-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def shared_database(_postgres_databases) -> Iterator[str]:
    """A PostgreSQL database of its own, migrated, shared by the module's processes."""
    name = f"bildwerk_cluster_{uuid.uuid4().hex[:10]}"
    url = _postgres_databases.create(name, migrated=True)
    yield url
    _postgres_databases.drop_later(name)


@pytest.fixture(scope="module")
def cluster_root(tmp_path_factory: pytest.TempPathFactory, embedded_template: Path) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    (root / "models").mkdir()
    return root


def start_ingress(root: Path, name: str, embedded_template: Path, *, wait: bool = True,
                  **env: str) -> Server:
    """``bildwerk serve`` with its own data dir (the embedded tiny model copied in) and the
    given settings; its output is read on a thread (kept for failure messages). With
    ``wait=False`` it returns at once: call ``server.wait_ready()`` (several start
    together)."""
    data = root / name
    if not (data / "embedded" / "bildwerk-tiny").exists():
        shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    server = Server(data, root / "models", BILDWERK_EMBEDDED_MODEL_ID="bildwerk-tiny",
                    BILDWERK_LOG_FORMAT="text", **env)
    server.start(ready_timeout=120, wait=False)
    server.log = []  # type: ignore[attr-defined]

    def drain() -> None:
        for line in server.proc.stdout:
            server.log.append(line.decode(errors="replace"))

    threading.Thread(target=drain, daemon=True).start()
    return server.wait_ready(120) if wait else server


def events(server: Server, job_id: str, timeout: float = 60) -> Iterator[tuple[str, dict]]:
    """The SSE events of ``job_id`` on ``server``, as (event, data)."""
    with httpx.stream("GET", f"{server.base}/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event is not None:
                yield event, json.loads(line.split(":", 1)[1])
                event = None


def wait_status(server: Server, job_id: str, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = server.get(f"/jobs/{job_id}").json()
        if until(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never got there: {status}")
