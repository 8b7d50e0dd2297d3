"""Two ``bildwerk serve`` ingresses behind one (imagined) load balancer: they share a
PostgreSQL database, an S3 bucket (moto on 127.0.0.1) and Redis. A job accepted by A is
seen, followed and cancelled on B; a job whose ingress dies is reaped by the other once its
lease runs out, and its followers get a terminal event."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from app.config import Settings
from tests.cluster.conftest import ASYNC, S3_ENV, events, start_ingress, wait_status

SLOW = {"prompt": "a long night over the harbour", "steps": 400, "width": 64, "height": 64,
        "seed": 9}
FAST = {"prompt": "a red boat", "steps": 2, "width": 64, "height": 64, "seed": 4}


@pytest.fixture(scope="module")
def pair(cluster_root, embedded_template, shared_database, redis_url, s3_endpoint, bucket):
    env = {"BILDWERK_CLUSTER": "true", "BILDWERK_DATABASE_URL": shared_database,
           "BILDWERK_REDIS_URL": redis_url, "BILDWERK_BLOB_STORE": f"s3://{bucket}/blobs",
           "BILDWERK_S3_ENDPOINT_URL": s3_endpoint, "BILDWERK_LEASE_S": "3", **S3_ENV}
    a = start_ingress(cluster_root, "a", embedded_template, wait=False, **env)
    b = start_ingress(cluster_root, "b", embedded_template, wait=False, **env)
    a.wait_ready(120), b.wait_ready(120)  # started together
    yield a, b
    for server in (a, b):
        server.stop()


def test_a_job_accepted_on_a_is_followed_and_cancelled_on_b(pair):
    a, b = pair
    accepted = a.post("/txt2img", json=SLOW, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    job_id, record_id = accepted.json()["job_id"], accepted.json()["record_id"]

    # B does not hold the job, yet it sees it run, with A's progress.
    seen = wait_status(b, job_id, lambda s: s["status"] == "running"
                       and s["progress"]["step"] >= 2)
    assert seen["record_id"] == record_id and seen["progress"]["total"] == SLOW["steps"]

    got: list[tuple[str, dict]] = []
    follower = threading.Thread(target=lambda: got.extend(events(b, job_id)), daemon=True)
    follower.start()
    deadline = time.monotonic() + 20
    while not any(e == "progress" for e, _ in got) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(e == "progress" for e, _ in got), got  # B streams A's steps

    cancelled = httpx.delete(f"{b.base}/jobs/{job_id}", timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    follower.join(30)
    assert not follower.is_alive(), "B's event stream did not end"
    assert got[0][0] == "status"
    last_event, last = got[-1]
    assert last_event == "cancelled" and last["status"] == "cancelled", got[-3:]
    assert last["error"]["code"] == "cancelled"
    steps = [data["progress"]["step"] for event, data in got if event == "progress"]
    assert steps == sorted(steps) and steps[-1] < SLOW["steps"]  # it really stopped

    # A, which ran it, and the shared record agree.
    assert a.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    record = b.get(f"/records/{record_id}").json()
    assert record["status"] == "cancelled" and record["finished_at"] is not None
    assert record["error_code"] == "cancelled" and record["prompt"] == SLOW["prompt"]


def test_a_result_made_on_a_is_served_by_b_from_the_bucket(pair):
    a, b = pair
    accepted = a.post("/txt2img", json=FAST, headers=ASYNC).json()
    done = wait_status(b, accepted["job_id"], lambda s: s["status"] == "succeeded")
    url = done["result"]["images"][0]["url"]
    image = b.get(url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert image.content == a.get(url).content
    record = b.get(f"/records/{accepted['record_id']}").json()
    assert record["status"] == "succeeded" and len(record["outputs"]) == 1
    # A finished job's events on B: the terminal event from the record.
    assert [e for e, _ in events(b, accepted["job_id"])] == ["succeeded"]


def test_a_dead_ingress_job_is_reaped_by_the_other_and_its_followers_hear_it(pair):
    """The module's last test with the pair: A is killed (kill -9) while its job runs."""
    doomed, b = pair
    accepted = doomed.post("/txt2img", json=SLOW, headers=ASYNC).json()
    wait_status(b, accepted["job_id"], lambda s: s["status"] == "running"
                and s["progress"]["step"] >= 1)
    got: list[tuple[str, dict]] = []
    follower = threading.Thread(target=lambda: got.extend(events(b, accepted["job_id"])),
                                daemon=True)
    follower.start()
    time.sleep(0.5)
    doomed.proc.kill()  # kill -9: no shutdown, no record written by it
    killed_at = time.monotonic()
    follower.join(30)
    assert not follower.is_alive(), "the follower never heard the end"
    assert got and got[-1][0] == "interrupted", (got[-3:], "".join(b.log[-30:]))
    assert time.monotonic() - killed_at < 3 * 3 + 2  # within a few lease periods
    record = b.get(f"/records/{accepted['record_id']}").json()
    assert record["status"] == "interrupted" and record["error_code"] == "interrupted"
    assert "lease" in record["error_message"]
    # The survivor keeps working.
    again = b.post("/txt2img", json=FAST, headers=ASYNC).json()
    assert wait_status(b, again["job_id"],
                       lambda s: s["status"] in ("succeeded", "failed"))["status"] \
        == "succeeded"


@pytest.mark.parametrize("settings, says", [
    ({"cluster": True, "redis_url": "redis://127.0.0.1:6379/0"}, "needs PostgreSQL"),
    ({"executor": "ray", "redis_url": "redis://127.0.0.1:6379/0"}, "needs PostgreSQL"),
    ({"cluster": True, "database_url": "postgresql+psycopg://x@127.0.0.1/x"},
     "needs BILDWERK_REDIS_URL"),
])
def test_a_shared_set_up_on_sqlite_or_without_redis_is_refused_at_start(
        tmp_path, settings, says):
    from fastapi.testclient import TestClient

    from app.cluster.checks import ClusterMisconfigured
    from app.main import create_app

    app = create_app(Settings(data_dir=tmp_path, **settings))
    with pytest.raises(ClusterMisconfigured, match=says):
        with TestClient(app):
            pass
