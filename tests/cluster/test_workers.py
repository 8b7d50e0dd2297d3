"""BILDWERK_WORKERS: ``bildwerk serve`` runs several whole server processes on one port,
each with its own device worker (one torch thread each on two cores, for the small
model). They are ingresses of one cluster: the records name the process that ran each job,
and a job accepted by one process is followed and cancelled through whichever answers."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.cluster.conftest import ASYNC, start_ingress, wait_status
from tests.utils.server import ROOT

FAST = {"prompt": "a red boat", "steps": 2, "width": 64, "height": 64}
SLOW = {"prompt": "a long night over the harbour", "steps": 400, "width": 64, "height": 64,
        "seed": 9}


@pytest.fixture(scope="module")
def two_workers(cluster_root, embedded_template, shared_database, redis_url):
    server = start_ingress(cluster_root, "workers", embedded_template,
                           BILDWERK_WORKERS="2", BILDWERK_TORCH_THREADS="",
                           BILDWERK_DATABASE_URL=shared_database,
                           BILDWERK_REDIS_URL=redis_url, BILDWERK_MAX_QUEUED_PER_KEY="0")
    yield server
    server.stop()


def test_jobs_on_one_port_run_in_both_processes(two_workers):
    workers: set[str] = set()
    with ThreadPoolExecutor(4) as pool:
        for wave in range(6):  # the kernel hands connections to either process
            bodies = [{**FAST, "seed": 4 * wave + i} for i in range(4)]
            answers = list(pool.map(lambda body: httpx.post(
                f"{two_workers.base}/txt2img", json=body, timeout=60), bodies))
            for answer in answers:
                assert answer.status_code == 200, answer.text
                record = two_workers.get(f"/records/{answer.json()['record_id']}").json()
                assert record["status"] == "succeeded"
                workers.add(record["worker"])
            if len(workers) == 2:
                break
    assert len(workers) == 2, workers  # two processes (host:pid:...) ran jobs
    assert len({worker.split(":")[1] for worker in workers}) == 2


def test_a_job_is_followed_and_cancelled_through_either_process(two_workers):
    accepted = two_workers.post("/txt2img", json=SLOW, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    for _ in range(6):  # polls land on either process; each knows the job
        status = wait_status(two_workers, job_id, lambda s: s["status"] == "running"
                             and s["progress"]["step"] >= 1)
        assert status["progress"]["total"] == SLOW["steps"]
    assert httpx.delete(f"{two_workers.base}/jobs/{job_id}", timeout=10).status_code == 200
    ended = wait_status(two_workers, job_id, lambda s: s["status"] == "cancelled")
    record = two_workers.get(f"/records/{ended['record_id']}").json()
    assert record["status"] == "cancelled"


def test_several_workers_on_sqlite_are_refused_before_starting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BILDWERK_WORKERS": "2",
           "BILDWERK_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "BILDWERK_WORKERS=2 needs PostgreSQL" in done.stderr
