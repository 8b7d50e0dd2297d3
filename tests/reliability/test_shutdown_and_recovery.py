"""Graceful shutdown and restart after a crash.

In process (both databases): the drain refuses new work with 503, lets a running job
finish within the grace period or interrupts it, and interrupts the queued ones; startup
marks a record whose blob is gone. Against a real uvicorn process (SQLite): SIGTERM while
one job runs and others wait, and ``kill -9`` while a job runs, then a restart on the same
data directory.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from app.lifecycle import recover_after_restart
from app.persistence.blobs import BlobStore
from app.persistence.database import Database
from app.persistence.records import NewRecord, RecordFilter, RecordRepository
from tests.conftest import wait_for_job
from tests.utils.images import box_mask, data_url, png_bytes, scene

ROOT = Path(__file__).resolve().parents[2]
ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a mill", "steps": 2, "width": 64, "height": 64, "seed": 1}
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 3}


# -- in process ---------------------------------------------------------------------------
def start_drain(client):
    """Begin the shutdown sequence inside the app's event loop, as SIGTERM would."""
    return client.portal.start_task_soon(client.app.state.lifecycle.shutdown)


def test_a_drain_refuses_work_finishes_the_running_job_and_interrupts_the_queue(make_client):
    client = make_client(shutdown_grace_s=60, retry_after_s=3)
    running = client.post("/txt2img", json={**FAST, "steps": 30}, headers=ASYNC).json()
    wait_for_job(client, running["job_id"], until=lambda s: s["status"] == "running")
    queued = client.post("/txt2img", json=FAST, headers=ASYNC).json()
    drain = start_drain(client)
    deadline = time.monotonic() + 10
    while not client.app.state.lifecycle.draining and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = client.post("/txt2img", json=FAST)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"] == "3"
    assert client.post("/prompt-expand", json={"idea": "x"}).status_code == 503
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False
    drain.result(timeout=60)
    assert client.get(f"/jobs/{running['job_id']}").json()["status"] == "succeeded"
    status = client.get(f"/jobs/{queued['job_id']}").json()
    assert status["status"] == "interrupted" and status["error"]["code"] == "interrupted"
    record = client.get(f"/records/{queued['record_id']}").json()
    assert record["status"] == "interrupted" and record["finished_at"] is not None
    assert client.get(f"/records/{running['record_id']}").json()["status"] == "succeeded"


def test_a_job_still_running_after_the_grace_is_interrupted_and_recorded(make_client):
    client = make_client(shutdown_grace_s=0.2)
    running = client.post("/txt2img", json=SLOW, headers=ASYNC).json()
    wait_for_job(client, running["job_id"], until=lambda s: s["progress"]["step"] >= 1)
    start_drain(client).result(timeout=30)
    status = client.get(f"/jobs/{running['job_id']}").json()
    assert status["status"] == "interrupted" and status["progress"]["step"] < 150
    record = client.get(f"/records/{running['record_id']}").json()
    assert record["status"] == "interrupted" and record["error_code"] == "interrupted"
    assert record["outputs"] == []


def test_a_waiting_synchronous_client_gets_an_answer_when_its_job_is_interrupted(make_client):
    client = make_client(shutdown_grace_s=0.2)
    slow = client.post("/txt2img", json=SLOW, headers=ASYNC).json()["job_id"]
    wait_for_job(client, slow, until=lambda s: s["status"] == "running")
    answers: list = []
    waiter = threading.Thread(target=lambda: answers.append(client.post("/txt2img", json=FAST)))
    waiter.start()
    deadline = time.monotonic() + 10
    while client.app.state.queue.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    start_drain(client).result(timeout=30)
    waiter.join(10)
    assert answers and answers[0].status_code == 503
    assert answers[0].json()["error"]["code"] == "interrupted"


def test_startup_marks_an_unfinished_record_whose_blob_is_gone(make_settings):
    settings = make_settings()
    db = Database(settings.resolved_database_url)
    db.migrate()
    records, blobs = RecordRepository(db), BlobStore(settings.blobs_dir, db)
    kept = blobs.put(png_bytes(scene(16, 16, seed=1)), "image/png")
    lost = blobs.put(png_bytes(scene(16, 16, seed=2)), "image/png")
    for record_id, sha in (("kept", kept), ("lost", lost)):
        records.create(NewRecord(id=record_id, job_id=f"job-{record_id}", endpoint="inpaint",
                                 provider="local", model=None, prompt="x",
                                 negative_prompt=None, params={}, input_image_sha256=sha))
    blobs.path_for(lost).unlink()
    (settings.blobs_dir / kept[:2] / ".tmp-half-written").write_bytes(b"\x89PNG")
    report = recover_after_restart(settings, records)
    assert report.missing_blobs == {"lost": [lost]} and report.unfinished == 2
    assert report.temp_files_removed == 1
    assert not list(settings.blobs_dir.rglob(".tmp-*"))
    gone = records.get("lost")
    assert gone.status == "interrupted" and gone.error_code == "blob_missing"
    assert lost in gone.error_message
    assert records.get("kept").status == "queued"  # left to mark_unfinished_interrupted
    db.dispose()


