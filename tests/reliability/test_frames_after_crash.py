"""img2seq frames announced before a ``kill -9`` stay on the record and with their owner.

A real uvicorn process (SQLite) with two API keys: the owner streams a sequence, sees two
``frame`` events, the process is killed, and after a restart on the same data directory
the ``interrupted`` record lists those frames and serves them to the owner only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from app.persistence.database import Database
from app.security.keys import ApiKeyRepository
from tests.utils.images import data_url, scene
from tests.utils.server import Server

# 120 frames of a fraction of a second each: far from done when the process is killed.
SEQUENCE = {"image": data_url(scene(64, 64, seed=5)), "prompt": "a harbour at dusk",
            "frames": 120, "steps": 10, "strength": 1.0, "seed": 9, "width": 64,
            "height": 64}


def make_keys(data_dir: Path, *names: str) -> list[dict[str, str]]:
    """Bearer headers of new keys with generate and read, in the server's database."""
    db = Database(f"sqlite:///{(data_dir / 'bildwerk.db').resolve()}")
    db.migrate()
    keys = ApiKeyRepository(db)
    headers = [{"Authorization": f"Bearer {keys.create(name, ['generate', 'read'])[1]}"}
               for name in names]
    db.dispose()
    return headers


def frames_announced(server: Server, job_id: str, auth: dict, count: int) -> list[dict]:
    """The first ``count`` ``frame`` events of the job's SSE stream."""
    frames, event = [], None
    with httpx.stream("GET", f"{server.base}/jobs/{job_id}/events", headers=auth,
                      timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "frame":
                frames.append(json.loads(line.split(":", 1)[1]))
                if len(frames) == count:
                    return frames
            elif line.startswith("data:") and event not in ("progress", "status"):
                raise AssertionError(f"the job ended ({event}) before {count} frames")
    raise AssertionError(f"the stream ended after {len(frames)} frames")


def test_frames_streamed_before_a_kill_9_are_recorded_and_served_to_their_owner(data_dir):
    owner, other = make_keys(data_dir, "owner", "other")
    server = Server(data_dir, data_dir.parent / "models").start()
    again = None
    try:
        job = server.post("/img2seq", json=SEQUENCE,
                          headers={**owner, "Prefer": "respond-async"}).json()
        announced = frames_announced(server, job["job_id"], owner, count=2)
        server.proc.kill()
        server.proc.wait(timeout=30)

        again = Server(data_dir, data_dir.parent / "models").start()
        record = again.get(f"/records/{job['record_id']}", headers=owner).json()
        assert record["status"] == "interrupted", record
        frames = [o for o in record["outputs"] if o["kind"] == "frame"]
        assert 2 <= len(frames) < 120
        assert [o["name"] for o in frames] == [f"frame_{i:04d}.png" for i in
                                               range(1, len(frames) + 1)]
        assert [(o["name"], o["sha256"]) for o in frames[:2]] == [
            (f["name"], f["sha256"]) for f in announced]
        for frame in frames:
            served = again.get(f"/blobs/{frame['sha256']}", headers=owner)
            assert served.status_code == 200, served.text
            assert hashlib.sha256(served.content).hexdigest() == frame["sha256"]
            assert again.get(f"/blobs/{frame['sha256']}", headers=other).status_code == 404
        status = again.get(f"/jobs/{job['job_id']}", headers=owner).json()
        assert status["status"] == "interrupted"
        assert [f["sha256"] for f in status["result"]["frames"]] == [
            o["sha256"] for o in frames]
    finally:
        for started in (server, again):
            if started is not None:
                started.stop()
