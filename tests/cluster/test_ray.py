"""The Ray executor on a local Ray cluster (``ray start --head``, 2 CPUs) with two CPU
``Generator`` replicas on the embedded model, behind one ``bildwerk serve`` ingress sharing
PostgreSQL and Redis with them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import ASYNC, events, start_ingress, wait_status

pytest.importorskip("ray.serve")

SLOW = {"prompt": "a slow tide", "steps": 400, "width": 64, "height": 64, "seed": 2}
FAST = {"prompt": "a small boat", "steps": 2, "width": 64, "height": 64, "seed": 7}
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> str:
    """A Ray head on this machine with 2 CPUs. ``ray start --block`` stays in the
    foreground in a session of its own, which is killed at the end, so the cluster of one
    test process never stops another's (``ray stop`` would stop every cluster here)."""
    port = _free_port()
    temp = Path("/tmp") / f"ray-bw-{os.getpid()}"  # short: Ray's socket paths have a limit
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp_path_factory.mktemp("ray") / "head.log"
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while subprocess.run([str(RAY), "status", f"--address={address}"], env=env,
                         capture_output=True, timeout=60).returncode != 0:
        assert head.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(1)
    yield address
    # Killed at once (a graceful stop of the replicas takes ~30 s, for nothing here): its
    # process group, then anything else of this cluster (every process names its temp dir).
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(30)
    subprocess.run(["pkill", "-9", "-f", str(temp)], capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_env(ray_cluster, shared_database, redis_url) -> dict[str, str]:
    """The settings every ingress of the Ray set-up shares."""
    return dict(
        BILDWERK_EXECUTOR="ray", BILDWERK_RAY_ADDRESS=ray_cluster,
        BILDWERK_RAY_APP_NAME=f"bw-test-{os.getpid()}",
        BILDWERK_RAY_MIN_REPLICAS="2", BILDWERK_RAY_MAX_REPLICAS="2",
        BILDWERK_RAY_NUM_CPUS="1", BILDWERK_RAY_TORCH_THREADS="1",
        BILDWERK_DATABASE_URL=shared_database, BILDWERK_REDIS_URL=redis_url,
        BILDWERK_LEASE_S="3", BILDWERK_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        RAY_ADDRESS=ray_cluster)


@pytest.fixture(scope="module")
def ingress(ray_env, cluster_root, embedded_template):
    server = start_ingress(cluster_root, "ray-ingress", embedded_template, **ray_env)
    yield server
    server.stop()


def record_of(server, job_id: str) -> dict:
    status = server.get(f"/jobs/{job_id}").json()
    return server.get(f"/records/{status['record_id']}").json()


def run(server, body: dict) -> dict:
    accepted = server.post("/txt2img", json=body, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    done = wait_status(server, accepted.json()["job_id"],
                       lambda s: s["status"] not in ("queued", "running"), timeout=120)
    assert done["status"] == "succeeded", done
    return done


def test_ready_reports_ray_and_two_replicas(ingress):
    ready = ingress.get("/ready").json()
    assert ready["checks"]["ray"] is True and ready["checks"]["replicas"] is True
    assert ready["checks"]["redis"] is True and ready["status"] == "ready"


def test_jobs_for_one_model_stick_to_one_replica_and_give_the_same_bytes(ingress):
    first = run(ingress, FAST)
    time.sleep(1.5)  # the replica reports the model it loaded (every 0.1 s) to the router
    workers = [record_of(ingress, first["job_id"])["worker"]]
    for _ in range(3):
        done = run(ingress, FAST)
        workers.append(record_of(ingress, done["job_id"])["worker"])
        assert ingress.get(done["result"]["images"][0]["url"]).content == \
            ingress.get(first["result"]["images"][0]["url"]).content  # same seed, same bytes
    assert all(w.startswith("ray:") for w in workers), workers
    assert len(set(workers[1:])) == 1, workers  # once loaded, the model's replica gets them


def test_progress_arrives_as_sse_through_the_ingress_and_cancel_stops_the_job(ingress):
    accepted = ingress.post("/txt2img", json=SLOW, headers=ASYNC).json()
    got: list[tuple[str, dict]] = []
    follower = threading.Thread(target=lambda: got.extend(events(ingress, accepted["job_id"])),
                                daemon=True)
    follower.start()
    deadline = time.monotonic() + 60
    while sum(e == "progress" for e, _ in got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    steps = [d["progress"]["step"] for e, d in got if e == "progress"]
    assert len(steps) >= 3 and steps == sorted(steps), got[-3:]  # the replica's steps
    cancelled = httpx.delete(f"{ingress.base}/jobs/{accepted['job_id']}", timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    follower.join(30)
    assert not follower.is_alive()
    assert got[-1][0] == "cancelled", got[-3:]
    record = ingress.get(f"/records/{accepted['record_id']}").json()
    assert record["status"] == "cancelled" and record["worker"].startswith("ray:")
    assert max(steps) < SLOW["steps"]


def test_a_replica_killed_mid_job_ends_the_job_interrupted_and_the_next_jobs_succeed(ingress):
    accepted = ingress.post("/txt2img", json=SLOW, headers=ASYNC).json()
    wait_status(ingress, accepted["job_id"],
                lambda s: s["status"] == "running" and s["progress"]["step"] >= 2)
    worker = ingress.get(f"/records/{accepted['record_id']}").json()["worker"]
    got: list[tuple[str, dict]] = []
    follower = threading.Thread(target=lambda: got.extend(events(ingress, accepted["job_id"])),
                                daemon=True)
    follower.start()
    time.sleep(0.3)
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)  # the replica's process
    follower.join(60)
    assert not follower.is_alive(), "no terminal event after the replica died"
    assert got[-1][0] == "interrupted", got[-3:]
    record = ingress.get(f"/records/{accepted['record_id']}").json()
    assert record["status"] == "interrupted" and record["finished_at"] is not None
    for _ in range(3):  # the other replica (and the one Serve starts again) take over
        run(ingress, FAST)


def test_a_webhook_hears_a_ray_job_start_progress_and_complete(ingress):
    """The ingress that accepted the job delivers its webhook, with the replica's steps."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    heard: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            heard.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        done = run(ingress, {**FAST, "steps": 120, "webhook": {  # > 1 s: progress is sent
            "url": url, "events": ["started", "progress", "completed"]}})
        deadline = time.monotonic() + 20
        while not any(h.get("type") == "job.completed" for h in heard) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        kinds = [h["type"] for h in heard]
        assert kinds[0] == "job.started" and kinds[-1] == "job.completed", kinds
        assert "job.progress" in kinds, kinds  # the replica's steps, relayed to the ingress
        assert heard[-1]["data"]["job_id"] == done["job_id"]
    finally:
        receiver.shutdown()


def test_a_second_ingress_shares_the_replicas_and_its_shutdown_interrupts_its_ray_job(
        ingress, ray_env, cluster_root, embedded_template):
    """Two ingresses, two workers: B uses the Generator replicas A deployed; a job sent to
    B is followed on A; B's SIGTERM (no grace) stops it on its replica, and the record
    and A's followers say interrupted."""
    second = start_ingress(cluster_root, "ray-ingress-b", embedded_template,
                           BILDWERK_SHUTDOWN_GRACE_S="0", **ray_env)
    try:
        accepted = second.post("/txt2img", json=SLOW, headers=ASYNC).json()
        wait_status(ingress, accepted["job_id"],
                    lambda s: s["status"] == "running" and s["progress"]["step"] >= 2)
        got: list[tuple[str, dict]] = []
        follower = threading.Thread(
            target=lambda: got.extend(events(ingress, accepted["job_id"])), daemon=True)
        follower.start()
        time.sleep(0.3)
        second.proc.send_signal(signal.SIGTERM)
        follower.join(60)
        assert not follower.is_alive(), "A's follower never heard the end"
        assert got[-1][0] == "interrupted", got[-3:]
        assert second.proc.wait(60) == 0
        record = ingress.get(f"/records/{accepted['record_id']}").json()
        assert record["status"] == "interrupted", record
        assert record["worker"].startswith("ray:")  # it ran on a replica, not on B
        steps = [d["progress"]["step"] for e, d in got if e == "progress"]
        assert not steps or max(steps) < SLOW["steps"]
    finally:
        second.stop()
    run(ingress, FAST)  # the replicas still work for A