# -- a real uvicorn process (Server, data_dir and servers: tests/reliability/conftest.py) --
def _records(data_dir: Path) -> RecordRepository:
    return RecordRepository(Database(f"sqlite:///{(data_dir / 'bildwerk.db').resolve()}"))


def test_sigterm_drains_then_exits_cleanly(servers, data_dir):
    server = servers(BILDWERK_SHUTDOWN_GRACE_S="3", BILDWERK_RETRY_AFTER_S="2")
    long = {"prompt": "a long job", "steps": 1000, "width": 128, "height": 128, "seed": 3}
    running = server.post("/txt2img", json=long, headers=ASYNC).json()
    server.wait_running(running["job_id"])
    queued = server.post("/txt2img", json=FAST, headers=ASYNC).json()
    waiting: list[httpx.Response] = []  # a synchronous client whose job is queued
    waiter = threading.Thread(target=lambda: waiting.append(server.post("/txt2img", json=FAST)))
    waiter.start()
    deadline = time.monotonic() + 10
    while server.get("/records", params={"status": "queued"}).json()["total"] < 2:
        assert time.monotonic() < deadline, "the synchronous job was not queued"
        time.sleep(0.05)

    server.proc.send_signal(signal.SIGTERM)
    # The server keeps listening while it drains, and says why it takes no work.
    deadline = time.monotonic() + 5
    while True:
        refused = server.post("/txt2img", json=FAST, headers=ASYNC)
        if refused.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"] == "2"
    assert server.get("/ready").status_code == 503
    waiter.join(15)
    assert waiting and waiting[0].status_code == 503
    assert waiting[0].json()["error"]["code"] == "interrupted"

    assert server.proc.wait(timeout=30) == 0
    out = server.output()
    assert "Application shutdown complete" in out, out[-3000:]
    records = _records(data_dir)
    ended = records.get(running["record_id"])
    assert ended.status == "interrupted" and ended.finished_at is not None, ended.status
    assert records.get(queued["record_id"]).status == "interrupted"
    statuses = {row.status for row in records.list(RecordFilter(limit=1000))[0]}
    assert statuses == {"interrupted"}, statuses  # nothing left queued or running
    records.db.dispose()


def test_kill_9_then_restart_recovers(servers, data_dir):
    server = servers()
    image, mask = scene(64, 64), box_mask((64, 64), (8, 8, 40, 40))
    body = {"prompt": "x", "image": data_url(image), "mask": data_url(mask), "steps": 1000,
            "width": 64, "height": 64, "inpaint_area": "full", "mask_blur": 0}
    done = server.post("/txt2img", json=FAST)  # a finished record with an output blob
    assert done.status_code == 200, done.text
    running = server.post("/inpaint", json=body, headers=ASYNC).json()
    server.wait_running(running["job_id"])
    blobs = data_dir / "blobs"
    shard = next(p for p in blobs.iterdir() if p.is_dir())
    (shard / ".tmp-cut-short").write_bytes(b"\x89PNG\r\n")  # what a kill mid-write leaves
    (blobs / ".tmp-orphan").write_bytes(b"")
    server.proc.kill()
    server.proc.wait(timeout=30)

    again = servers()
    record = again.get(f"/records/{running['record_id']}").json()
    assert record["status"] == "interrupted" and record["error_code"] == "interrupted"
    assert not list(blobs.rglob(".tmp-*"))
    page = again.get("/records", params={"limit": 200}).json()
    for item in page["items"]:
        refs = [item[k] for k in ("input_image_sha256", "mask_sha256", "mask_applied_sha256")
                if item[k]] + [out["sha256"] for out in item["outputs"]]
        for sha in refs:
            assert again.get(f"/blobs/{sha}").status_code == 200, (item["id"], sha)
    assert again.get(f"/jobs/{running['job_id']}").json()["status"] == "interrupted"
    r = again.post("/txt2img", json=FAST)
    assert r.status_code == 200 and r.json()["images"][0]["sha256"] == done.json()[
        "images"][0]["sha256"]
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(timeout=30) == 0
